//! stackcount-style aggregation: one row per (goroutine state, unique stack).
//!
//! Stacks are interned in a prefix tree keyed from the outermost frame, so deep stacks that share
//! their root part (a recursion sampled at slightly different depths, thousands of goroutines
//! parked in the same place) are stored once: memory grows with the number of distinct frames
//! seen, not with samples x depth.
//!
//! Interning a deep stack costs one hash lookup per frame from the root. Consecutive samples of
//! one thread mostly share their root side (the recursion did not unwind between two ticks), so
//! the trie remembers the last path it interned for each thread and hashes only the frames past
//! the part both samples share; comparing two address slices is several times cheaper than
//! hashing them.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{
    goruntime::state::GoroutineState,
    sample::{LabelSet, Sample, SampleKind},
};

/// Index of a node in the [`StackTrie`]; a node stands for the stack from the root to it.
pub type NodeId = u32;

/// The root node: the empty stack.
pub const ROOT: NodeId = 0;

/// Pseudo-address standing for the frames of a deep stack that were counted but not kept
/// (between head and tail, see `unwind.rs`); it symbolizes as one `[... not captured ...]` frame.
pub const GAP_MARKER: u64 = u64::MAX;

/// Pseudo-address marking where a sample's walk left a system stack (`g0`: `runtime.newstack`,
/// `systemstack` callees) for the user goroutine's stack (`m.curg.sched`): frames inward of it
/// ran on the system stack. It symbolizes as one `--- switched to goroutine stack ---` frame.
pub const SWITCH_MARKER: u64 = u64::MAX - 1;

/// Pseudo-address standing for the stack of a goroutine that a wall-clock snapshot found
/// running but whose live stack no CPU sample gave (see `record::wall`). It symbolizes as one
/// `[running, stack not captured]` frame.
pub const NOT_CAPTURED_MARKER: u64 = u64::MAX - 2;

/// Pseudo-address marking where the native (C) part of a mixed stack was cut: its unwind
/// stopped before it reached Go code again (the bounded stack copy ended, or a frame had no
/// call-frame information). It symbolizes as one `[native frames cut ...]` frame.
pub const NATIVE_CUT_MARKER: u64 = u64::MAX - 3;

/// Whether `addr` is one of the pseudo-addresses above rather than a code address.
pub fn is_marker(addr: u64) -> bool {
    addr == GAP_MARKER
        || addr == SWITCH_MARKER
        || addr == NOT_CAPTURED_MARKER
        || addr == NATIVE_CUT_MARKER
}

/// Index of an interned label set in [`Profile::label_sets`]; [`NO_LABELS`] for none.
pub type LabelSetId = u32;

/// The [`LabelSetId`] of samples without labels.
pub const NO_LABELS: LabelSetId = 0;

/// How many threads' last paths the trie remembers (see [`StackTrie::insert_for`]); beyond it the
/// memory is dropped and paths are learnt again.
const MAX_REMEMBERED_PATHS: usize = 64;

/// A hash map with a fast non-cryptographic hasher: keys are addresses and node ids the target
/// cannot choose to collide (std's SipHash made hashing a third of a deep run's cost).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

#[derive(Clone, Copy, Debug)]
struct Node {
    parent: NodeId,
    addr: u64,
    depth: u32,
}

/// The last stack interned for one thread, outermost first: its addresses and their nodes.
#[derive(Debug, Default)]
struct RememberedPath {
    addrs: Vec<u64>,
    nodes: Vec<NodeId>,
}

/// Interned stacks as a prefix tree over return addresses, outermost first.
#[derive(Debug)]
pub struct StackTrie {
    nodes: Vec<Node>,
    children: FastMap<(NodeId, u64), NodeId>,
    /// Per thread id, the path [`StackTrie::insert_for`] interned last.
    remembered: FastMap<u32, RememberedPath>,
}

impl Default for StackTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                parent: ROOT,
                addr: 0,
                depth: 0,
            }],
            children: FastMap::default(),
            remembered: FastMap::default(),
        }
    }
}

impl StackTrie {
    /// Interns a stack given innermost first; returns the node of its innermost frame.
    pub fn insert(&mut self, frames_innermost_first: &[u64]) -> NodeId {
        frames_innermost_first
            .iter()
            .rev()
            .fold(ROOT, |node, &addr| self.child(node, addr))
    }

    /// [`StackTrie::insert`] for a stack sampled on `thread`: the root side it shares with the
    /// thread's previous stack is taken from that path instead of being looked up again.
    pub fn insert_for(&mut self, thread: u32, frames_innermost_first: &[u64]) -> NodeId {
        let mut path = self.remembered.remove(&thread).unwrap_or_default();
        let shared = path
            .addrs
            .iter()
            .zip(frames_innermost_first.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        path.addrs.truncate(shared);
        path.nodes.truncate(shared);
        let mut node = path.nodes.last().copied().unwrap_or(ROOT);
        for &addr in frames_innermost_first.iter().rev().skip(shared) {
            node = self.child(node, addr);
            path.addrs.push(addr);
            path.nodes.push(node);
        }
        if self.remembered.len() >= MAX_REMEMBERED_PATHS {
            self.remembered.clear();
        }
        self.remembered.insert(thread, path);
        node
    }

    /// The child of `node` for `addr`, created when new.
    fn child(&mut self, node: NodeId, addr: u64) -> NodeId {
        let next_id = self.nodes.len() as NodeId;
        let id = *self.children.entry((node, addr)).or_insert(next_id);
        if id == next_id {
            let depth = self.nodes[node as usize].depth + 1;
            self.nodes.push(Node {
                parent: node,
                addr,
                depth,
            });
        }
        id
    }

    /// The stack ending at `leaf`, innermost first.
    pub fn frames(&self, leaf: NodeId) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.depth(leaf));
        let mut node = leaf;
        while node != ROOT {
            let n = self.nodes[node as usize];
            out.push(n.addr);
            node = n.parent;
        }
        out
    }

    /// Number of frames of the stack ending at `leaf`.
    pub fn depth(&self, leaf: NodeId) -> usize {
        self.nodes[leaf as usize].depth as usize
    }

    /// Number of interned nodes (a measure of memory use).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// Every distinct address in any stack, each once.
    pub fn unique_addresses(&self) -> Vec<u64> {
        let set: HashSet<u64> = self.nodes[1..]
            .iter()
            .map(|n| n.addr)
            .filter(|a| !is_marker(*a))
            .collect();
        let mut v: Vec<u64> = set.into_iter().collect();
        v.sort_unstable();
        v
    }
}

/// Key of one aggregated row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub state: GoroutineState,
    pub leaf: NodeId,
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
    pub trie: StackTrie,
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
        let leaf = match sample.kind {
            SampleKind::Cpu => {
                self.counts.kept += 1;
                self.trie.insert_for(sample.tid, frames)
            }
            // Thousands of goroutines per snapshot: remembering a path per one would only
            // churn the per-thread memory.
            SampleKind::Wall => {
                self.counts.wall_kept += 1;
                self.counts.wall_kept_ns += sample.wall_ns;
                self.trie.insert(frames)
            }
        };
        let labels = self.intern_labels(sample);
        let key = StackKey {
            state: sample.state(),
            leaf,
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
                    self.trie
                        .depth(b.key.leaf)
                        .cmp(&self.trie.depth(a.key.leaf))
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
        // root + 1 + 2 + {3, 4}
        assert_eq!(p.trie.len(), 5);
        let rows = p.ranked();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].stats.count, 2);
        assert_eq!(rows[0].stats.goids.len(), 2);
        assert_eq!(p.trie.frames(rows[0].key.leaf), [3, 2, 1]);
        assert_eq!(
            p.by_state(),
            [(GoroutineState::Running, 3), (GoroutineState::Syscall, 1)]
        );
        assert_eq!(p.trie.unique_addresses(), [1, 2, 3, 4]);
    }

    #[test]
    fn deep_recursion_interned_once() {
        let mut p = Profile::default();
        let deep: Vec<u64> = (0..10_000).map(|i| 100 + (i % 2)).collect();
        for cut in 0..50 {
            p.add(&sample(&deep[cut..], 1, GoroutineState::Running));
        }
        // The 50 stacks share their root side: 10,000 nodes, not 500,000.
        assert_eq!(p.trie.len(), 10_001);
        assert_eq!(p.counts.kept, 50);
    }

    #[test]
    fn remembered_paths_give_the_same_nodes_as_a_fresh_walk() {
        let mut t = StackTrie::default();
        let stacks: [&[u64]; 6] = [
            &[5, 4, 3, 2, 1],
            &[6, 4, 3, 2, 1],
            &[2, 1],
            &[7, 8, 3, 2, 1],
            &[],
            &[5, 4, 3, 2, 1],
        ];
        let mut leaves = vec![];
        for (i, s) in stacks.iter().enumerate() {
            // Two threads interleaved, and a third that never repeats.
            leaves.push(t.insert_for((i % 2) as u32, s));
            t.insert_for(99, &[42, 1]);
        }
        for (s, leaf) in stacks.iter().zip(&leaves) {
            assert_eq!(t.frames(*leaf), *s);
            // A walk from the root without any remembered path finds the same node.
            assert_eq!(t.insert(s), *leaf);
        }
        assert_eq!(leaves[0], leaves[5]);
        assert_eq!(leaves[4], ROOT);
        // root, 1, 2, 3, 4, 5, 6, 8, 7, 42: nothing interned twice.
        assert_eq!(t.len(), 10);
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
        let switched_row = rows.iter().find(|r| p.trie.depth(r.key.leaf) == 6).unwrap();
        assert_eq!(
            p.trie.frames(switched_row.key.leaf),
            [9, 8, SWITCH_MARKER, 3, 2, 1]
        );
        assert_eq!(p.label_set(switched_row.key.labels), []);
        assert!(!p.trie.unique_addresses().contains(&SWITCH_MARKER));
    }
}
