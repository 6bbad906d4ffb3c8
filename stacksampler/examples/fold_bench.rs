//! Micro benchmark of recursion folding on million-frame stacks; prints ns/frame per shape.
//!
//! `cargo run --release -p stacksampler --example fold_bench [frames]`

use std::{hint::black_box, time::Instant};

use stacksampler::diagnose::cycles::{FoldOptions, cycles, fold};

/// Deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A stack of `n` frames: `period`-long cycle between a 3-frame leaf and a 3-frame root.
fn recursion(n: usize, period: u32) -> Vec<u32> {
    let mut s = vec![1000, 1001, 1002];
    s.extend((0..n.saturating_sub(6)).map(|i| (i as u32) % period));
    s.extend([2000, 2001, 2002]);
    s
}

fn time<F: FnMut() -> usize>(name: &str, frames: usize, mut f: F) {
    // Best of 5 runs.
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..5 {
        let t = Instant::now();
        out = black_box(f());
        best = best.min(t.elapsed().as_nanos() as f64);
    }
    println!(
        "{name:<44} {frames:>9} frames {:>8.2} ns/frame ({:.1} ms, {out} segments)",
        best / frames as f64,
        best / 1e6
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let shapes: Vec<(String, Vec<u32>)> = vec![
        ("direct recursion f->f".into(), recursion(n, 1)),
        ("mutual recursion a->b->a".into(), recursion(n, 2)),
        ("6-frame Sprintf cycle".into(), recursion(n, 6)),
        ("64-frame cycle".into(), recursion(n, 64)),
        (
            "no repetition (distinct frames)".into(),
            (0..n as u32).collect(),
        ),
        (
            "random over 8 functions (many short runs)".into(),
            (0..n).map(|_| (rng.next() % 8) as u32).collect(),
        ),
    ];
    let options = FoldOptions::default();
    for (name, frames) in &shapes {
        time(&format!("fold: {name}"), frames.len(), || {
            fold(frames).len()
        });
    }
    for (name, frames) in &shapes {
        time(
            &format!("cycles(min_repeat 50): {name}"),
            frames.len(),
            || cycles(frames, &FoldOptions::new(options.max_period, 50)).len(),
        );
    }
}
