//! stackcount-style aggregation: one row per (goroutine state, unique stack).
//!
//! Each distinct stack is interned once in a [`StackTable`] (one or two bytes a frame), and
//! rows are keyed by its id: memory grows with the distinct stacks' frames, not with samples.

use std::{
    collections::{BTreeSet, HashMap},
    hash::BuildHasher as _,
};

use hashbrown::HashTable;

use crate::{
    goruntime::state::GoroutineState,
    markers::{GAP_MARKER, NATIVE_CUT_MARKER, SWITCH_MARKER, is_marker},
    sample::{LabelSet, Sample, SampleKind},
};

/// Index of an interned stack in the [`StackTable`].
pub type StackId = u32;

/// The empty stack, interned before any other.
pub const EMPTY_STACK: StackId = 0;

/// Index of an interned label set in [`Profile::label_sets`]; [`NO_LABELS`] for none.
pub type LabelSetId = u32;

/// The [`LabelSetId`] of samples without labels.
pub const NO_LABELS: LabelSetId = 0;

/// How many threads' last stacks the table remembers (see [`StackTable::insert_for`]); beyond
/// it the memory is dropped and stacks are learnt again.
const MAX_REMEMBERED_PATHS: usize = 64;

/// A hash map with a fast non-cryptographic hasher: keys are addresses and ids the target
/// cannot choose to collide (std's SipHash made hashing a third of a deep run's cost).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Index of a distinct address in the [`StackTable`].
type AddrId = u32;

/// Where one interned stack's encoding lies in [`StackTable::bytes`].
#[derive(Clone, Copy, Debug)]
struct StackSpan {
    start: usize,
    end: usize,
    frames: u32,
}

/// The last stack interned for one thread, outermost first: its addresses, its encoding, where
/// each frame's encoding ends, and its id.
#[derive(Debug, Default)]
struct RememberedPath {
    addrs: Vec<u64>,
    encoded: Vec<u8>,
    ends: Vec<usize>,
    stack: StackId,
}

/// Interned stacks, each distinct stack stored once as the LEB128 ids of its addresses.
///
/// A profile's stacks use a few hundred to a few thousand distinct addresses, so a frame takes
/// one or two bytes. A prefix tree (one node and one hash entry per distinct prefix, about
/// 56 bytes a frame) shares the root side of similar stacks but costs 30-50 times more per
/// frame when stacks differ, as thousands of goroutines recursing along their own paths do:
/// 236 MiB for 10,931 distinct stacks of one 60 s run. Here memory grows with the distinct
/// stacks' frames at one or two bytes each, never with samples.
///
/// Interning costs one address lookup per frame and a hash of the encoding, but consecutive
/// samples of one thread mostly share their root side (the recursion did not unwind between
/// two ticks): the table remembers each thread's last stack and encodes only the frames past
/// the shared part; comparing two address slices is several times cheaper than looking
/// them up.
#[derive(Debug)]
pub struct StackTable {
    /// Distinct addresses by [`AddrId`].
    addrs: Vec<u64>,
    addr_ids: FastMap<u64, AddrId>,
    /// Every interned stack's address ids, outermost first, LEB128, back to back.
    bytes: Vec<u8>,
    spans: Vec<StackSpan>,
    /// Stack ids by the hash of their encoding.
    index: HashTable<StackId>,
    hasher: foldhash::fast::FixedState,
    /// Per thread id, the stack [`StackTable::insert_for`] interned last.
    remembered: FastMap<u32, RememberedPath>,
    /// Reused by [`StackTable::insert`].
    encoded: Vec<u8>,
}

impl Default for StackTable {
    fn default() -> Self {
        let mut table = Self {
            addrs: Vec::new(),
            addr_ids: FastMap::default(),
            bytes: Vec::new(),
            spans: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::FixedState::default(),
            remembered: FastMap::default(),
            encoded: Vec::new(),
        };
        let empty = table.intern(&[], 0);
        debug_assert_eq!(empty, EMPTY_STACK);
        table
    }
}

impl StackTable {
    /// Interns a stack given innermost first; returns its id.
    pub fn insert(&mut self, frames_innermost_first: &[u64]) -> StackId {
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        for &addr in frames_innermost_first.iter().rev() {
            let id = self.addr_id(addr);
            push_leb128(&mut encoded, id);
        }
        let stack = self.intern(&encoded, frames_innermost_first.len());
        self.encoded = encoded;
        stack
    }

    /// [`StackTable::insert`] for a stack sampled on `thread`: the encoding of the root side
    /// it shares with the thread's previous stack is taken from that stack instead of being
    /// made again, and the same stack again is its previous id.
    pub fn insert_for(&mut self, thread: u32, frames_innermost_first: &[u64]) -> StackId {
        let mut path = self.remembered.remove(&thread).unwrap_or_default();
        let shared = path
            .addrs
            .iter()
            .zip(frames_innermost_first.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let same = shared == path.addrs.len() && shared == frames_innermost_first.len();
        if !same {
            path.addrs.truncate(shared);
            path.ends.truncate(shared);
            path.encoded
                .truncate(path.ends.last().copied().unwrap_or(0));
            for &addr in frames_innermost_first.iter().rev().skip(shared) {
                let id = self.addr_id(addr);
                push_leb128(&mut path.encoded, id);
                path.ends.push(path.encoded.len());
                path.addrs.push(addr);
            }
            path.stack = self.intern(&path.encoded, frames_innermost_first.len());
        }
        let stack = path.stack;
        if self.remembered.len() >= MAX_REMEMBERED_PATHS {
            self.remembered.clear();
        }
        self.remembered.insert(thread, path);
        stack
    }

    fn addr_id(&mut self, addr: u64) -> AddrId {
        let next = self.addrs.len() as AddrId;
        let id = *self.addr_ids.entry(addr).or_insert(next);
        if id == next {
            self.addrs.push(addr);
        }
        id
    }

    /// Interns the stack of `frames` frames whose encoding is `encoded`.
    fn intern(&mut self, encoded: &[u8], frames: usize) -> StackId {
        let hash = self.hasher.hash_one(encoded);
        let (bytes, spans) = (&self.bytes, &self.spans);
        if let Some(&found) = self.index.find(hash, |&s| {
            let span = spans[s as usize];
            &bytes[span.start..span.end] == encoded
        }) {
            return found;
        }
        let id = self.spans.len() as StackId;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(encoded);
        self.spans.push(StackSpan {
            start,
            end: self.bytes.len(),
            frames: frames as u32,
        });
        let (bytes, spans, hasher) = (&self.bytes, &self.spans, &self.hasher);
        self.index.insert_unique(hash, id, |&s| {
            let span = spans[s as usize];
            hasher.hash_one(&bytes[span.start..span.end])
        });
        id
    }

    /// The frames of stack `id`, innermost first.
    pub fn frames(&self, id: StackId) -> Vec<u64> {
        let Some(span) = self.spans.get(id as usize) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(span.frames as usize);
        let mut bytes = &self.bytes[span.start..span.end];
        while let Some((addr_id, rest)) = pop_leb128(bytes) {
            out.extend(self.addrs.get(addr_id as usize));
            bytes = rest;
        }
        out.reverse();
        out
    }

    /// Number of frames of stack `id`.
    pub fn depth(&self, id: StackId) -> usize {
        self.spans.get(id as usize).map_or(0, |s| s.frames as usize)
    }

    /// Number of distinct stacks, the empty one included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether only the empty stack exists.
    pub fn is_empty(&self) -> bool {
        self.spans.len() == 1
    }

    /// Bytes the stacks' encodings take (a measure of memory use).
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Every distinct address in any stack, each once, in ascending order.
    pub fn unique_addresses(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .addrs
            .iter()
            .copied()
            .filter(|a| !is_marker(*a))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Appends `value` as unsigned LEB128 (7 bits a byte, low first, high bit = more follows).
fn push_leb128(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads one unsigned LEB128 value (as [`push_leb128`] wrote it) off the front of `bytes`.
fn pop_leb128(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Key of one aggregated row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub state: GoroutineState,
    pub stack: StackId,
    /// The goroutines' pprof label set ([`Profile::label_set`]).
    pub labels: LabelSetId,
    /// CPU samples and wall-clock samples are separate rows.
    pub kind: SampleKind,
}

/// What is known about one row.
#[derive(Clone, Debug, Default)]
pub struct StackStats {
    /// Samples with this state and stack.
    pub count: u64,
    /// Distinct goroutine ids seen with it.
    pub goids: BTreeSet<u64>,
    /// Some sample of this row was cut at the frame limit and could not be completed: its
    /// depth is a lower bound.
    pub truncated: bool,
    /// Smallest and largest number of user frames of the samples (exact, gaps included).
    pub depth: (u64, u64),
    /// Largest number of frames counted but not kept (see [`GAP_MARKER`]).
    pub gap_frames: u64,
    /// Raw wait reasons seen (for `waiting` rows).
    pub waitreasons: BTreeSet<u8>,
    /// Smallest and largest goroutine stack bytes in use seen, when known.
    pub stack_bytes: Option<(u64, u64)>,
    /// Times of the first and the last sample, kernel monotonic nanoseconds.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Wall-clock time the row's wall samples stand for, nanoseconds (0 for CPU rows).
    pub wall_ns: u64,
}

/// Sample accounting of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleCounts {
    /// Samples received from the kernel.
    pub total: u64,
    /// Samples that passed the filters.
    pub kept: u64,
    /// Samples the kernel could not deliver (ring buffer full) or user space could not decode.
    pub lost: u64,
    /// Wall-clock snapshots of every goroutine taken (`record --wall`).
    pub wall_snapshots: u64,
    /// Goroutine samples in those snapshots, and those that passed the filters (`total` and
    /// `kept` count CPU samples only).
    pub wall_total: u64,
    pub wall_kept: u64,
    /// Wall-clock time the kept wall samples stand for, nanoseconds (goroutine-time).
    pub wall_kept_ns: u64,
}

/// The aggregated profile of a run.
#[derive(Debug, Default)]
pub struct Profile {
    pub table: StackTable,
    pub stacks: HashMap<StackKey, StackStats>,
    pub counts: SampleCounts,
    /// Interned label sets; index [`NO_LABELS`] is unused (see [`Profile::label_set`]).
    pub label_sets: Vec<LabelSet>,
    label_ids: HashMap<LabelSet, LabelSetId>,
}

/// One row of [`Profile::ranked`].
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub key: StackKey,
    pub stats: &'a StackStats,
}

impl Profile {
    /// Adds a sample that passed the filters.
    pub fn add(&mut self, sample: &Sample) {
        let frames = marked_frames(sample);
        let frames = frames.as_deref().unwrap_or(&sample.frames);
        let stack = match sample.kind {
            SampleKind::Cpu => {
                self.counts.kept += 1;
                self.table.insert_for(sample.tid, frames)
            }
            // Thousands of goroutines per snapshot: remembering a path per one would only
            // churn the per-thread memory.
            SampleKind::Wall => {
                self.counts.wall_kept += 1;
                self.counts.wall_kept_ns += sample.wall_ns;
                self.table.insert(frames)
            }
        };
        let labels = self.intern_labels(sample);
        let key = StackKey {
            state: sample.state(),
            stack,
            labels,
            kind: sample.kind,
        };
        let stats = self.stacks.entry(key).or_default();
        let depth = sample.depth() as u64;
        if stats.count == 0 {
            stats.first_ns = sample.time_ns;
            stats.depth = (depth, depth);
        }
        stats.depth = (stats.depth.0.min(depth), stats.depth.1.max(depth));
        stats.gap_frames = stats.gap_frames.max(sample.gap.map_or(0, |g| g.frames));
        stats.count += 1;
        stats.wall_ns += sample.wall_ns;
        stats.first_ns = stats.first_ns.min(sample.time_ns);
        stats.last_ns = stats.last_ns.max(sample.time_ns);
        stats.truncated |= sample.truncated;
        if let Some(g) = sample.goroutine {
            stats.goids.insert(g.goid);
            if g.state == GoroutineState::Waiting {
                stats.waitreasons.insert(g.waitreason);
            }
        }
        if let Some(bytes) = sample.stack_bytes {
            stats.stack_bytes = Some(match stats.stack_bytes {
                None => (bytes, bytes),
                Some((lo, hi)) => (lo.min(bytes), hi.max(bytes)),
            });
        }
    }

    fn intern_labels(&mut self, sample: &Sample) -> LabelSetId {
        let Some(set) = sample.labels.set.as_ref().filter(|s| !s.is_empty()) else {
            return NO_LABELS;
        };
        if let Some(id) = self.label_ids.get(set) {
            return *id;
        }
        if self.label_sets.is_empty() {
            // Index 0 is NO_LABELS.
            self.label_sets.push(LabelSet::from(Vec::new()));
        }
        let id = self.label_sets.len() as LabelSetId;
        self.label_sets.push(set.clone());
        self.label_ids.insert(set.clone(), id);
        id
    }

    /// The label set of `id`: (key, value) pairs sorted by key, empty for [`NO_LABELS`].
    pub fn label_set(&self, id: LabelSetId) -> &[(String, String)] {
        if id == NO_LABELS {
            return &[];
        }
        self.label_sets.get(id as usize).map_or(&[], |s| &s[..])
    }

    /// Whether the run took wall-clock snapshots (its rows are then of two kinds).
    pub fn has_wall(&self) -> bool {
        self.counts.wall_snapshots > 0
    }

    /// Rows of every kind: CPU rows by descending count, then wall rows by descending time
    /// (ties: deeper first, then key order, so output is stable).
    pub fn ranked(&self) -> Vec<Row<'_>> {
        let mut rows = self.ranked_of(SampleKind::Cpu);
        rows.extend(self.ranked_of(SampleKind::Wall));
        rows
    }

    /// The rows of one kind, CPU rows by descending count, wall rows by descending time.
    pub fn ranked_of(&self, kind: SampleKind) -> Vec<Row<'_>> {
        let mut rows: Vec<Row<'_>> = self
            .stacks
            .iter()
            .filter(|(key, _)| key.kind == kind)
            .map(|(key, stats)| Row { key: *key, stats })
            .collect();
        rows.sort_by(|a, b| {
            b.stats
                .wall_ns
                .cmp(&a.stats.wall_ns)
                .then_with(|| b.stats.count.cmp(&a.stats.count))
                .then_with(|| {
                    self.table
                        .depth(b.key.stack)
                        .cmp(&self.table.depth(a.key.stack))
                })
                .then_with(|| a.key.cmp(&b.key))
        });
        rows
    }

    /// Kept CPU samples per goroutine state, in report order, states with no sample left out.
    pub fn by_state(&self) -> Vec<(GoroutineState, u64)> {
        self.totals_by_state(SampleKind::Cpu, |s| s.count)
    }

    /// Kept wall-clock time per goroutine state (nanoseconds of goroutine-time), in report
    /// order, states without any left out.
    pub fn wall_by_state(&self) -> Vec<(GoroutineState, u64)> {
        self.totals_by_state(SampleKind::Wall, |s| s.wall_ns)
    }

    fn totals_by_state(
        &self,
        kind: SampleKind,
        value: impl Fn(&StackStats) -> u64,
    ) -> Vec<(GoroutineState, u64)> {
        let mut counts: HashMap<GoroutineState, u64> = HashMap::new();
        for (key, stats) in self.stacks.iter().filter(|(k, _)| k.kind == kind) {
            *counts.entry(key.state).or_default() += value(stats);
        }
        GoroutineState::ALL
            .into_iter()
            .filter_map(|s| counts.get(&s).map(|c| (s, *c)))
            .collect()
    }
}

/// The sample's frames with its kernel frames on top and the pseudo-frames of its switch point
/// and gap inserted, or `None` when it has none of these (its frames are interned as they are).
fn marked_frames(sample: &Sample) -> Option<Vec<u64>> {
    let n = sample.frames.len();
    let mut marks: Vec<(usize, u64)> = Vec::with_capacity(2);
    let kernel = &sample.kernel_frames;
    if let Some(at) = sample.switch_index.filter(|at| *at <= n) {
        marks.push((at, SWITCH_MARKER));
    }
    if let Some(gap) = sample.gap.filter(|g| g.at <= n) {
        marks.push((gap.at, GAP_MARKER));
    }
    if let Some(at) = sample.native_cut.filter(|at| *at <= n) {
        marks.push((at, NATIVE_CUT_MARKER));
    }
    if marks.is_empty() && kernel.is_empty() {
        return None;
    }
    marks.sort_unstable();
    let mut frames = Vec::with_capacity(kernel.len() + n + marks.len());
    frames.extend_from_slice(kernel);
    let mut from = 0;
    for (at, marker) in marks {
        frames.extend_from_slice(&sample.frames[from..at]);
        frames.push(marker);
        from = at;
    }
    frames.extend_from_slice(&sample.frames[from..]);
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(frames: &[u64], goid: u64, state: GoroutineState) -> Sample {
        Sample {
            stack_bytes: Some(frames.len() as u64 * 64),
            ..Sample::of_goroutine(frames, goid, state)
        }
    }

    #[test]
    fn shares_prefixes_and_counts_rows() {
        let mut p = Profile::default();
        p.add(&sample(&[3, 2, 1], 1, GoroutineState::Running));
        p.add(&sample(&[3, 2, 1], 2, GoroutineState::Running));
        p.add(&sample(&[4, 2, 1], 1, GoroutineState::Running));
        p.add(&sample(&[3, 2, 1], 1, GoroutineState::Syscall));
        // the empty stack, [3, 2, 1] and [4, 2, 1]
        assert_eq!(p.table.len(), 3);
        let rows = p.ranked();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].stats.count, 2);
        assert_eq!(rows[0].stats.goids.len(), 2);
        assert_eq!(p.table.frames(rows[0].key.stack), [3, 2, 1]);
        assert_eq!(
            p.by_state(),
            [(GoroutineState::Running, 3), (GoroutineState::Syscall, 1)]
        );
        assert_eq!(p.table.unique_addresses(), [1, 2, 3, 4]);
    }

    #[test]
    fn deep_stacks_take_a_byte_a_frame() {
        let mut p = Profile::default();
        let deep: Vec<u64> = (0..10_000).map(|i| 100 + (i % 2)).collect();
        for _ in 0..3 {
            for cut in 0..50 {
                p.add(&sample(&deep[cut..], 1, GoroutineState::Running));
            }
        }
        // 50 distinct stacks (and the empty one), each frame one byte: two distinct addresses.
        assert_eq!(p.table.len(), 51);
        let frames: usize = (0..50).map(|cut| 10_000 - cut).sum();
        assert_eq!(p.table.encoded_bytes(), frames);
        assert_eq!(p.counts.kept, 150);
        for row in p.ranked() {
            assert_eq!(row.stats.count, 3);
            let depth = p.table.depth(row.key.stack);
            assert_eq!(p.table.frames(row.key.stack), deep[10_000 - depth..]);
        }
    }

    #[test]
    fn ids_past_one_byte_round_trip() {
        let mut t = StackTable::default();
        // 70,000 distinct addresses: ids of one, two and three bytes.
        let wide: Vec<u64> = (0..70_000u64).map(|i| 0x40_0000 + i * 4).collect();
        let a = t.insert(&wide);
        let b = t.insert(&wide[1..]);
        assert_ne!(a, b);
        assert_eq!(t.frames(a), wide);
        assert_eq!(t.frames(b), wide[1..]);
        assert_eq!(t.insert(&wide), a);
        assert_eq!(t.unique_addresses().len(), 70_000);
    }

    #[test]
    fn remembered_stacks_give_the_same_ids_as_interning_afresh() {
        let mut t = StackTable::default();
        let stacks: [&[u64]; 6] = [
            &[5, 4, 3, 2, 1],
            &[6, 4, 3, 2, 1],
            &[2, 1],
            &[7, 8, 3, 2, 1],
            &[],
            &[5, 4, 3, 2, 1],
        ];
        let mut ids = vec![];
        for (i, s) in stacks.iter().enumerate() {
            // Two threads interleaved, and a third that never repeats.
            ids.push(t.insert_for((i % 2) as u32, s));
            t.insert_for(99, &[42, 1]);
        }
        for (s, id) in stacks.iter().zip(&ids) {
            assert_eq!(t.frames(*id), *s);
            // Interning without any remembered stack finds the same id.
            assert_eq!(t.insert(s), *id);
        }
        assert_eq!(ids[0], ids[5]);
        assert_eq!(ids[4], EMPTY_STACK);
        // The empty stack, the four distinct ones of the two threads and [42, 1].
        assert_eq!(t.len(), 6);
        assert_eq!(t.unique_addresses(), [1, 2, 3, 4, 5, 6, 7, 8, 42]);
    }

    #[test]
    fn switch_point_and_labels_are_part_of_the_row() {
        let mut p = Profile::default();
        let mut switched = sample(&[9, 8, 3, 2, 1], 7, GoroutineState::Running);
        switched.switch_index = Some(2);
        p.add(&switched);
        let mut labelled = sample(&[3, 2, 1], 7, GoroutineState::Running);
        labelled.labels.set = Some(LabelSet::from(vec![("req".to_owned(), "42".to_owned())]));
        p.add(&labelled);
        p.add(&labelled);
        p.add(&sample(&[3, 2, 1], 8, GoroutineState::Running));
        let rows = p.ranked();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].stats.count, 2);
        assert_eq!(
            p.label_set(rows[0].key.labels),
            [("req".into(), "42".into())]
        );
        let switched_row = rows
            .iter()
            .find(|r| p.table.depth(r.key.stack) == 6)
            .unwrap();
        assert_eq!(
            p.table.frames(switched_row.key.stack),
            [9, 8, SWITCH_MARKER, 3, 2, 1]
        );
        assert_eq!(p.label_set(switched_row.key.labels), []);
        assert!(!p.table.unique_addresses().contains(&SWITCH_MARKER));
    }
}
