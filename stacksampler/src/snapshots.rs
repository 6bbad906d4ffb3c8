//! What the wall-clock snapshots of a `record --wall` run say over time, beside the profile
//! (which sums them): per snapshot, how many goroutines each group had and whether every
//! goroutine was blocked. The diagnosis reads it for leaks (a group that keeps growing) and for
//! "every goroutine blocked".

use std::collections::HashMap;

use crate::{aggregate::FastMap, goruntime::state::GoroutineState, sample::Sample};

/// Innermost frames that make two goroutines' stacks "the same" for a group: the blocking
/// call and its callers near it (deeper parts may differ, as in a recursion).
pub const GROUP_FRAMES: usize = 16;

/// What makes goroutines one group across snapshots: where they block, how, and who created
/// them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub state: GoroutineState,
    /// Raw `g.waitreason` (waiting goroutines; 0 otherwise).
    pub waitreason: u8,
    /// The innermost [`GROUP_FRAMES`] frames of the stack, as the profile stores them.
    pub frames: Vec<u64>,
    /// The `go` statement that created them (its call-site address), when known.
    pub creator: Option<u64>,
}

/// How the goroutines of one snapshot were, all of them (before any filter).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStates {
    /// Monotonic time of the snapshot, nanoseconds.
    pub time_ns: u64,
    /// User goroutines (the runtime's own left out).
    pub goroutines: u32,
    /// Of them, waiting (a wait reason): not running, runnable or in a system call.
    pub blocked: u32,
    /// Blocked goroutines per raw wait reason, largest first.
    pub reasons: Vec<(u8, u32)>,
}

impl SnapshotStates {
    /// Every goroutine blocked, none runnable, running or in a system call.
    pub fn all_blocked(&self) -> bool {
        self.goroutines > 0 && self.blocked == self.goroutines
    }
}

/// The per-snapshot history of a run.
#[derive(Clone, Debug, Default)]
pub struct SnapshotHistory {
    /// One entry per snapshot, in time order.
    pub snapshots: Vec<SnapshotStates>,
    /// Per group, its kept goroutines in each snapshot (index as `snapshots`; missing
    /// trailing entries are 0).
    pub groups: FastMap<GroupKey, Vec<u32>>,
    /// Go's name of each raw wait reason seen (the target's release).
    pub reason_names: HashMap<u8, String>,
}

impl SnapshotHistory {
    /// Starts a snapshot (its goroutines follow through [`SnapshotHistory::add_kept`]).
    pub fn begin(&mut self, states: SnapshotStates) {
        self.snapshots.push(states);
    }

    /// Counts one kept wall sample in the current snapshot's group.
    pub fn add_kept(&mut self, sample: &Sample) {
        let Some(at) = self.snapshots.len().checked_sub(1) else {
            return;
        };
        let state = sample.state();
        let key = GroupKey {
            state,
            waitreason: sample
                .goroutine
                .filter(|_| state == GoroutineState::Waiting)
                .map_or(0, |g| g.waitreason),
            frames: sample.frames[..sample.frames.len().min(GROUP_FRAMES)].to_vec(),
            creator: sample.creator,
        };
        let series = self.groups.entry(key).or_default();
        if series.len() <= at {
            series.resize(at + 1, 0);
        }
        series[at] += 1;
    }

    /// Go's name of wait reason `raw`, `wait reason N` when unknown.
    pub fn reason_name(&self, raw: u8) -> String {
        self.reason_names
            .get(&raw)
            .cloned()
            .unwrap_or_else(|| format!("wait reason {raw}"))
    }

    /// The count of a group's `series` in snapshot `i`.
    pub fn count(series: &[u32], i: usize) -> u32 {
        series.get(i).copied().unwrap_or(0)
    }

    /// Addresses the diagnosis names beside the profile's (creation sites).
    pub fn addresses(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.groups.keys().filter_map(|k| k.creator).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SampleKind;

    fn waiting(frames: &[u64], goid: u64, creator: u64) -> Sample {
        Sample {
            kind: SampleKind::Wall,
            creator: Some(creator),
            ..Sample::of_goroutine(frames, goid, GoroutineState::Waiting)
        }
    }

    #[test]
    fn groups_count_per_snapshot() {
        let mut h = SnapshotHistory::default();
        h.add_kept(&waiting(&[1, 2], 1, 9)); // before any snapshot: ignored
        h.begin(SnapshotStates::default());
        h.add_kept(&waiting(&[1, 2], 1, 9));
        h.begin(SnapshotStates::default());
        h.add_kept(&waiting(&[1, 2], 1, 9));
        h.add_kept(&waiting(&[1, 2], 2, 9));
        h.add_kept(&waiting(&[1, 2], 3, 8));
        assert_eq!(h.groups.len(), 2);
        let key = h
            .groups
            .keys()
            .find(|k| k.creator == Some(9))
            .unwrap()
            .clone();
        assert_eq!(h.groups[&key], [1, 2]);
        let other = h.groups.keys().find(|k| k.creator == Some(8)).unwrap();
        assert_eq!(h.groups[other], [0, 1]);
        assert_eq!(h.addresses(), [8, 9]);
        let all = SnapshotStates {
            goroutines: 2,
            blocked: 2,
            ..Default::default()
        };
        assert!(all.all_blocked());
        assert!(!SnapshotStates::default().all_blocked());
    }
}
