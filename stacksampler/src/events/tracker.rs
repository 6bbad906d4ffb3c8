//! Folding runtime events into per-goroutine state: stack growth sequences, live goroutines and
//! their creation stacks, fatal errors, and `--stack-alert` crossings (once per goroutine).

use std::collections::HashMap;

use crate::bpf::runtime_event::{RuntimeEvent, RuntimeEventKind};

/// Growth histories kept for goroutines that already ended (the rest are dropped).
const MAX_FINISHED_HISTORIES: usize = 1024;

/// One stack growth of a goroutine.
#[derive(Clone, Debug)]
pub struct Growth {
    /// Kernel monotonic time.
    pub time_ns: u64,
    /// Stack size before and after, bytes.
    pub from: u64,
    pub to: u64,
    /// Frames on the stack when it grew (a lower bound when `truncated`).
    pub depth: u64,
    pub truncated: bool,
    /// The stack when it grew, innermost first (head + tail when `omitted > 0`).
    pub frames: Vec<u64>,
    pub omitted: u64,
}

/// What is known about one goroutine seen during the watch.
#[derive(Clone, Debug, Default)]
pub struct GoroutineTrack {
    /// Creation time, when created during the watch.
    pub created_ns: Option<u64>,
    /// Creating goroutine.
    pub parent: u64,
    /// The creator's stack at the `go` statement, innermost first.
    pub creation_stack: Vec<u64>,
    /// Its growths, in order.
    pub growths: Vec<Growth>,
    /// Current stack size in bytes, when a growth or shrink was seen.
    pub stack_bytes: u64,
    /// `--stack-alert` already fired for it.
    pub alerted: bool,
}

/// A `--stack-alert` crossing.
#[derive(Clone, Debug)]
pub struct StackAlert {
    pub goid: u64,
    pub time_ns: u64,
    /// New stack size.
    pub stack_bytes: u64,
    pub depth: u64,
    pub truncated: bool,
    pub frames: Vec<u64>,
    pub omitted: u64,
}

/// One point of the live goroutine count.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LivePoint {
    /// Seconds since the watch started.
    pub t_s: f64,
    /// Goroutines created minus ended since the watch started.
    pub net_change: i64,
    /// Live goroutines, when the count at attach is known.
    pub live: Option<i64>,
    /// Creations since the watch started.
    pub created: u64,
}

/// Event counts by kind.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct KindCounts {
    pub stack_growth: u64,
    pub stack_shrink: u64,
    pub goroutine_create: u64,
    pub goroutine_exit: u64,
    pub fatal: u64,
}

/// The state built from events.
#[derive(Debug, Default)]
pub struct Tracker {
    /// `--stack-alert` threshold in bytes.
    pub alert_bytes: Option<u64>,
    /// Monotonic time the watch started (ns).
    pub start_ns: u64,
    /// Goroutines alive at attach (from `runtime.allgs`), when known.
    pub at_attach: Option<u64>,
    /// Goroutines seen, by goid (ended ones are removed unless they grew).
    pub goroutines: HashMap<u64, GoroutineTrack>,
    /// Ended goroutines with a growth history.
    pub finished: Vec<(u64, GoroutineTrack)>,
    /// Creations seen without the new goroutine's id (fallback probe).
    pub anonymous_creations: Vec<Vec<u64>>,
    pub created: u64,
    pub exited: u64,
    /// Ends of goroutines created before the watch.
    pub exited_preexisting: u64,
    /// Fatal events in arrival order.
    pub fatal: Vec<RuntimeEvent>,
    pub counts: KindCounts,
    /// Biggest stack seen: (goid, bytes).
    pub biggest: Option<(u64, u64)>,
    /// Live count over time.
    pub timeline: Vec<LivePoint>,
    /// Events folded.
    pub events: u64,
}

impl Tracker {
    /// A tracker for a watch started at monotonic `start_ns`.
    pub fn new(start_ns: u64, alert_bytes: Option<u64>, at_attach: Option<u64>) -> Self {
        Self {
            alert_bytes,
            start_ns,
            at_attach,
            ..Default::default()
        }
    }

    /// Goroutines created minus ended since the watch started.
    pub fn net_change(&self) -> i64 {
        self.created as i64 - (self.exited + self.exited_preexisting) as i64
    }

    /// Live goroutines now, when the count at attach is known.
    pub fn live(&self) -> Option<i64> {
        self.at_attach.map(|n| n as i64 + self.net_change())
    }

    /// Appends a point of the live count at monotonic `now_ns`.
    pub fn tick(&mut self, now_ns: u64) {
        self.timeline.push(LivePoint {
            t_s: now_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            net_change: self.net_change(),
            live: self.live(),
            created: self.created,
        });
    }

    /// Folds one event; returns the alert it raised, if any.
    pub fn add(&mut self, e: RuntimeEvent) -> Option<StackAlert> {
        self.events += 1;
        match e.kind {
            RuntimeEventKind::StackGrowth => return self.growth(e),
            RuntimeEventKind::StackShrink => {
                self.counts.stack_shrink += 1;
                if let Some(g) = self.goroutines.get_mut(&e.goid) {
                    g.stack_bytes = e.new_size;
                }
            }
            RuntimeEventKind::GoroutineCreate => {
                self.counts.goroutine_create += 1;
                self.created += 1;
                if e.goid == 0 {
                    self.anonymous_creations.push(e.frames);
                } else {
                    let g = self.goroutines.entry(e.goid).or_default();
                    g.created_ns = Some(e.time_ns);
                    g.parent = e.parent_goid;
                    g.creation_stack = e.frames;
                }
            }
            RuntimeEventKind::GoroutineExit => {
                self.counts.goroutine_exit += 1;
                match self.goroutines.remove(&e.goid) {
                    Some(g) if g.created_ns.is_some() => {
                        self.exited += 1;
                        self.keep_history(e.goid, g);
                    }
                    Some(g) => {
                        self.exited_preexisting += 1;
                        self.keep_history(e.goid, g);
                    }
                    None if !self.anonymous_creations.is_empty() => {
                        // Creations were not identified: attribute the end to the oldest.
                        self.anonymous_creations.remove(0);
                        self.exited += 1;
                    }
                    None => self.exited_preexisting += 1,
                }
            }
            RuntimeEventKind::Fatal => {
                self.counts.fatal += 1;
                self.fatal.push(e);
            }
        }
        None
    }

    /// Counts one event by kind and keeps nothing else of it (a run that needs only the counts,
    /// for any length of time); a fatal error is folded as [`Tracker::add`] folds it.
    pub fn count(&mut self, e: RuntimeEvent) {
        let c = &mut self.counts;
        match e.kind {
            RuntimeEventKind::StackGrowth => c.stack_growth += 1,
            RuntimeEventKind::StackShrink => c.stack_shrink += 1,
            RuntimeEventKind::GoroutineCreate => {
                c.goroutine_create += 1;
                self.created += 1;
            }
            RuntimeEventKind::GoroutineExit => {
                c.goroutine_exit += 1;
                self.exited += 1;
            }
            RuntimeEventKind::Fatal => {
                self.add(e);
                return;
            }
        }
        self.events += 1;
    }

    fn keep_history(&mut self, goid: u64, g: GoroutineTrack) {
        if !g.growths.is_empty() && self.finished.len() < MAX_FINISHED_HISTORIES {
            self.finished.push((goid, g));
        }
    }

    fn growth(&mut self, e: RuntimeEvent) -> Option<StackAlert> {
        self.counts.stack_growth += 1;
        if self.biggest.is_none_or(|(_, b)| e.new_size > b) {
            self.biggest = Some((e.goid, e.new_size));
        }
        let alert_bytes = self.alert_bytes;
        let g = self.goroutines.entry(e.goid).or_default();
        g.stack_bytes = e.new_size;
        let fire = alert_bytes.is_some_and(|limit| e.new_size >= limit) && !g.alerted;
        let alert = fire.then(|| {
            g.alerted = true;
            StackAlert {
                goid: e.goid,
                time_ns: e.time_ns,
                stack_bytes: e.new_size,
                depth: e.depth,
                truncated: e.truncated,
                frames: e.frames.clone(),
                omitted: e.omitted,
            }
        });
        g.growths.push(Growth {
            time_ns: e.time_ns,
            from: e.old_size,
            to: e.new_size,
            depth: e.depth,
            truncated: e.truncated,
            frames: e.frames,
            omitted: e.omitted,
        });
        alert
    }

    /// Goroutines created during the watch and still alive: (goid, track).
    pub fn live_created(&self) -> impl Iterator<Item = (u64, &GoroutineTrack)> {
        self.goroutines
            .iter()
            .filter(|(_, g)| g.created_ns.is_some())
            .map(|(id, g)| (*id, g))
    }

    /// Every goroutine with a growth history, alive or ended.
    pub fn histories(&self) -> Vec<(u64, &GoroutineTrack)> {
        let mut out: Vec<(u64, &GoroutineTrack)> = self
            .goroutines
            .iter()
            .filter(|(_, g)| !g.growths.is_empty())
            .map(|(id, g)| (*id, g))
            .chain(self.finished.iter().map(|(id, g)| (*id, g)))
            .collect();
        out.sort_by_key(|(id, g)| (std::cmp::Reverse(g.growths.last().map_or(0, |x| x.to)), *id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: RuntimeEventKind, goid: u64) -> RuntimeEvent {
        RuntimeEvent {
            time_ns: 0,
            kind,
            goid,
            g_addr: 0,
            parent_goid: 1,
            tid: 0,
            new_size: 0,
            old_size: 0,
            caller_pc: 0,
            message: None,
            message_len: 0,
            depth: 3,
            truncated: false,
            system_stack: false,
            frames: vec![1, 2, 3],
            omitted: 0,
        }
    }

    fn grow(goid: u64, from: u64, to: u64) -> RuntimeEvent {
        RuntimeEvent {
            new_size: to,
            old_size: from,
            ..event(RuntimeEventKind::StackGrowth, goid)
        }
    }

    #[test]
    fn alert_fires_once_per_goroutine_at_the_threshold() {
        let mut t = Tracker::new(0, Some(1 << 20), None);
        assert!(t.add(grow(7, 256 << 10, 512 << 10)).is_none());
        let a = t.add(grow(7, 512 << 10, 1 << 20)).expect("alert at 1 MiB");
        assert_eq!((a.goid, a.stack_bytes), (7, 1 << 20));
        assert!(t.add(grow(7, 1 << 20, 2 << 20)).is_none());
        assert!(t.add(grow(8, 1 << 20, 2 << 20)).is_some());
        assert_eq!(t.biggest, Some((7, 2 << 20)));
        let sizes: Vec<u64> = t.goroutines[&7].growths.iter().map(|g| g.to).collect();
        assert_eq!(sizes, [512 << 10, 1 << 20, 2 << 20]);
    }

    #[test]
    fn counting_keeps_the_counts_and_nothing_per_goroutine() {
        let mut t = Tracker::new(0, None, None);
        for id in 10..15 {
            t.count(event(RuntimeEventKind::GoroutineCreate, id));
            t.count(grow(id, 2 << 10, 4 << 10));
            t.count(grow(id, 4 << 10, 8 << 10));
        }
        t.count(event(RuntimeEventKind::GoroutineExit, 11));
        let c = t.counts;
        assert_eq!(
            (c.goroutine_create, c.stack_growth, c.goroutine_exit),
            (5, 10, 1)
        );
        assert!(t.goroutines.is_empty() && t.finished.is_empty());
        t.count(event(RuntimeEventKind::Fatal, 12));
        assert_eq!(
            (t.counts.fatal, t.fatal.len()),
            (1, 1),
            "a fatal error is kept"
        );
    }

    #[test]
    fn live_count_and_preexisting_exits() {
        let mut t = Tracker::new(0, None, Some(4));
        for id in 10..15 {
            t.add(event(RuntimeEventKind::GoroutineCreate, id));
        }
        t.add(event(RuntimeEventKind::GoroutineExit, 11));
        t.add(event(RuntimeEventKind::GoroutineExit, 2));
        assert_eq!((t.created, t.exited, t.exited_preexisting), (5, 1, 1));
        assert_eq!(t.live(), Some(4 + 5 - 2));
        assert_eq!(t.live_created().count(), 4);
    }
}
