//! Symbolization: the `symbolize_bench` example (stacksampler's `.gopclntab` symbolizer against
//! `go tool addr2line` on the same random addresses) over Go toolchain binaries.

use std::process::Command;

use anyhow::Context as _;

use super::Ctx;
use crate::util::output;

/// The example's json object for each binary.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<serde_json::Value>> {
    let goroot = ctx
        .tools
        .go
        .parent()
        .and_then(|p| p.parent())
        .context("GOROOT of the Go toolchain")?;
    let mut rows = vec![];
    for binary in [
        goroot.join("bin/go"),
        goroot.join("pkg/tool/linux_amd64/compile"),
    ] {
        super::proc::check_interrupted()?;
        let text = output(
            Command::new(&ctx.tools.symbolize_bench)
                .arg(&binary)
                .arg(ctx.symbolize_addresses.to_string())
                .arg("--go")
                .arg(&ctx.tools.go),
        )?;
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("symbolize_bench printed {text:?}"))?;
        eprintln!(
            "bench: symbolization of {}: {:.0} addresses/s cold, addr2line {:.0}/s",
            binary.display(),
            v["cold_addrs_per_sec"].as_f64().unwrap_or(0.0),
            v["addr2line_addrs_per_sec"].as_f64().unwrap_or(0.0)
        );
        rows.push(v);
    }
    Ok(rows)
}
