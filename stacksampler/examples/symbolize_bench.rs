//! Symbolization benchmark: stacksampler's file-level symbolizer against `go tool addr2line`.
//!
//! `cargo run --release --example symbolize_bench -- [BINARY] [N] [--go GO]`
//!
//! Samples N addresses (default 100,000, fixed seed) from the Go text of BINARY (default: the
//! newest Go toolchain's `go` command), then measures:
//! - `open_index_ms`: opening (mapping) the file, parsing ELF and locating `.gopclntab`
//!   (`phases_ms` splits it);
//! - `lookup_only_ms`: the lookups without building `Frame`s, on a second fresh copy;
//! - cold throughput: the first pass over the addresses on the freshly indexed file;
//! - warm throughput: a second pass on the same file (pc-value tables already decoded);
//! - memo: the same addresses again through a per-address memo (what `ProcessSymbolizer` does
//!   for addresses seen before);
//! - `go tool addr2line` on the same addresses (fed on stdin, one process, start-up included);
//! - agreement on (function, file, line) with addr2line's answer, which is the physical function
//!   and the innermost file:line (so the outermost and innermost frames of ours).
//!
//! Prints one JSON object on stdout.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::Instant,
};

use stacksampler::symbolize::{Frame, ModuleSymbolizer, gopclntab::name_for_print};

const DEFAULT_N: usize = 100_000;

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
        function: outer.function.clone(),
        file: inner.file.clone().unwrap_or_else(|| "?".into()),
        line: inner.line.unwrap_or(0),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut binary: Option<PathBuf> = None;
    let mut n = DEFAULT_N;
    let mut go = default_go();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--go" => go = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("--go PATH"))?),
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
    let open_index = t0.elapsed();
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

    // The lookups alone (no `Frame` built) on a second, fresh copy: decoding vs allocating.
    let bare = ModuleSymbolizer::open(&binary)?;
    let bare_table = bare
        .go_table()
        .ok_or_else(|| anyhow::anyhow!("no Go pclntab"))?;
    let mut visited = 0usize;
    let t_bare = Instant::now();
    for a in &addrs {
        bare_table.visit_frames(*a, |_| visited += 1);
    }
    let bare_cold = t_bare.elapsed();
    let t_bare = Instant::now();
    for a in &addrs {
        bare_table.visit_frames(*a, |_| visited += 1);
    }
    let bare_warm = t_bare.elapsed();
    drop(bare);

    let t1 = Instant::now();
    let cold: Vec<Vec<Frame>> = addrs
        .iter()
        .map(|a| module.frames(*a, &module_name))
        .collect();
    let cold_time = t1.elapsed();
    let t2 = Instant::now();
    let mut warm_frames = 0usize;
    for a in &addrs {
        warm_frames += module.frames(*a, &module_name).len();
    }
    let warm_time = t2.elapsed();
    // Repeated addresses through a per-address memo, as `ProcessSymbolizer` serves them.
    let mut memo: std::collections::HashMap<u64, Vec<Frame>> = std::collections::HashMap::new();
    for a in &addrs {
        memo.entry(*a)
            .or_insert_with(|| module.frames(*a, &module_name));
    }
    let t_memo = Instant::now();
    let mut memo_frames = 0usize;
    for a in &addrs {
        memo_frames += memo.get(a).map_or(0, Vec::len);
    }
    let memo_time = t_memo.elapsed();

    // go tool addr2line on the same addresses.
    let t3 = Instant::now();
    let mut child = Command::new(&go)
        .args(["tool", "addr2line"])
        .arg(&binary)
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
    let mut theirs = Vec::with_capacity(n);
    for _ in 0..n {
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
    let addr2line_time = t3.elapsed();
    anyhow::ensure!(
        status.success() && theirs.len() == n,
        "go tool addr2line failed ({status}, {} answers)",
        theirs.len()
    );

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
    let decoded = go_table.decoded_stats();
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
        "decoded": {
            "functions": decoded.0,
            "runs": decoded.1,
            "bytes": decoded.2,
        },
        "cold_ms": cold_time.as_secs_f64() * 1e3,
        "warm_ms": warm_time.as_secs_f64() * 1e3,
        "cold_addrs_per_sec": per_sec(cold_time),
        "warm_addrs_per_sec": per_sec(warm_time),
        "warm_frames": warm_frames,
        "addr2line_ms": addr2line_time.as_secs_f64() * 1e3,
        "addr2line_addrs_per_sec": per_sec(addr2line_time),
        "speedup_cold_incl_open": addr2line_time.as_secs_f64() / (open_index + cold_time).as_secs_f64(),
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
