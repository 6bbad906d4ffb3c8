//! `cargo xtask <task>`: the project's own set-up, build, demo, test and benchmark tasks.
//! Every task runs `setup` first; on a machine where everything is present it costs seconds.
//! Only `build-ebpf` (and `build` when the kernel sources changed since the committed eBPF
//! objects) needs the pinned nightly and bpf-linker.

mod aarch64;
mod bench;
mod build;
mod demo;
mod ebpf;
mod fuzz;
mod otlp_proto;
mod setup;
mod soak;
mod stable;
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
    /// Install what building and testing need (idempotent): Go toolchains, Debian packages;
    /// with `--ebpf` also rust-src for the pinned nightly and bpf-linker built against that
    /// nightly's libLLVM (what `build-ebpf` needs).
    Setup(SetupArgs),
    /// Build the self-contained `target/release/stacksampler` (the committed eBPF object
    /// embedded, rebuilt first when the kernel sources changed since it was made).
    Build(build::BuildArgs),
    /// Build, start the bundled Go demo program, sample it as root, print the report and write
    /// every output format under `target/demo/`, then stop the demo.
    Demo(demo::DemoArgs),
    /// Rebuild the committed eBPF objects (one per architecture) with the pinned nightly; with
    /// `--check`, fail if a rebuild differs from them.
    BuildEbpf(ebpf::BuildEbpfArgs),
    /// Regenerate the committed Rust of the vendored OpenTelemetry profiles .proto files; with
    /// `--check`, fail if a regeneration differs from it.
    OtlpProto(otlp_proto::OtlpProtoArgs),
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
    /// Build a fresh clone of HEAD with stable Rust only (the nightly hidden) through
    /// `cargo install --path stacksampler`, and run the end-to-end sampling tests against it.
    TestStable(stable::TestStableArgs),
}

#[derive(clap::Args)]
struct SetupArgs {
    /// Also install what building the eBPF object needs (the nightly's rust-src, bpf-linker).
    #[arg(long)]
    ebpf: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.task {
        Task::Setup(args) => {
            if args.ebpf {
                setup::ensure_ebpf_toolchain()?;
            }
            Ok(())
        }
        Task::BuildEbpf(args) => ebpf::run(&args),
        Task::Build(args) => build::run(&args).map(|_| ()),
        Task::Demo(args) => demo::run(&args),
        Task::OtlpProto(args) => otlp_proto::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Soak(args) => soak::run(&args),
        Task::TestAarch64(args) => aarch64::run(&args),
        Task::TestStable(args) => stable::run(&args),
    }
}
