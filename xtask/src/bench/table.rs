//! The results as markdown, printed and pasted into docs/benchmarks.md.

use std::fmt::Write as _;

use super::Results;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn load(l: &[f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
}

pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {} MiB, kernel {}, {}; commit {}{}; {}; {}; {}; {}.",
        m.nproc,
        m.cpu_model,
        m.memory_mib,
        m.kernel,
        m.os,
        m.git_commit.get(..10).unwrap_or(&m.git_commit),
        if m.git_dirty { " (dirty tree)" } else { "" },
        m.go_version,
        m.perf_version,
        m.bpftrace_version,
        m.date_utc
    );
    let loads: Vec<String> = r
        .load_average
        .iter()
        .map(|(name, l)| format!("{name} {}", load(l)))
        .collect();
    let _ = writeln!(s, "Load average (1/5/15 min): {}.", loads.join("; "));
    if let Some(binary) = &r.settings.binary {
        let _ = writeln!(
            s,
            "Measured binary: {} (not this commit's build).",
            binary.display()
        );
    }
    let _ = writeln!(
        s,
        "Whole run: {:.0} s{}.",
        r.elapsed_s,
        if r.settings.quick {
            " (--quick: a check of the benchmark, not results)"
        } else {
            ""
        }
    );

    if let Some(overhead) = &r.overhead {
        let _ = writeln!(
            s,
            "\n### Target overhead\n\nThroughput of the Go program under the profiler / unprofiled (windows either side), median of {} interleaved rounds of {:.0} s windows; frame limit {} for both tools.\n",
            r.settings.rounds, r.settings.window_s, r.settings.max_frames
        );
        let _ = writeln!(
            s,
            "| workload | profiler | Hz | throughput ratio (median) | min..max | loss | per target CPU-s ratio | profiler cores in window | est. loss, idle machine | profiler CPU/run | samples/window | lost | attach |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for w in overhead {
            let label = match w.depth {
                Some(d) => format!("{} ({} frames, {} workers)", w.workload, d, w.workers),
                None => format!("{} ({} workers)", w.workload, w.workers),
            };
            for c in &w.configs {
                let _ = writeln!(
                    s,
                    "| {label} | {} | {} | {:.4} | {:.4}..{:.4} | {:.2}% | {:.4} | {:.3} | {:.2}% | {:.2} s | {:.0} | {} | {:.2} s |",
                    c.tool.name(),
                    c.frequency_hz,
                    c.median_ratio,
                    c.min_ratio,
                    c.max_ratio,
                    c.loss_pct,
                    c.median_cpu_ratio,
                    c.profiler_cores_median,
                    c.estimated_loss_pct,
                    c.profiler_cpu_s_median,
                    c.samples_median,
                    c.lost_total,
                    c.attach_s_median
                );
            }
        }
        for w in overhead {
            let _ = writeln!(
                s,
                "\nUnprofiled spread ({}): {:.2}% (standard deviation / mean of {} windows).",
                w.workload,
                w.base_cv_pct,
                w.base_units_per_s.len()
            );
        }
    }

    if let Some(n) = &r.native_cost {
        let _ = writeln!(
            s,
            "\n### Mixed Go and C stacks (tests/go/cgomix, 99 Hz)\n\n| goroutine | depth (measured) | target hits | ns per target sample (kernel) | native unwinding (user space) |\n|---|---|---|---|---|"
        );
        for m in &n.modes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} |",
                m.mode,
                m.measured_depth,
                m.target_hits,
                m.ns_per_target_sample,
                m.native_unwinding
                    .as_deref()
                    .and_then(|l| l.split("native unwinding: ").nth(1))
                    .unwrap_or("none")
            );
        }
    }

    if let Some(a) = &r.agent_cost {
        let _ = writeln!(
            s,
            "\n### The agent's own cost (`stacksampler agent`, 99 Hz, files and metrics on)\n\n| targets | interval | window | agent CPU (share of one CPU) | resident memory | peak resident | files written |\n|---|---|---|---|---|---|---|"
        );
        for c in a {
            let _ = writeln!(
                s,
                "| {} | {} s | {:.0} s | {:.2}% | {} MiB | {} MiB | {} |",
                c.targets,
                c.interval_s,
                c.window_s,
                c.cpu_share * 100.0,
                c.rss_kib / 1024,
                c.peak_rss_kib / 1024,
                c.files
            );
        }
    }

    if let Some(k) = &r.kernel_cost {
        let _ = writeln!(
            s,
            "\n### Kernel cost per sample (bpf_stats, 99 Hz, {:.0} s)\n\n| stack depth | frames walked (measured) | --max-frames | target hits | samples delivered | runs (all CPUs, all processes) | ns per run | ns per delivered sample | ns per target sample (filtered runs removed) |\n|---|---|---|---|---|---|---|---|---|",
            k.depths.first().map_or(0.0, |d| d.duration_s)
        );
        for d in &k.depths {
            let depth =
                d.requested_depth
                    .map_or("target idle (filtered runs only)".to_owned(), |n| {
                        format!(
                            "{n}, {}",
                            if d.changing {
                                "changing between samples"
                            } else {
                                "unchanged"
                            }
                        )
                    });
            let _ = writeln!(
                s,
                "| {depth} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
                d.measured_depth,
                d.max_frames,
                d.target_hits,
                d.delivered,
                d.runs,
                d.ns_per_run,
                if d.delivered == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.0}", d.ns_per_sample)
                },
                d.ns_per_target_sample
                    .map_or("-".to_owned(), |v| format!("{v:.0}"))
            );
        }
        let _ = writeln!(
            s,
            "\nCost per frame (slope of ns per target sample between the two deepest): {:.1} ns.",
            k.ns_per_frame
        );
    }

    if let Some(rows) = &r.dump {
        let _ = writeln!(
            s,
            "\n### Goroutine dumps (`stacksampler dump` vs the target's own `WriteTo(w, 2)`)\n\n| goroutines | runs | dump read (median) | its CPU (median) | bytes read | launch to file (median) | target's own dump = its stop-the-world pause (median) | its size |\n|---|---|---|---|---|---|---|---|"
        );
        for d in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} s | {:.3} s | {:.1} MB | {:.3} s | {:.3} s | {:.1} MB |",
                d.goroutines,
                d.runs,
                d.median_read_s,
                d.median_read_cpu_s,
                d.bytes_read as f64 / 1e6,
                d.median_wall_s,
                d.median_self_dump_s,
                d.self_dump_bytes as f64 / 1e6
            );
        }
    }
    if let Some(w) = &r.wall {
        let _ = writeln!(
            s,
            "\n### Wall-clock snapshots ({} goroutines parked, {} Hz snapshots beside {} Hz CPU sampling)\n\n| run | throughput loss (median) | per-round ratios | idle-machine estimate | profiler cores |\n|---|---|---|---|---|",
            w.goroutines, w.wall_hz, w.cpu_hz
        );
        for c in &w.configs {
            let ratios: Vec<String> = c.ratios.iter().map(|x| format!("{x:.4}")).collect();
            let _ = writeln!(
                s,
                "| `{}` | {:.2}% | {} | {:.2}% | {:.3} |",
                c.run,
                c.loss_pct,
                ratios.join(" "),
                c.estimated_loss_pct,
                c.profiler_cores_median
            );
        }
    }
    if let Some(rows) = &r.time_to_report {
        let _ = writeln!(
            s,
            "\n### Time to report (1 s profile, launch to report written)\n\n| tool | target | runs | wall (median) | peak RSS | CPU (median) |\n|---|---|---|---|---|---|"
        );
        for t in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} s | {} | {:.2} s |",
                t.tool,
                t.target,
                t.runs,
                t.median_wall_s,
                mib(t.max_rss_kib),
                t.median_cpu_s
            );
        }
    }

    if let Some(m) = &r.memory {
        let _ = writeln!(
            s,
            "\n### Sampler memory\n\n| goroutines | run | samples | lost | distinct stacks | goroutines seen | deepest | peak RSS | CPU | target RSS |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            s,
            "| {} | {:.0} s at {} Hz | {} | {} | {} | {} | {} | {} | {:.2} s | {} |",
            m.goroutines,
            m.duration_s,
            m.frequency_hz,
            m.samples,
            m.lost,
            m.distinct_stacks,
            m.goroutines_seen,
            m.max_depth,
            mib(m.max_rss_kib),
            m.cpu_s,
            mib(m.target_rss_kib)
        );
    }

    if let Some(rows) = &r.symbolization {
        let _ = writeln!(
            s,
            "\n### Symbolization ({} random text addresses)\n\nBest of the rounds for both tools; the first round (a fresh process: its heap and the file's pages are touched for the first time) is listed apart.\n\n| binary | functions | open + index | cold (incl. open) | warm | memo | go tool addr2line | speedup cold | speedup warm | first round: cold / warm speedup | agreement |\n|---|---|---|---|---|---|---|---|---|---|---|",
            r.settings.symbolize_addresses
        );
        for v in rows {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let binary = v["binary"].as_str().unwrap_or("?");
            let short = binary.rsplit("/go/").next().unwrap_or(binary);
            let memo = f("addresses") / (f("memo_ms") / 1000.0);
            let _ = writeln!(
                s,
                "| {short} ({:.1} MB) | {} | {:.1} ms | {:.0}k/s ({:.1} ms) | {:.0}k/s ({:.1} ms) | {:.1}M/s | {:.0}k/s ({:.0} ms) | {:.1}x | {:.1}x | {:.1}x / {:.1}x | {:.3}% |",
                f("binary_bytes") / 1e6,
                v["functions"],
                f("open_index_ms"),
                f("addresses") / (f("cold_incl_open_ms") / 1000.0) / 1e3,
                f("cold_incl_open_ms"),
                f("warm_addrs_per_sec") / 1e3,
                f("warm_ms"),
                memo / 1e6,
                f("addr2line_addrs_per_sec") / 1e3,
                f("addr2line_ms"),
                f("speedup_cold_incl_open"),
                f("speedup_warm"),
                v["speedup_first_round"]["cold_incl_open"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                v["speedup_first_round"]["warm"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                f("agreement") * 100.0
            );
        }
    }

    if !r.goals.is_empty() {
        let _ = writeln!(s, "\n### Goals\n");
        for g in &r.goals {
            let verdict = |met: bool| if met { "met" } else { "not met" };
            let _ = writeln!(
                s,
                "- {}: **{}** as measured, **{}** by the estimate ({})",
                g.goal,
                verdict(g.met),
                verdict(g.met_by_estimate),
                g.detail
            );
        }
    }
    s
}
