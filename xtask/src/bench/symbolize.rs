//! Symbolization: the `symbolize_bench` example (stacksampler's `.gopclntab` symbolizer against
//! `go tool addr2line` on the same random addresses) over Go toolchain binaries. The example
//! repeats each measurement (5 rounds) and reports the fastest; see its documentation.

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
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        eprintln!(
            "bench: symbolization of {}: {:.0} addresses/s cold, {:.0}/s warm, addr2line {:.0}/s; \
             speedup {:.1}x cold incl. open, {:.1}x warm ({:.1}x / {:.1}x in the first round)",
            binary.display(),
            f("cold_addrs_per_sec"),
            f("warm_addrs_per_sec"),
            f("addr2line_addrs_per_sec"),
            f("speedup_cold_incl_open"),
            f("speedup_warm"),
            v["speedup_first_round"]["cold_incl_open"]
                .as_f64()
                .unwrap_or(0.0),
            v["speedup_first_round"]["warm"].as_f64().unwrap_or(0.0),
        );
        rows.push(v);
    }
    Ok(rows)
}
