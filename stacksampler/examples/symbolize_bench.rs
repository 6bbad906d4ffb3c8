//! Symbolization benchmark: stacksampler's file-level symbolizer against `go tool addr2line`.
//!
//! `cargo run --release --example symbolize_bench -- [BINARY] [N] [--go GO]`
//!
//! Samples N addresses (default 100,000, fixed seed) from the Go text of BINARY (default: the
//! newest Go toolchain's `go` command), then measures:
//! - `open_index_ms`: opening (mapping) the file, parsing ELF and locating `.gopclntab`
//!   (`phases_ms` splits it);
//! - `lookup_only_ms`: the batch lookups without building `Frame`s, on a second fresh copy;
//! - cold throughput: one batch call (`ModuleSymbolizer::frames_batch`, what `ProcessSymbolizer`
//!   does with a profile's unique addresses) on the freshly indexed file;
//! - warm throughput: a second batch call on the same file (nothing is memoized per address);
//! - `per_address_ms`: the same addresses one `frames` call at a time (no batching);
//! - memo: the same addresses again through a per-address memo (what `ProcessSymbolizer` does
//!   for addresses seen before);
//! - `go tool addr2line` on the same addresses (fed on stdin, one process, start-up included);
//! - agreement on (function, file, line) with addr2line's answer, which is the physical function
//!   and the innermost file:line (so the outermost and innermost frames of ours).
//!
//! Each measurement is repeated `--rounds` times (default 5) and the fastest round is reported,
//! for us and for addr2line alike: on a shared machine the minimum is the figure least disturbed
//! by other work. Every round opens the file afresh, so "cold" is a fresh symbolizer; what later
//! rounds share with earlier ones is the process: its heap (memory the previous round's frames
//! freed) and the CPU caches' copy of the file's tables (as the first round's cold pass shares
//! them with the lookup-only pass before it). `first_round_ms` gives the first round apart: a
//! fresh process, whose batches also grow the heap (page faults for the ~25 MB of frames of
//! 100,000 addresses, costly in a VM). `*_runs_ms` list every round.
//!
//! Prints one JSON object on stdout.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use stacksampler::symbolize::{Frame, ModuleSymbolizer, gopclntab::name_for_print};

const DEFAULT_N: usize = 100_000;
const DEFAULT_ROUNDS: usize = 5;

fn default_go() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let newest = PathBuf::from(home).join(".cache/stacksampler/go-1.27.3/go/bin/go");
    if newest.exists() {
        newest
    } else {
        PathBuf::from("go")
    }
}

/// A tiny deterministic generator (xorshift64*), so runs sample the same addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What both sides are compared on.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    function: String,
    file: String,
    line: u32,
}

fn ours(frames: &[Frame]) -> Answer {
    let (Some(inner), Some(outer)) = (frames.first(), frames.last()) else {
        return Answer {
            function: "?".into(),
            file: "?".into(),
            line: 0,
        };
    };
    Answer {
        function: outer.function.to_string(),
        file: inner.file.as_deref().unwrap_or("?").to_owned(),
        line: inner.line.unwrap_or(0),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut binary: Option<PathBuf> = None;
    let mut n = DEFAULT_N;
    let mut go = default_go();
    let mut rounds = DEFAULT_ROUNDS;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--go" => go = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("--go PATH"))?),
            "--rounds" => {
                rounds = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--rounds N"))?
                    .parse::<usize>()?
                    .max(1)
            }
            a if binary.is_none() && !a.chars().all(|c| c.is_ascii_digit()) => {
                binary = Some(PathBuf::from(a))
            }
            a => n = a.parse()?,
        }
    }
    let binary = binary.unwrap_or_else(|| go.clone());
    let module_name: Arc<str> = Arc::from(binary.display().to_string());

    // Start-up: read + parse + locate the Go tables.
    let t0 = Instant::now();
    let module = ModuleSymbolizer::open(&binary)?;
    let first_open = t0.elapsed();
    // The same start-up in phases: map the file and parse the ELF headers, locate the Go tables.
    let t_parse = Instant::now();
    let image =
        stacksampler::symbolize::elf::ElfImage::map_file(&mut std::fs::File::open(&binary)?)??;
    let parse_time = t_parse.elapsed();
    let t_locate = Instant::now();
    let located = stacksampler::symbolize::gopclntab::GoPclnTab::locate(&image).is_ok();
    let locate_time = t_locate.elapsed();
    drop(image);
    let go_table = module.go_table().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no Go pclntab: {:?}",
            binary.display(),
            module.go_error()
        )
    })?;
    let (lo, hi) = go_table
        .pc_range()
        .ok_or_else(|| anyhow::anyhow!("empty pclntab"))?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let addrs: Vec<u64> = (0..n).map(|_| lo + rng.next() % (hi - lo)).collect();

    // Each round opens the file afresh: cold = open + first batch, warm = second batch.
    let mut open_index = Duration::MAX;
    let mut cold_time = Duration::MAX;
    let mut cold_incl_open = Duration::MAX;
    let mut warm_time = Duration::MAX;
    let mut bare_cold = Duration::MAX;
    let mut bare_warm = Duration::MAX;
    let mut cold_runs = Vec::new();
    let mut cold: Vec<Vec<Frame>> = Vec::new();
    let mut warm_runs = Vec::new();
    let mut first_round = serde_json::Value::Null;
    let mut first_round_times = (Duration::ZERO, Duration::ZERO);
    let mut visited = 0usize;
    let mut warm_frames = 0usize;
    for round in 0..rounds {
        // The lookups alone (no `Frame` built) on a fresh copy: decoding vs allocating.
        let bare = ModuleSymbolizer::open(&binary)?;
        let bare_table = bare
            .go_table()
            .ok_or_else(|| anyhow::anyhow!("no Go pclntab"))?;
        visited = 0;
        let t = Instant::now();
        bare_table.visit_frames_batch(&addrs, |_, _| visited += 1);
        bare_cold = bare_cold.min(t.elapsed());
        let t = Instant::now();
        bare_table.visit_frames_batch(&addrs, |_, _| visited += 1);
        bare_warm = bare_warm.min(t.elapsed());
        drop(bare);

        let t0 = Instant::now();
        let fresh = ModuleSymbolizer::open(&binary)?;
        let open = t0.elapsed();
        let t1 = Instant::now();
        let first = fresh.frames_batch(&addrs, &module_name);
        let first_time = t1.elapsed();
        let t2 = Instant::now();
        let second = fresh.frames_batch(&addrs, &module_name);
        let second_time = t2.elapsed();
        anyhow::ensure!(second == first, "the second batch differs from the first");
        warm_frames = second.iter().map(Vec::len).sum();
        open_index = open_index.min(open);
        cold_time = cold_time.min(first_time);
        cold_incl_open = cold_incl_open.min(open + first_time);
        warm_time = warm_time.min(second_time);
        cold_runs.push((open + first_time).as_secs_f64() * 1e3);
        warm_runs.push(second_time.as_secs_f64() * 1e3);
        if round == 0 {
            first_round = serde_json::json!({
                "lookup_only_cold": bare_cold.as_secs_f64() * 1e3,
                "open_index": open.as_secs_f64() * 1e3,
                "cold": first_time.as_secs_f64() * 1e3,
                "cold_incl_open": (open + first_time).as_secs_f64() * 1e3,
                "warm": second_time.as_secs_f64() * 1e3,
            });
            first_round_times = (open + first_time, second_time);
            cold = first;
        } else {
            drop(first);
        }
        drop(second);
        // The allocator (glibc) sorts and merges the chunks just freed on its next large request:
        // make that request now, outside the timed passes, rather than inside the next round.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(64 << 10)));
    }
    let t_single = Instant::now();
    let mut single_frames = 0usize;
    for a in &addrs {
        single_frames += module.frames(*a, &module_name).len();
    }
    let single_time = t_single.elapsed();
    anyhow::ensure!(
        single_frames == warm_frames,
        "per-address frames differ from the batch"
    );
    // Repeated addresses through a per-address memo, as `ProcessSymbolizer` serves them.
    let memo: std::collections::HashMap<u64, Vec<Frame>> =
        addrs.iter().copied().zip(cold.iter().cloned()).collect();
    let mut memo_time = Duration::MAX;
    let mut memo_frames = 0usize;
    for _ in 0..rounds {
        let t_memo = Instant::now();
        memo_frames = 0;
        for a in &addrs {
            memo_frames += memo.get(a).map_or(0, Vec::len);
        }
        memo_time = memo_time.min(t_memo.elapsed());
    }

    // go tool addr2line on the same addresses, as many rounds.
    let mut addr2line_time = Duration::MAX;
    let mut addr2line_runs = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..rounds {
        let t3 = Instant::now();
        theirs = addr2line(&go, &binary, &addrs)?;
        let elapsed = t3.elapsed();
        addr2line_time = addr2line_time.min(elapsed);
        addr2line_runs.push(elapsed.as_secs_f64() * 1e3);
    }

    let mut agree = 0usize;
    let mut mismatches = Vec::new();
    for ((addr, frames), expected) in addrs.iter().zip(&cold).zip(&theirs) {
        let got = ours(frames);
        if &got == expected {
            agree += 1;
        } else if mismatches.len() < 5 {
            mismatches.push(format!("{addr:#x}: ours {got:?} addr2line {expected:?}"));
        }
    }
    let per_sec = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    let report = serde_json::json!({
        "binary": binary.display().to_string(),
        "binary_bytes": std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0),
        "addresses": n,
        "functions": go_table.function_count(),
        "inline_info": go_table.has_inline_info(),
        "open_index_ms": open_index.as_secs_f64() * 1e3,
        "phases_ms": {
            "map_and_elf_parse": parse_time.as_secs_f64() * 1e3,
            "pclntab_locate": locate_time.as_secs_f64() * 1e3,
            "located": located,
        },
        "lookup_only_ms": {
            "cold": bare_cold.as_secs_f64() * 1e3,
            "warm": bare_warm.as_secs_f64() * 1e3,
            "frames": visited / 2,
        },
        "cold_ms": cold_time.as_secs_f64() * 1e3,
        "warm_ms": warm_time.as_secs_f64() * 1e3,
        "cold_addrs_per_sec": per_sec(cold_time),
        "warm_addrs_per_sec": per_sec(warm_time),
        "warm_frames": warm_frames,
        "per_address_ms": single_time.as_secs_f64() * 1e3,
        "addr2line_ms": addr2line_time.as_secs_f64() * 1e3,
        "addr2line_addrs_per_sec": per_sec(addr2line_time),
        "cold_incl_open_ms": cold_incl_open.as_secs_f64() * 1e3,
        "cold_incl_open_runs_ms": cold_runs,
        "warm_runs_ms": warm_runs,
        "first_round_ms": first_round,
        "speedup_first_round": {
            "cold_incl_open": addr2line_time.as_secs_f64() / first_round_times.0.as_secs_f64(),
            "warm": addr2line_time.as_secs_f64() / first_round_times.1.as_secs_f64(),
        },
        "addr2line_runs_ms": addr2line_runs,
        "rounds": rounds,
        "first_open_ms": first_open.as_secs_f64() * 1e3,
        "speedup_cold_incl_open": addr2line_time.as_secs_f64() / cold_incl_open.as_secs_f64(),
        "speedup_warm": addr2line_time.as_secs_f64() / warm_time.as_secs_f64(),
        "memo_ms": memo_time.as_secs_f64() * 1e3,
        "memo_frames": memo_frames,
        "speedup_memo": addr2line_time.as_secs_f64() / memo_time.as_secs_f64(),
        "agreeing": agree,
        "agreement": agree as f64 / n as f64,
        "mismatch_examples": mismatches,
    });
    println!("{report}");
    Ok(())
}

/// Runs `go tool addr2line` on `addrs` (fed on stdin, one process) and parses its answers.
fn addr2line(go: &PathBuf, binary: &PathBuf, addrs: &[u64]) -> anyhow::Result<Vec<Answer>> {
    let mut child = Command::new(go)
        .args(["tool", "addr2line"])
        .arg(binary)
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut theirs = Vec::with_capacity(addrs.len());
    for _ in 0..addrs.len() {
        let (Some(Ok(function)), Some(Ok(position))) = (lines.next(), lines.next()) else {
            break;
        };
        let (file, line) = position.rsplit_once(':').unwrap_or((&position, "0"));
        theirs.push(Answer {
            function: name_for_print(&function),
            // addr2line prints ":0" where the table has no position; ours says "?".
            file: if file.is_empty() {
                "?".to_owned()
            } else {
                file.to_owned()
            },
            line: line.parse().unwrap_or(0),
        });
    }
    let _ = writer.join();
    let status = child.wait()?;
    anyhow::ensure!(
        status.success() && theirs.len() == addrs.len(),
        "go tool addr2line failed ({status}, {} answers)",
        theirs.len()
    );
    Ok(theirs)
}
