//! Deep stacks: finishing in user space the frame-pointer walks the kernel cut at `--max-frames`.
//!
//! The kernel walks the innermost frames (the "head") and reports the frame pointer where it
//! stopped. A runaway recursion can be a million frames deep; walking all of them in the kernel at
//! 120-150 ns per 16-byte probe read would cost 0.1 s per sample. Instead, user space reads the
//! rest of the goroutine's stack from `/proc/PID/mem` in large chunks (one `pread` per 256 KiB)
//! and follows the frame-pointer chain in its own memory: the exact depth and the outermost
//! frames (the "tail", where the recursion was entered) at a few ns per frame.
//!
//! Every continuation is walked to the root. An earlier version stopped at the first frame
//! record left unchanged since the goroutine's previous sample and took the rest from that
//! sample; but a recursion that returned below such a record and came back down through another
//! call site rewrites frames further out while the record itself comes back identical, and the
//! stop then kept the previous sample's outer part (measured: 103 of 182 samples of
//! `tests/go/deepwalk -outer 100 -inner 10000` showed the other phase's call site). Nothing short
//! of reading every record tells the two apart, so the reading is bounded instead: a
//! [`ReadBudget`] of bytes per second. A sample whose rest would exceed what is left keeps its
//! head, marked truncated (its depth a lower bound), and is counted
//! ([`ContinuationStats::over_budget`]); it is never given frames that were not read for it.
//!
//! The walk races with the running goroutine: it may have returned past the cut, or its stack may
//! have been moved by a growth. A continuation is trusted only if the chain climbs strictly inside
//! the stack bounds the kernel reported, ends with a zero frame pointer, and the goroutine still
//! has the same stack bounds afterwards; otherwise the sample keeps its head only and is marked
//! truncated (its depth is then a lower bound).

use std::{fs::File, os::unix::fs::FileExt, time::Instant};

use stacksampler_common::GoLayout;

/// Outermost frames kept for a stack deeper than the kernel walk.
pub const TAIL_FRAMES: usize = 256;
/// Bytes read from the target per `pread`.
const CHUNK_BYTES: u64 = 256 * 1024;
/// Go's largest possible goroutine stack (`maxstackceiling`, 1 GB on 64-bit) bounds any walk.
const MAX_GO_STACK_BYTES: u64 = 1 << 30;
/// Size of one frame record: saved frame pointer, return address.
const RECORD_BYTES: u64 = 16;
const MIB: u64 = 1 << 20;

/// The part of a deep stack beyond the kernel's walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continuation {
    /// Frames between the head and the tail that are counted but not kept.
    pub elided: u64,
    /// The outermost frames, innermost first, as call-site addresses (return address - 1).
    pub tail: Vec<u64>,
}

impl Continuation {
    /// Frames beyond the head in all.
    pub fn frames(&self) -> u64 {
        self.elided + self.tail.len() as u64
    }
}

/// Where a walk that the kernel cut continues.
#[derive(Clone, Copy, Debug)]
pub struct CutWalk {
    /// The goroutine (`runtime.g` address) and its stack bounds at the sample.
    pub g_addr: u64,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// The frame pointer whose record the kernel did not read.
    pub fp: u64,
}

/// Why a cut walk was not continued; the sample keeps its head, marked truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotContinued {
    /// The chain or the stack changed under the read (see the module docs).
    Untrusted,
    /// Reading the rest would exceed the [`ReadBudget`].
    OverBudget,
}

/// Bytes of target stack the continuation may read: a token bucket refilled at
/// `bytes_per_second`, holding at most `burst` and starting full. A walk larger than the burst
/// is allowed when the bucket is full, and leaves it that much in debt, so a stack of any size
/// is still seen whole now and then, while a run of deep samples costs the sampler a bounded
/// share of a CPU and never blocks it for long.
#[derive(Clone, Copy, Debug)]
pub struct ReadBudget {
    pub bytes_per_second: u64,
    pub burst: u64,
}

impl ReadBudget {
    /// The budget of a sampling run (`record`, `top`, `agent`, `--wall`): 128 MiB/s, about a
    /// tenth of one core here (reading `/proc/PID/mem` and walking the copy ran at 1.2 GiB/s on
    /// a 1,000,000-frame recursion, docs/design.md), a second of it at once.
    pub const SAMPLING: Self = Self {
        bytes_per_second: 128 * MIB,
        burst: 128 * MIB,
    };

    pub fn mib_per_second(&self) -> u64 {
        self.bytes_per_second / MIB
    }
}

/// The bucket of a [`ReadBudget`].
#[derive(Debug)]
struct Bucket {
    budget: ReadBudget,
    /// Bytes that may be read now; below zero after a walk larger than the burst.
    available: i64,
    refilled: Instant,
}

impl Bucket {
    fn new(budget: ReadBudget) -> Self {
        Self {
            budget,
            available: budget.burst.min(i64::MAX as u64) as i64,
            refilled: Instant::now(),
        }
    }

    /// Takes `bytes` when the bucket holds them, or holds its whole burst.
    fn take(&mut self, bytes: u64) -> bool {
        let burst = self.budget.burst.min(i64::MAX as u64) as i64;
        let now = Instant::now();
        let earned =
            now.duration_since(self.refilled).as_secs_f64() * self.budget.bytes_per_second as f64;
        if earned >= 1.0 {
            self.available = self.available.saturating_add(earned as i64).min(burst);
            self.refilled = now;
        }
        let bytes = bytes.min(i64::MAX as u64) as i64;
        if bytes > self.available && self.available < burst {
            return false;
        }
        self.available = self.available.saturating_sub(bytes);
        true
    }
}

/// Counters of the continuation work, for `--verbose`, the report's warning and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContinuationStats {
    /// Walks attempted.
    pub walks: u64,
    /// Walks that reached the root.
    pub completed: u64,
    /// Walks not made: the rest of the stack was more than the budget had left.
    pub over_budget: u64,
    /// Frames followed in user space.
    pub frames_walked: u64,
    /// Bytes read from the target.
    pub bytes_read: u64,
}

/// Reads deep goroutine stacks of one process.
pub struct DeepStackReader {
    mem: File,
    layout: GoLayout,
    /// `None`: every continuation is read (a one-off `dump`).
    budget: Option<Bucket>,
    chunk: Vec<u8>,
    chunk_base: u64,
    pub stats: ContinuationStats,
}

impl DeepStackReader {
    /// Opens `/proc/PID/mem`; `layout` locates `g.stack` for the moved-stack check. Without a
    /// budget every continuation is read whatever its size.
    pub fn open(pid: u32, layout: GoLayout, budget: Option<ReadBudget>) -> std::io::Result<Self> {
        Ok(Self {
            mem: File::open(format!("/proc/{pid}/mem"))?,
            layout,
            budget: budget.map(Bucket::new),
            chunk: Vec::new(),
            chunk_base: 0,
            stats: ContinuationStats::default(),
        })
    }

    /// From now on, reads at most `budget` (a reader opened for a one-off that turned into a
    /// series of snapshots).
    pub fn set_budget(&mut self, budget: ReadBudget) {
        self.budget = Some(Bucket::new(budget));
    }

    /// Continues a cut walk to the root of the goroutine's stack.
    pub fn continue_walk(&mut self, cut: CutWalk) -> Result<Continuation, NotContinued> {
        self.stats.walks += 1;
        let span = cut
            .stack_hi
            .checked_sub(cut.stack_lo)
            .ok_or(NotContinued::Untrusted)?;
        if span == 0 || span > MAX_GO_STACK_BYTES || cut.fp < cut.stack_lo || cut.fp >= cut.stack_hi
        {
            return Err(NotContinued::Untrusted);
        }
        // The chain to the root covers nearly all of [fp, hi): what the walk will read.
        if let Some(bucket) = self.budget.as_mut()
            && !bucket.take(cut.stack_hi - cut.fp)
        {
            self.stats.over_budget += 1;
            return Err(NotContinued::OverBudget);
        }
        self.chunk.clear();
        let mut tail = TailRing::default();
        let mut walked = 0u64;
        let mut fp = cut.fp;
        let walk = loop {
            if fp < cut.stack_lo || fp + RECORD_BYTES > cut.stack_hi {
                break Err(NotContinued::Untrusted);
            }
            let Some([next_fp, ret]) = self.record_at(fp, cut.stack_hi) else {
                break Err(NotContinued::Untrusted);
            };
            if ret == 0 {
                break Err(NotContinued::Untrusted);
            }
            tail.push(ret - 1);
            walked += 1;
            if next_fp == 0 {
                break Ok(());
            }
            if next_fp <= fp {
                break Err(NotContinued::Untrusted);
            }
            fp = next_fp;
        };
        self.stats.frames_walked += walked;
        walk?;
        if !self.same_stack(cut) {
            return Err(NotContinued::Untrusted);
        }
        self.stats.completed += 1;
        let tail = tail.into_vec();
        Ok(Continuation {
            elided: walked.saturating_sub(tail.len() as u64),
            tail,
        })
    }

    /// The 16-byte record at `fp`, reading a new chunk when `fp` is outside the current one.
    fn record_at(&mut self, fp: u64, stack_hi: u64) -> Option<[u64; 2]> {
        let in_chunk =
            fp >= self.chunk_base && fp + RECORD_BYTES <= self.chunk_base + self.chunk.len() as u64;
        if !in_chunk {
            let len = CHUNK_BYTES.min(stack_hi - fp);
            self.chunk.resize(len as usize, 0);
            self.mem.read_exact_at(&mut self.chunk, fp).ok()?;
            self.chunk_base = fp;
            self.stats.bytes_read += len;
        }
        let at = (fp - self.chunk_base) as usize;
        let word = |i: usize| {
            let bytes: [u8; 8] = self.chunk[at + i * 8..at + i * 8 + 8].try_into().ok()?;
            Some(u64::from_ne_bytes(bytes))
        };
        Some([word(0)?, word(1)?])
    }

    /// Whether the goroutine still has the stack the kernel saw (a growth moves it).
    fn same_stack(&self, cut: CutWalk) -> bool {
        let mut buf = [0u8; 8];
        let mut read = |offset: u32| {
            self.mem
                .read_exact_at(&mut buf, cut.g_addr + offset as u64)
                .ok()
                .map(|()| u64::from_ne_bytes(buf))
        };
        read(self.layout.g_stack_lo) == Some(cut.stack_lo)
            && read(self.layout.g_stack_hi) == Some(cut.stack_hi)
    }
}

/// The last [`TAIL_FRAMES`] frames pushed, innermost first.
#[derive(Default)]
struct TailRing {
    buf: Vec<u64>,
    next: usize,
    full: bool,
}

impl TailRing {
    fn push(&mut self, addr: u64) {
        if self.buf.len() < TAIL_FRAMES {
            self.buf.push(addr);
        } else {
            self.buf[self.next] = addr;
            self.next = (self.next + 1) % TAIL_FRAMES;
            self.full = true;
        }
    }

    fn into_vec(self) -> Vec<u64> {
        if !self.full {
            return self.buf;
        }
        let mut out = self.buf[self.next..].to_vec();
        out.extend_from_slice(&self.buf[..self.next]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake goroutine stack in this process's own memory: records chained upward.
    struct FakeStack {
        mem: Vec<u64>,
        g: Vec<u64>,
    }

    impl FakeStack {
        /// `frames` records, each `words` u64 apart, return addresses 0x1000 + i.
        fn new(frames: usize, words: usize) -> Self {
            let mut mem = vec![0u64; frames * words + 8];
            let base = mem.as_ptr() as u64;
            for i in 0..frames {
                let at = i * words;
                let next = if i + 1 == frames {
                    0
                } else {
                    base + ((i + 1) * words * 8) as u64
                };
                mem[at] = next;
                mem[at + 1] = 0x1000 + i as u64 + 1;
            }
            let lo = base;
            let hi = base + (mem.len() * 8) as u64;
            Self {
                mem,
                g: vec![lo, hi],
            }
        }

        fn cut_at(&self, frame: usize, words: usize) -> CutWalk {
            CutWalk {
                g_addr: self.g.as_ptr() as u64,
                stack_lo: self.g[0],
                stack_hi: self.g[1],
                fp: self.mem.as_ptr() as u64 + (frame * words * 8) as u64,
            }
        }
    }

    fn reader() -> DeepStackReader {
        reader_within(None)
    }

    fn reader_within(budget: Option<ReadBudget>) -> DeepStackReader {
        let layout = GoLayout {
            g_stack_lo: 0,
            g_stack_hi: 8,
            ..GoLayout::default()
        };
        DeepStackReader::open(std::process::id(), layout, budget).unwrap()
    }

    #[test]
    fn counts_exactly_and_keeps_the_outermost_frames() {
        let stack = FakeStack::new(100_000, 4);
        let mut r = reader();
        let c = r.continue_walk(stack.cut_at(8192, 4)).unwrap();
        assert_eq!(c.frames(), 100_000 - 8192);
        assert_eq!(c.tail.len(), TAIL_FRAMES);
        // Call sites of the last frames: 0x1000 + i for i up to 99,999.
        assert_eq!(*c.tail.last().unwrap(), 0x1000 + 99_999);
        assert_eq!(c.tail[0], 0x1000 + 99_999 - TAIL_FRAMES as u64 + 1);
    }

    #[test]
    fn an_outer_frame_changed_behind_unchanged_inner_records_is_read_anew() {
        let mut stack = FakeStack::new(50_000, 6);
        let mut r = reader();
        let first = r.continue_walk(stack.cut_at(1000, 6)).unwrap();
        // The recursion returned to frame 49,900 and called down again from another call site:
        // that one return address differs, every record inside it is as it was.
        stack.mem[49_900 * 6 + 1] = 0x9001;
        let second = r.continue_walk(stack.cut_at(1000, 6)).unwrap();
        assert_eq!(second.frames(), first.frames());
        let at = TAIL_FRAMES - 100;
        assert_eq!(first.tail[at], 0x1000 + 49_900);
        assert_eq!(
            second.tail[at], 0x9000,
            "the previous sample's outer part was kept"
        );
        assert_eq!(r.stats.completed, 2);
        assert_eq!(r.stats.frames_walked, 2 * (50_000 - 1000));
    }

    #[test]
    fn walks_past_the_budget_keep_their_head_and_are_counted() {
        let stack = FakeStack::new(10_000, 4);
        let cut = stack.cut_at(2000, 4);
        let rest = cut.stack_hi - cut.fp;
        // Room for one walk, refilled at a byte a second.
        let mut r = reader_within(Some(ReadBudget {
            bytes_per_second: 1,
            burst: rest + rest / 2,
        }));
        assert!(r.continue_walk(cut).is_ok());
        assert_eq!(r.continue_walk(cut), Err(NotContinued::OverBudget));
        assert_eq!(r.stats.over_budget, 1);
        assert_eq!(r.stats.walks, 2);
        assert_eq!(r.stats.completed, 1);
        // A shallower rest still fits in what is left.
        assert!(r.continue_walk(stack.cut_at(9_000, 4)).is_ok());
    }

    #[test]
    fn a_stack_larger_than_the_burst_is_walked_from_a_full_bucket_only() {
        let stack = FakeStack::new(10_000, 4);
        let cut = stack.cut_at(0, 4);
        let rest = cut.stack_hi - cut.fp;
        let mut r = reader_within(Some(ReadBudget {
            bytes_per_second: 1,
            burst: rest / 4,
        }));
        assert!(
            r.continue_walk(cut).is_ok(),
            "a full bucket lets any walk through"
        );
        // In debt now: not even a small rest.
        assert_eq!(
            r.continue_walk(stack.cut_at(9_990, 4)),
            Err(NotContinued::OverBudget)
        );
    }

    #[test]
    fn short_continuation_has_no_elision() {
        let stack = FakeStack::new(40, 2);
        let mut r = reader();
        let c = r.continue_walk(stack.cut_at(30, 2)).unwrap();
        assert_eq!(c.elided, 0);
        assert_eq!(
            c.tail,
            (31..=40).map(|i| 0x1000 + i - 1).collect::<Vec<u64>>()
        );
    }

    #[test]
    fn broken_chains_and_moved_stacks_are_not_trusted() {
        let mut stack = FakeStack::new(1000, 2);
        let mut r = reader();
        // A record pointing down the stack.
        stack.mem[500 * 2] = stack.mem.as_ptr() as u64;
        assert_eq!(
            r.continue_walk(stack.cut_at(100, 2)),
            Err(NotContinued::Untrusted)
        );
        let stack = FakeStack::new(1000, 2);
        let mut cut = stack.cut_at(100, 2);
        // The goroutine's recorded stack no longer matches.
        cut.stack_lo -= 16;
        assert_eq!(r.continue_walk(cut), Err(NotContinued::Untrusted));
        // A cut outside the bounds.
        let mut cut = stack.cut_at(100, 2);
        cut.fp = cut.stack_hi + 64;
        assert_eq!(r.continue_walk(cut), Err(NotContinued::Untrusted));
    }

    #[test]
    fn tail_ring_keeps_order() {
        let mut ring = TailRing::default();
        for i in 0..(TAIL_FRAMES as u64 + 10) {
            ring.push(i);
        }
        let v = ring.into_vec();
        assert_eq!(v.len(), TAIL_FRAMES);
        assert_eq!(v[0], 10);
        assert_eq!(*v.last().unwrap(), TAIL_FRAMES as u64 + 9);
    }
}
