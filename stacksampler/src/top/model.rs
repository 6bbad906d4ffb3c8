//! What the live view shows, computed apart from drawing: functions ranked by own and total
//! share of samples (last interval and since start), goroutine states, lost samples, the
//! goroutine count and its rate, the deepest stacks and the diagnosis.
//!
//! The model reads the record run's [`Profile`] (the one `-o` writes) at each refresh: the last
//! interval is the difference of each row's ([`StackKey`]) count since the previous refresh.
//! [`TopModel::refresh`] symbolizes the addresses of stacks seen for the first time in one
//! batch, works out each new stack's functions once (names are never recomputed), and freezes
//! the view's tables until the next refresh, so a paused display stays consistent.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use crate::{
    aggregate::{Profile, StackId, StackKey},
    diagnose::{self, DiagnoseOptions, Finding},
    goruntime::state::GoroutineState,
    markers::is_marker,
    symbolize::{FrameKind, Symbolize, Symbols},
};

/// Goroutine counts kept for the rate of change.
const GOROUTINE_HISTORY: usize = 8;
/// Deepest stacks kept per refresh.
const DEEPEST_KEPT: usize = 32;

/// A column of the function table; keys `1`-`4` sort by them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortColumn {
    /// Share of the last interval's samples with the function innermost.
    #[default]
    OwnShare,
    /// Share of the last interval's samples with the function anywhere on the stack.
    TotalShare,
    /// Samples since start with the function innermost (shown as CPU seconds).
    OwnTime,
    /// Samples since start with the function anywhere on the stack.
    TotalTime,
}

impl SortColumn {
    pub const ALL: [SortColumn; 4] = [
        Self::OwnShare,
        Self::TotalShare,
        Self::OwnTime,
        Self::TotalTime,
    ];

    /// The column's heading, as py-spy names it.
    pub fn heading(self) -> &'static str {
        match self {
            Self::OwnShare => "%Own",
            Self::TotalShare => "%Total",
            Self::OwnTime => "OwnTime",
            Self::TotalTime => "TotalTime",
        }
    }
}

/// Which goroutine states the display shows (key `s` cycles through them); the session's own
/// `--state` filter has already decided what was kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateView(pub Option<GoroutineState>);

impl StateView {
    /// Display filters in the order `s` cycles through them.
    pub const CYCLE: [Option<GoroutineState>; 5] = [
        None,
        Some(GoroutineState::Running),
        Some(GoroutineState::Syscall),
        Some(GoroutineState::Waiting),
        Some(GoroutineState::Runnable),
    ];

    pub fn next(self) -> Self {
        let at = Self::CYCLE.iter().position(|s| *s == self.0).unwrap_or(0);
        Self(Self::CYCLE[(at + 1) % Self::CYCLE.len()])
    }

    pub fn shows(self, state: GoroutineState) -> bool {
        self.0.is_none_or(|s| s == state)
    }

    pub fn name(self) -> &'static str {
        self.0.map_or("all", GoroutineState::name)
    }
}

/// One line of the function table, in samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRow {
    pub function: Arc<str>,
    /// Last interval: samples with the function innermost / anywhere on the stack.
    pub own_interval: u64,
    pub total_interval: u64,
    /// Since start.
    pub own_all: u64,
    pub total_all: u64,
}

/// One of the deepest stacks seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeepStack {
    /// Frames (exact, gaps included); a lower bound when `truncated`.
    pub depth: u64,
    pub truncated: bool,
    pub state: GoroutineState,
    /// Goroutines seen with this stack (smallest ids first).
    pub goids: Vec<u64>,
    /// The innermost function.
    pub leaf: Arc<str>,
    /// The outermost function of the program's own code (not the runtime), when any.
    pub entry: Option<Arc<str>>,
    pub samples: u64,
}

/// Samples per goroutine state.
pub type StateCounts = Vec<(GoroutineState, u64)>;

/// The goroutine count now and how fast it changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoroutineCount {
    pub live: u64,
    /// Goroutines per second over the kept history; `None` until two counts are known.
    pub per_sec: Option<f64>,
}

/// Facts the view takes from the session at a refresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefreshFacts {
    /// Time since sampling started.
    pub elapsed: Duration,
    /// Samples lost so far (ring buffer full, undecodable).
    pub lost: u64,
    /// Live goroutines, when they could be counted.
    pub goroutines: Option<u64>,
    /// The target's stack limit, when readable.
    pub max_stack_bytes: Option<u64>,
}

/// Functions of one stack, worked out once per stack.
#[derive(Clone, Debug)]
struct StackFunctions {
    own: FunctionId,
    /// Every function on the stack, once.
    all: Vec<FunctionId>,
    leaf: Arc<str>,
    entry: Option<Arc<str>>,
}

type FunctionId = u32;

/// Sample totals of one interval or of the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Samples received.
    pub received: u64,
    /// Samples kept by the session's filters.
    pub kept: u64,
    /// Samples lost.
    pub lost: u64,
}

/// The live view's model.
#[derive(Debug, Default)]
pub struct TopModel {
    /// Every address named so far.
    pub symbols: Symbols,
    /// Samples received at the last refresh.
    previous_received: u64,
    /// Frozen at the last refresh (`all`: each row's count then).
    interval: HashMap<StackKey, u64>,
    all: HashMap<StackKey, u64>,
    interval_totals: Totals,
    all_totals: Totals,
    interval_secs: f64,
    elapsed: Duration,
    findings: Vec<Finding>,
    deepest: Vec<DeepStack>,
    goroutines: Vec<(Duration, u64)>,
    /// Stack functions by stack id.
    stacks: HashMap<StackId, StackFunctions>,
    function_ids: HashMap<Arc<str>, FunctionId>,
    functions: Vec<Arc<str>>,
    refreshes: u64,
    last_lost: u64,
}

impl TopModel {
    /// Closes the interval since the last refresh of `profile`: names new stacks, diagnoses,
    /// and freezes what the view shows until the next refresh.
    pub fn refresh(
        &mut self,
        profile: &Profile,
        symbolizer: &mut (impl Symbolize + ?Sized),
        facts: RefreshFacts,
    ) {
        self.name_new_stacks(profile, symbolizer);
        let all: HashMap<StackKey, u64> =
            profile.stacks.iter().map(|(k, s)| (*k, s.count)).collect();
        self.interval = all
            .iter()
            .filter_map(|(k, &n)| {
                let new = n.saturating_sub(self.all.get(k).copied().unwrap_or(0));
                (new > 0).then_some((*k, new))
            })
            .collect();
        self.all = all;
        self.interval_totals = Totals {
            received: profile.counts.total.saturating_sub(self.previous_received),
            kept: self.interval.values().sum(),
            lost: facts.lost.saturating_sub(self.last_lost),
        };
        self.previous_received = profile.counts.total;
        self.last_lost = facts.lost;
        self.all_totals = Totals {
            received: profile.counts.total,
            kept: profile.counts.kept,
            lost: facts.lost,
        };
        self.interval_secs = facts.elapsed.saturating_sub(self.elapsed).as_secs_f64();
        self.elapsed = facts.elapsed;
        if let Some(n) = facts.goroutines {
            self.goroutines.push((facts.elapsed, n));
            if self.goroutines.len() > GOROUTINE_HISTORY {
                self.goroutines.remove(0);
            }
        }
        let options = DiagnoseOptions {
            max_stack_bytes: facts.max_stack_bytes,
            ..Default::default()
        };
        self.findings = diagnose::diagnose(profile, &self.symbols, &options);
        self.deepest = self.find_deepest(profile);
        self.refreshes += 1;
    }

    /// Symbolizes, in one batch, the addresses of stacks not seen before, and works out each
    /// new stack's functions.
    fn name_new_stacks(&mut self, profile: &Profile, symbolizer: &mut (impl Symbolize + ?Sized)) {
        let new_leaves: Vec<StackId> = profile
            .stacks
            .keys()
            .map(|k| k.stack)
            .filter(|leaf| !self.stacks.contains_key(leaf))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if new_leaves.is_empty() {
            return;
        }
        let stacks: Vec<(StackId, Vec<u64>)> = new_leaves
            .into_iter()
            .map(|leaf| (leaf, profile.table.frames(leaf)))
            .collect();
        let mut unnamed: Vec<u64> = stacks
            .iter()
            .flat_map(|(_, frames)| frames.iter().copied())
            .filter(|a| !is_marker(*a) && !self.symbols.by_addr.contains_key(a))
            .collect();
        unnamed.sort_unstable();
        unnamed.dedup();
        if !unnamed.is_empty() {
            let named = symbolizer.symbolize(&unnamed);
            self.symbols.by_addr.extend(named.by_addr);
        }
        for (leaf, frames) in stacks {
            let functions = self.stack_functions(&frames);
            self.stacks.insert(leaf, functions);
        }
    }

    fn intern(&mut self, name: &Arc<str>) -> FunctionId {
        if let Some(id) = self.function_ids.get(name) {
            return *id;
        }
        let id = self.functions.len() as FunctionId;
        self.functions.push(name.clone());
        self.function_ids.insert(name.clone(), id);
        id
    }

    /// `frames`: addresses innermost first, as the stack table gives them.
    fn stack_functions(&mut self, frames: &[u64]) -> StackFunctions {
        let mut names: Vec<(Arc<str>, FrameKind)> = Vec::new();
        for &addr in frames.iter().filter(|a| !is_marker(**a)) {
            for frame in self.symbols.frames(addr).iter() {
                names.push((frame.function.clone(), frame.kind));
            }
        }
        let leaf: Arc<str> = names
            .first()
            .map_or_else(|| Arc::from("[no frames]"), |(n, _)| n.clone());
        let entry = names
            .iter()
            .rev()
            .find(|(_, kind)| *kind == FrameKind::Go)
            .map(|(n, _)| n.clone());
        let own = self.intern(&leaf);
        let mut seen = HashSet::new();
        let mut all = Vec::new();
        for (name, _) in &names {
            let id = self.intern(name);
            if seen.insert(id) {
                all.push(id);
            }
        }
        if all.is_empty() {
            all.push(own);
        }
        StackFunctions {
            own,
            all,
            leaf,
            entry,
        }
    }

    /// The deepest stacks, one line per (depth, state, innermost and entry function): rows
    /// that differ only in their addresses read the same on screen.
    fn find_deepest(&self, profile: &Profile) -> Vec<DeepStack> {
        type Line = (u64, GoroutineState, Arc<str>, Option<Arc<str>>);
        let mut lines: HashMap<Line, DeepStack> = HashMap::new();
        for (key, stats) in &profile.stacks {
            let Some(f) = self.stacks.get(&key.stack) else {
                continue;
            };
            let depth = stats.depth.1;
            let line = (depth, key.state, f.leaf.clone(), f.entry.clone());
            let d = lines.entry(line).or_insert_with(|| DeepStack {
                depth,
                truncated: false,
                state: key.state,
                goids: Vec::new(),
                leaf: f.leaf.clone(),
                entry: f.entry.clone(),
                samples: 0,
            });
            d.truncated |= stats.truncated;
            d.samples += stats.count;
            d.goids.extend(stats.goids.iter().copied());
        }
        let mut rows: Vec<DeepStack> = lines.into_values().collect();
        for d in &mut rows {
            d.goids.sort_unstable();
            d.goids.dedup();
        }
        rows.sort_by(|a, b| {
            b.depth
                .cmp(&a.depth)
                .then(b.samples.cmp(&a.samples))
                .then_with(|| a.leaf.cmp(&b.leaf))
        });
        rows.truncate(DEEPEST_KEPT);
        rows
    }

    /// The function table for `view`, sorted by `sort` (ties: by name).
    pub fn functions(&self, view: StateView, sort: SortColumn) -> Vec<FunctionRow> {
        let mut rows: HashMap<FunctionId, FunctionRow> = HashMap::new();
        let mut add = |counts: &HashMap<StackKey, u64>, interval: bool| {
            for (key, &n) in counts {
                if !view.shows(key.state) {
                    continue;
                }
                let Some(f) = self.stacks.get(&key.stack) else {
                    continue;
                };
                for &id in &f.all {
                    let row = rows.entry(id).or_insert_with(|| FunctionRow {
                        function: self.functions[id as usize].clone(),
                        own_interval: 0,
                        total_interval: 0,
                        own_all: 0,
                        total_all: 0,
                    });
                    let own = if id == f.own { n } else { 0 };
                    if interval {
                        row.own_interval += own;
                        row.total_interval += n;
                    } else {
                        row.own_all += own;
                        row.total_all += n;
                    }
                }
            }
        };
        add(&self.interval, true);
        add(&self.all, false);
        let mut rows: Vec<FunctionRow> = rows.into_values().collect();
        let value = |r: &FunctionRow| match sort {
            SortColumn::OwnShare => (r.own_interval, r.own_all),
            SortColumn::TotalShare => (r.total_interval, r.total_all),
            SortColumn::OwnTime => (r.own_all, r.own_interval),
            SortColumn::TotalTime => (r.total_all, r.total_interval),
        };
        rows.sort_by(|a, b| {
            value(b)
                .cmp(&value(a))
                .then_with(|| a.function.cmp(&b.function))
        });
        rows
    }

    /// Kept samples per state over the last interval, in report order.
    pub fn interval_states(&self) -> StateCounts {
        by_state(&self.interval)
    }

    /// Kept samples per state since start, in report order.
    pub fn all_states(&self) -> StateCounts {
        by_state(&self.all)
    }

    /// Kept samples of the last interval that `view` shows.
    pub fn interval_kept(&self, view: StateView) -> u64 {
        shown(&self.interval, view)
    }

    /// Kept samples since start that `view` shows.
    pub fn all_kept(&self, view: StateView) -> u64 {
        shown(&self.all, view)
    }

    pub fn interval_totals(&self) -> Totals {
        self.interval_totals
    }

    pub fn all_totals(&self) -> Totals {
        self.all_totals
    }

    /// Length of the last interval.
    pub fn interval_secs(&self) -> f64 {
        self.interval_secs
    }

    /// Sampling time at the last refresh.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Refreshes so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// Findings of the diagnosis at the last refresh, most severe first.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The deepest stacks `view` shows, deepest first.
    pub fn deepest(&self, view: StateView) -> impl Iterator<Item = &DeepStack> {
        self.deepest.iter().filter(move |d| view.shows(d.state))
    }

    /// The goroutine count of the last refresh and its rate over the kept history.
    pub fn goroutines(&self) -> Option<GoroutineCount> {
        let &(now, live) = self.goroutines.last()?;
        let per_sec = match self.goroutines.first() {
            Some(&(then, before)) if now > then => {
                Some((live as f64 - before as f64) / (now - then).as_secs_f64())
            }
            _ => None,
        };
        Some(GoroutineCount { live, per_sec })
    }
}

fn by_state(counts: &HashMap<StackKey, u64>) -> StateCounts {
    let mut by: HashMap<GoroutineState, u64> = HashMap::new();
    for (key, n) in counts {
        *by.entry(key.state).or_default() += n;
    }
    GoroutineState::ALL
        .into_iter()
        .filter_map(|s| by.get(&s).map(|n| (s, *n)))
        .collect()
}

fn shown(counts: &HashMap<StackKey, u64>, view: StateView) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| view.shows(k.state))
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests;
