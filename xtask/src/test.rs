//! `cargo xtask test`: the whole suite, end-to-end tests included (they need root).

use clap::Args;

use crate::{
    build::{self, BuildArgs},
    util::{cargo, run_cmd, workspace_root},
};

#[derive(Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (after `--` for the test binaries, e.g. a test name).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    // The end-to-end tests run the real binary.
    let bin = build::run(&BuildArgs::default())?;
    // SAFETY of intent: unit tests run too, in the release profile that shares the build above.
    run_cmd(
        cargo()
            .current_dir(workspace_root())
            .env("STACKSAMPLER_BIN", &bin)
            .args(["test", "--release", "--no-fail-fast"])
            .args(&args.rest),
    )
}
