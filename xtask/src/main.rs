//! `cargo xtask <task>`: the project's own set-up, build, demo, test and benchmark tasks.
//! Every task runs `setup` first; on a machine where everything is present it costs seconds.

mod aarch64;
mod bench;
mod build;
mod demo;
mod fuzz;
mod setup;
mod soak;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "stacksampler's build, demo, test and bench tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent): rust-src for the pinned nightly,
    /// bpf-linker built against that nightly's libLLVM, Go toolchains, Debian packages.
    Setup,
    /// Build the self-contained `target/release/stacksampler` (eBPF object embedded).
    Build(build::BuildArgs),
    /// Build, start the bundled Go demo program, sample it as root, print the report and write
    /// every output format under `target/demo/`, then stop the demo.
    Demo(demo::DemoArgs),
    /// Run the whole test suite (unit, golden and end-to-end tests against real Go programs).
    Test(test::TestArgs),
    /// Run the benchmarks and save the results under `bench/results/`.
    Bench(bench::BenchArgs),
    /// Run every fuzz target of `fuzz/` (libFuzzer, pinned nightly) for `--secs` seconds each,
    /// seeded from real Go binaries; fails on a crash.
    Fuzz(fuzz::FuzzArgs),
    /// Sample a deep-stack, goroutine-churning program at 999 Hz for `--minutes` (default 60),
    /// recording the sampler's RSS and CPU every 10 s; fails on RSS growth after warm-up,
    /// unreported lost samples or a slowed target. Results under `bench/results/`.
    Soak(soak::SoakArgs),
    /// Cross-build for arm64 and run the end-to-end suite on a real arm64 kernel under
    /// qemu-system-aarch64 (docs/aarch64.md).
    TestAarch64(aarch64::TestAarch64Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::Build(args) => build::run(&args).map(|_| ()),
        Task::Demo(args) => demo::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Soak(args) => soak::run(&args),
        Task::TestAarch64(args) => aarch64::run(&args),
    }
}
