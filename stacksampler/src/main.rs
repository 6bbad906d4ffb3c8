//! The `stacksampler` command: parse the command line into a verb, run it, write its report.

mod cli;
mod status;
mod terminal;

use std::{io::Write, process::ExitCode};

use anyhow::Context as _;
use cli::{AgentArgs, Cli, Command, DumpArgs, InspectArgs, RecordArgs, TopArgs, WatchArgs};
use stacksampler::{inspect, record, report, report::EndReason, top, watch::WatchFormat};
use status::StatusLine;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(if cli.verbose { "info" } else { "warn" }),
    )
    .format_timestamp(None)
    .init();
    let result = match &cli.command {
        Command::Record(args) => record(args, cli.verbose),
        Command::Watch(args) => watch(args, cli.verbose),
        Command::Top(args) => top(args, cli.verbose),
        Command::Inspect(args) => inspect(args),
        Command::Dump(args) => dump(args),
        Command::Agent(args) => agent(args, cli.verbose),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacksampler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn record(args: &RecordArgs, verbose: bool) -> anyhow::Result<()> {
    let options = args.options(verbose);
    // Outputs are created before anything is attached: a bad path must not cost a capture.
    let plan = args.output_plan();
    let prepared = plan.prepare()?;
    let mut status = StatusLine::new(verbose, false);
    let finished = async_runtime()?
        .block_on(record::run(&options, &mut status))
        .with_context(|| format!("sampling pid {}", options.pid))?;
    if let Some(exited) = target_exit(&finished.report.run) {
        eprintln!("stacksampler: {exited}; reporting what was collected");
    }
    if verbose {
        let s = &finished.stats;
        eprintln!(
            "stacksampler: {} perf events on the target over {} CPUs, {} delivered, {} lost, {} undecodable; kernel time {:.0} ns per run over {} runs, {:.0} ns per delivered sample",
            s.target_hits,
            s.cpus,
            s.delivered,
            s.lost_ringbuf,
            s.decode_errors,
            s.kernel_cost.mean_ns().unwrap_or(0.0),
            s.kernel_cost.run_count,
            s.kernel_cost.run_time_ns as f64 / s.delivered.max(1) as f64
        );
        let n = &s.native;
        if n.samples > 0 {
            eprintln!(
                "stacksampler: native unwinding: {} samples, {} native frames, {} cut, {:.0} ns per native sample",
                n.samples,
                n.frames,
                n.cut,
                n.unwind_ns as f64 / n.samples as f64
            );
        }
    }
    if finished.stats.walk_checks > 0 {
        eprintln!(
            "stacksampler: walk check: {} samples walked twice, {} differed",
            finished.stats.walk_checks, finished.stats.walk_mismatches
        );
    }
    if verbose && finished.stats.wall.snapshots > 0 {
        let w = &finished.stats.wall;
        let n = w.snapshots as f64;
        eprintln!(
            "stacksampler: wall-clock: {} snapshots, {:.2} ms and {:.0} KiB read per snapshot; running goroutines: {} from CPU samples, {} not captured; {} unreadable",
            w.snapshots,
            w.read_ns as f64 / n / 1e6,
            w.bytes_read as f64 / n / 1024.0,
            w.running_from_cpu,
            w.running_not_captured,
            w.unreadable
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = report::write_outputs(&finished.report, &plan, prepared, &mut out)?;
    out.flush().context("writing the report")?;
    announce(&written);
    Ok(())
}

/// "process P exited after S s" when the target's exit ended the run.
fn target_exit(run: &report::RunInfo) -> Option<String> {
    let how = match run.ended_by {
        EndReason::TargetExited => "",
        EndReason::TargetDied => " of a Go fatal error",
        _ => return None,
    };
    Some(format!(
        "process {} exited after {:.1}s{how}",
        run.pid, run.duration_secs
    ))
}

/// Names the files written on stderr.
fn announce(written: &[report::WrittenOutput]) {
    for w in written {
        if let Some(path) = &w.path {
            eprintln!(
                "stacksampler: wrote {} ({})",
                path.display(),
                w.format.name()
            );
        }
    }
}

fn top(args: &TopArgs, verbose: bool) -> anyhow::Result<()> {
    terminal::require_tty()?;
    let options = args.options(verbose);
    let plan = args.output_plan();
    // Outputs are created before anything is attached: a bad path must not cost a session.
    let prepared = plan.prepare()?;
    let end = async_runtime()?.block_on(async {
        // Signals are caught before the terminal goes raw (see StopSignals).
        let signals = top::StopSignals::listen().context("listening for signals")?;
        let mut screen = terminal::Screen::enter()?;
        let (_keys_thread, keys) = terminal::KeyReader::start();
        let draw = |model: &top::model::TopModel, ui: &top::UiState| {
            screen
                .terminal
                .draw(|frame| top::view::render(frame, model, ui))
                .map(|_| ())
        };
        top::run(&options, signals, keys, draw)
            .await
            .with_context(|| format!("top of pid {}", options.record.pid))
        // The key thread stops, then the terminal is restored, before anything is printed.
    })?;
    let report = &end.finished.report;
    let run = &report.run;
    match target_exit(run) {
        Some(exited) => eprintln!("stacksampler: {exited}; top detached"),
        None => eprintln!(
            "stacksampler: top of pid {} ended after {:.1}s ({} samples); detached",
            run.pid, run.duration_secs, report.profile.counts.total
        ),
    }
    for w in &report.warnings {
        eprintln!("stacksampler: warning: {w}");
    }
    if !plan.files.is_empty() {
        let written = report::write_outputs(report, &plan, prepared, &mut std::io::sink())?;
        announce(&written);
    }
    Ok(())
}

fn watch(args: &WatchArgs, verbose: bool) -> anyhow::Result<()> {
    let options = args.options(verbose);
    // Outputs are created before anything is attached: a bad path must not cost a watch.
    let plan = args.output_plan(verbose);
    let prepared = plan.prepare()?;
    // Alerts go to standard output as json lines when the report does.
    let alerts_to_stdout = plan.files.is_empty() && plan.format == WatchFormat::Json;
    let mut status = StatusLine::new(verbose, alerts_to_stdout);
    let report = async_runtime()?
        .block_on(stacksampler::watch::watch(&options, &mut status))
        .with_context(|| format!("watching pid {}", options.pid))?;
    if verbose {
        for c in &report.probe_cost {
            eprintln!(
                "stacksampler: probe {}: {} hits, {:.0} ns per hit in the kernel",
                c.program,
                c.cost.run_count,
                c.cost.mean_ns().unwrap_or(0.0)
            );
        }
    }
    let written = plan.write(&report, prepared, &mut std::io::stdout().lock())?;
    for (path, format) in written {
        eprintln!("stacksampler: wrote {} ({})", path.display(), format.name());
    }
    Ok(())
}

fn agent(args: &AgentArgs, verbose: bool) -> anyhow::Result<()> {
    use stacksampler::agent::{self, AgentNotice};
    let options = args.options(verbose);
    let (notices, mut received) = tokio::sync::mpsc::unbounded_channel();
    let summary = async_runtime()?.block_on(async {
        let print = async {
            while let Some(notice) = received.recv().await {
                let line = match notice {
                    AgentNotice::Attached { pid, service } => {
                        format!("sampling pid {pid} ({service})")
                    }
                    AgentNotice::Dropped {
                        pid,
                        service,
                        reason,
                    } => {
                        let how = match reason {
                            EndReason::TargetDied => " of a Go fatal error",
                            _ => "",
                        };
                        format!("pid {pid} ({service}) exited{how}; no longer sampled")
                    }
                    AgentNotice::Failed { pid, error } => {
                        format!("pid {pid}: {error}; no longer sampled")
                    }
                    AgentNotice::Wrote(path) if verbose => format!("wrote {}", path.display()),
                    AgentNotice::Wrote(_) => continue,
                    AgentNotice::Serving(addr) => format!("metrics at http://{addr}/metrics"),
                    AgentNotice::Warning(w) => format!("warning: {w}"),
                };
                eprintln!("stacksampler: {}", report::text::printable(&line));
            }
        };
        let (summary, ()) = tokio::join!(agent::run(&options, notices), print);
        summary
    })?;
    eprintln!(
        "stacksampler: agent stopped: {} profile files written, {} targets ended while sampled; detached",
        summary.exported, summary.dropped
    );
    Ok(())
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let target = args.target();
    let inspection = inspect::inspect(&target).with_context(|| match &target {
        inspect::InspectTarget::Pid(pid) => format!("inspecting pid {pid}"),
        inspect::InspectTarget::Binary(path) => format!("inspecting {}", path.display()),
    })?;
    let mut out = std::io::stdout().lock();
    match args.format {
        inspect::InspectFormat::Text => inspect::render_text(&inspection, &mut out)?,
        inspect::InspectFormat::Json => inspect::render_json(&inspection, &mut out)?,
    }
    out.flush().context("writing the inspection")?;
    Ok(())
}

fn dump(args: &DumpArgs) -> anyhow::Result<()> {
    use stacksampler::dump;
    // The destination is checked (and its temporary file made) before reading the target.
    let temp = match &args.output {
        Some(path) => Some(
            report::create_temp_beside(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        ),
        None => None,
    };
    let mut d = dump::dump(dump::DumpOptions { pid: args.pid })
        .with_context(|| format!("dumping pid {}", args.pid))?;
    let filter = args.filter();
    d.goroutines.retain(|g| filter.keeps(g));
    for w in &d.warnings {
        eprintln!(
            "stacksampler: warning: {}",
            report::text::printable(&w.to_string())
        );
    }
    for f in &d.findings {
        let severity = format!("{:?}", f.severity).to_lowercase();
        eprintln!(
            "stacksampler: {severity}: {}",
            report::text::printable(&stacksampler::dump::findings::summary(f))
        );
    }
    if d.inconsistent > 0 {
        eprintln!(
            "stacksampler: {} goroutines kept changing while read (marked \"changed during read\")",
            d.inconsistent
        );
    }
    match (&args.output, temp) {
        (Some(path), Some(temp)) => {
            let mut out = std::io::BufWriter::new(temp);
            dump::output::write(&d, args.write_options(), &mut out)
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))?;
            let temp = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", path.display()))?;
            temp.persist(path)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "stacksampler: wrote {} ({} goroutines)",
                path.display(),
                d.goroutines.len()
            );
        }
        _ => {
            let mut out = std::io::stdout().lock();
            dump::output::write(&d, args.write_options(), &mut out)
                .and_then(|()| out.flush())
                .context("writing the dump")?;
        }
    }
    Ok(())
}
