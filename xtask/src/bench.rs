//! `cargo xtask bench`: benchmarks (see docs/benchmarks.md).

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub fn run(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("benchmarks are not written yet (issue 8)")
}
