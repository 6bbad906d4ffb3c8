//! The `stacksampler` command: parse the command line, run, write the report.

use std::{io::Write, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use stacksampler::{config::Config, report, run};

fn main() -> ExitCode {
    let config = Config::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(if config.verbose { "info" } else { "warn" }),
    )
    .format_timestamp(None)
    .init();
    match real_main(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacksampler: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Outputs are created before anything is attached: a bad path must not cost a capture.
    let plan = report::OutputPlan::from_config(config);
    let prepared = plan.prepare()?;
    if config.watch {
        return runtime
            .block_on(stacksampler::events::watch::watch(config))
            .with_context(|| format!("watching pid {}", config.pid));
    }
    let finished = runtime
        .block_on(run::run(config))
        .with_context(|| format!("sampling pid {}", config.pid))?;
    if config.verbose {
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
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = report::write_outputs(&finished.report, &plan, prepared, &mut out)?;
    out.flush().context("writing the report")?;
    for w in written {
        if let Some(path) = w.path {
            eprintln!(
                "stacksampler: wrote {} ({})",
                path.display(),
                w.format.name()
            );
        }
    }
    Ok(())
}
