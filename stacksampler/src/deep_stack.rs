//! Deep stacks: finishing in user space the frame-pointer walks the kernel cut at `--max-frames`.
//!
//! The kernel walks the innermost frames (the "head") and reports the frame pointer where it
//! stopped. A runaway recursion can be a million frames deep; walking all of them in the kernel at
//! 120-150 ns per 16-byte probe read would cost 0.1 s per sample. Instead, user space reads the
//! rest of the goroutine's stack from `/proc/PID/mem` in large chunks (one `pread` per 256 KiB)
//! and follows the frame-pointer chain in its own memory: the exact depth and the outermost
//! frames (the "tail", where the recursion was entered) at a few ns per frame.
//!
//! Successive samples of the same goroutine share their outer frames, so each walk leaves
//! checkpoints (every [`CHECKPOINT_EVERY`] frames: frame pointer, its 16-byte record, frames from
//! there to the root); the next walk stops at the first checkpoint whose record is unchanged and
//! takes the rest from it. A recursion sampled 100 times is read about once.
//!
//! The walk races with the running goroutine: it may have returned past the cut, or its stack may
//! have been moved by a growth. A continuation is trusted only if the chain climbs strictly inside
//! the stack bounds the kernel reported, ends with a zero frame pointer, and the goroutine still
//! has the same stack bounds afterwards; otherwise the sample keeps its head only and is marked
//! truncated (its depth is then a lower bound).

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt};

use stacksampler_common::GoLayout;

/// Outermost frames kept for a stack deeper than the kernel walk.
pub const TAIL_FRAMES: usize = 256;
/// Bytes read from the target per `pread`.
const CHUNK_BYTES: u64 = 256 * 1024;
/// A checkpoint is kept every this many frames of a walk.
pub const CHECKPOINT_EVERY: u64 = 256;
/// Go's largest possible goroutine stack (`maxstackceiling`, 1 GB on 64-bit) bounds any walk.
const MAX_GO_STACK_BYTES: u64 = 1 << 30;
/// Size of one frame record: saved frame pointer, return address.
const RECORD_BYTES: u64 = 16;
/// Goroutines whose checkpoints are remembered at most (least recently used dropped first).
const MAX_REMEMBERED_GOROUTINES: usize = 64;

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

#[derive(Clone, Copy, Debug)]
struct Checkpoint {
    record: [u64; 2],
    /// Frames from this record (included) to the root.
    frames_to_root: u64,
}

#[derive(Debug, Default)]
struct Memo {
    stack_lo: u64,
    stack_hi: u64,
    checkpoints: HashMap<u64, Checkpoint>,
    tail: Vec<u64>,
    last_used: u64,
}

/// Counters of the continuation work, for `--verbose` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContinuationStats {
    /// Walks attempted.
    pub walks: u64,
    /// Walks that reached the root.
    pub completed: u64,
    /// Frames followed in user space.
    pub frames_walked: u64,
    /// Frames taken from a previous walk's checkpoint.
    pub frames_reused: u64,
    /// Bytes read from the target.
    pub bytes_read: u64,
}

/// Reads deep goroutine stacks of one process.
pub struct DeepStackReader {
    mem: File,
    layout: GoLayout,
    memos: HashMap<u64, Memo>,
    clock: u64,
    chunk: Vec<u8>,
    chunk_base: u64,
    pub stats: ContinuationStats,
}

impl DeepStackReader {
    /// Opens `/proc/PID/mem`; `layout` locates `g.stack` for the moved-stack check.
    pub fn open(pid: u32, layout: GoLayout) -> std::io::Result<Self> {
        Ok(Self {
            mem: File::open(format!("/proc/{pid}/mem"))?,
            layout,
            memos: HashMap::new(),
            clock: 0,
            chunk: Vec::new(),
            chunk_base: 0,
            stats: ContinuationStats::default(),
        })
    }

    /// Continues a cut walk; `None` when it cannot be trusted (see the module docs).
    pub fn continue_walk(&mut self, cut: CutWalk) -> Option<Continuation> {
        self.stats.walks += 1;
        self.clock += 1;
        let span = cut.stack_hi.checked_sub(cut.stack_lo)?;
        if span == 0 || span > MAX_GO_STACK_BYTES || cut.fp < cut.stack_lo || cut.fp >= cut.stack_hi
        {
            return None;
        }
        self.chunk.clear();
        // Taken out while walking (the walk needs `self`); put back by `remember`.
        let memo = self
            .memos
            .remove(&cut.g_addr)
            .filter(|m| m.stack_lo == cut.stack_lo && m.stack_hi == cut.stack_hi);
        let reusable = memo.as_ref().map(|m| (&m.checkpoints, &m.tail));

        let mut tail = TailRing::default();
        let mut new_checkpoints: Vec<(u64, [u64; 2], u64)> = Vec::new();
        let mut walked = 0u64;
        let mut fp = cut.fp;
        let (total, inherited_tail) = loop {
            if fp < cut.stack_lo || fp + RECORD_BYTES > cut.stack_hi {
                return None;
            }
            let record = self.record_at(fp, cut.stack_hi)?;
            if let Some((checkpoints, old_tail)) = reusable
                && let Some(cp) = checkpoints.get(&fp)
                && cp.record == record
            {
                self.stats.frames_reused += cp.frames_to_root;
                break (walked + cp.frames_to_root, Some(old_tail.clone()));
            }
            if walked.is_multiple_of(CHECKPOINT_EVERY) {
                new_checkpoints.push((fp, record, walked));
            }
            let [next_fp, ret] = record;
            if ret == 0 {
                return None;
            }
            tail.push(ret - 1);
            walked += 1;
            if next_fp == 0 {
                break (walked, None);
            }
            if next_fp <= fp {
                return None;
            }
            fp = next_fp;
        };
        self.stats.frames_walked += walked;
        if !self.same_stack(cut) {
            return None;
        }
        self.stats.completed += 1;

        // The outermost TAIL_FRAMES frames: from the previous walk when it was reused, else
        // from this walk's ring (the two join when this walk was short).
        let tail_frames = match inherited_tail {
            Some(old) => join_tails(tail.into_vec(), &old, total),
            None => tail.into_vec(),
        };
        let elided = total.saturating_sub(tail_frames.len() as u64);

        // Remember this walk for the next sample of the goroutine.
        let mut memo = memo.unwrap_or_else(|| Memo {
            stack_lo: cut.stack_lo,
            stack_hi: cut.stack_hi,
            ..Memo::default()
        });
        for (cp_fp, record, at) in new_checkpoints {
            memo.checkpoints.insert(
                cp_fp,
                Checkpoint {
                    record,
                    frames_to_root: total - at,
                },
            );
        }
        memo.tail = tail_frames.clone();
        memo.last_used = self.clock;
        self.memos.insert(cut.g_addr, memo);
        self.evict();
        Some(Continuation {
            elided,
            tail: tail_frames,
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

    fn evict(&mut self) {
        while self.memos.len() > MAX_REMEMBERED_GOROUTINES {
            let Some(oldest) = self
                .memos
                .iter()
                .min_by_key(|(_, m)| m.last_used)
                .map(|(g, _)| *g)
            else {
                return;
            };
            self.memos.remove(&oldest);
        }
    }
}

/// Joins the frames walked this time (`fresh`, innermost first) with a previous walk's tail
/// that ends at the root, for a stack of `total` frames: keeps the outermost TAIL_FRAMES.
fn join_tails(fresh: Vec<u64>, old_tail: &[u64], total: u64) -> Vec<u64> {
    let old_part = old_tail.len() as u64;
    let fresh_len = fresh.len() as u64;
    // If the fresh frames and the old tail together cover the whole continuation, they are
    // contiguous; otherwise the old tail alone is the outermost part.
    if fresh_len + old_part >= total {
        let mut all = fresh;
        let overlap = (fresh_len + old_part - total) as usize;
        all.extend_from_slice(&old_tail[overlap.min(old_tail.len())..]);
        let start = all.len().saturating_sub(TAIL_FRAMES);
        all[start..].to_vec()
    } else {
        old_tail.to_vec()
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
        let layout = GoLayout {
            g_stack_lo: 0,
            g_stack_hi: 8,
            ..GoLayout::default()
        };
        DeepStackReader::open(std::process::id(), layout).unwrap()
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
    fn second_walk_reuses_checkpoints() {
        let stack = FakeStack::new(50_000, 6);
        let mut r = reader();
        let first = r.continue_walk(stack.cut_at(1000, 6)).unwrap();
        let walked = r.stats.frames_walked;
        // Deeper cut (a shallower sample of the same recursion) and a shallower one.
        let second = r.continue_walk(stack.cut_at(1003, 6)).unwrap();
        assert_eq!(second.frames(), first.frames() - 3);
        assert_eq!(second.tail, first.tail);
        assert!(
            r.stats.frames_walked - walked <= CHECKPOINT_EVERY,
            "walked again"
        );
        let third = r.continue_walk(stack.cut_at(10, 6)).unwrap();
        assert_eq!(third.frames(), 50_000 - 10);
        assert_eq!(third.tail, first.tail);
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
        assert!(r.continue_walk(stack.cut_at(100, 2)).is_none());
        let stack = FakeStack::new(1000, 2);
        let mut cut = stack.cut_at(100, 2);
        // The goroutine's recorded stack no longer matches.
        cut.stack_lo -= 16;
        assert!(r.continue_walk(cut).is_none());
        // A cut outside the bounds.
        let mut cut = stack.cut_at(100, 2);
        cut.fp = cut.stack_hi + 64;
        assert!(r.continue_walk(cut).is_none());
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
