use std::collections::HashMap;

use super::*;
use crate::report::findings::summary;
use crate::{sample::Sample, symbolize::Frame};

/// Names addresses from a table (`0x100 * n` is function `fn{n}`, addresses >= 0x1000 are
/// runtime code) and records every batch it was asked for.
#[derive(Default)]
struct FakeSymbolizer {
    batches: Vec<Vec<u64>>,
}

impl Symbolize for FakeSymbolizer {
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols {
        self.batches.push(addrs.to_vec());
        let by_addr = addrs
            .iter()
            .map(|&a| {
                let kind = if a >= 0x1000 {
                    FrameKind::GoRuntime
                } else {
                    FrameKind::Go
                };
                let frame = Frame {
                    function: name(a).into(),
                    file: None,
                    line: None,
                    inlined: false,
                    module: None,
                    kind,
                };
                (a, vec![frame])
            })
            .collect::<HashMap<_, _>>();
        Symbols {
            by_addr,
            ..Symbols::default()
        }
    }
}

fn name(addr: u64) -> String {
    format!("fn{}", addr / 0x100)
}

/// What the record run does with a received sample.
fn add(p: &mut Profile, s: &Sample, keep: bool) {
    p.counts.total += 1;
    if keep {
        p.add(s);
    }
}

fn sample(frames: &[u64], goid: u64, state: GoroutineState) -> Sample {
    Sample::of_goroutine(frames, goid, state)
}

fn facts(secs: u64) -> RefreshFacts {
    RefreshFacts {
        elapsed: Duration::from_secs(secs),
        ..Default::default()
    }
}

fn row<'a>(rows: &'a [FunctionRow], function: &str) -> &'a FunctionRow {
    rows.iter()
        .find(|r| &*r.function == function)
        .unwrap_or_else(|| panic!("no row for {function} in {rows:?}"))
}

const HOT: [u64; 3] = [0x300, 0x200, 0x1100];
const SYSCALL: [u64; 3] = [0x400, 0x200, 0x1100];

#[test]
fn ranks_own_and_total_over_the_interval_and_since_start() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    for _ in 0..3 {
        add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    }
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    m.refresh(&p, &mut sym, facts(1));

    let rows = m.functions(StateView::default(), SortColumn::OwnShare);
    assert_eq!(&*rows[0].function, "fn3");
    assert_eq!((rows[0].own_interval, rows[0].total_interval), (3, 3));
    let shared = row(&rows, "fn2");
    assert_eq!((shared.own_interval, shared.total_interval), (0, 4));
    assert_eq!(m.interval_kept(StateView::default()), 4);

    // Second interval: only the syscall stack.
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    m.refresh(&p, &mut sym, facts(2));
    let rows = m.functions(StateView::default(), SortColumn::OwnShare);
    assert_eq!(&*rows[0].function, "fn4");
    let hot = row(&rows, "fn3");
    assert_eq!((hot.own_interval, hot.own_all, hot.total_all), (0, 3, 3));
    let syscall = row(&rows, "fn4");
    assert_eq!((syscall.own_interval, syscall.own_all), (1, 2));
    // Since start fn3 still leads by own time.
    let rows = m.functions(StateView::default(), SortColumn::OwnTime);
    assert_eq!(&*rows[0].function, "fn3");
    let rows = m.functions(StateView::default(), SortColumn::TotalTime);
    assert_eq!(&*rows[0].function, "fn17");
    assert_eq!(rows[0].total_all, 5);
}

#[test]
fn names_each_address_once_in_one_batch_per_refresh() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    m.refresh(&p, &mut sym, facts(1));
    assert_eq!(sym.batches, [vec![0x200, 0x300, 0x1100]]);
    // Known stack: nothing to name.
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    m.refresh(&p, &mut sym, facts(2));
    assert_eq!(sym.batches.len(), 1);
    // A new stack sharing two addresses: only its new one.
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    m.refresh(&p, &mut sym, facts(3));
    assert_eq!(sym.batches.len(), 2);
    assert_eq!(sym.batches[1], [0x400]);
    assert_eq!(m.symbols.by_addr.len(), 4);
}

#[test]
fn state_view_filters_the_table_and_cycles() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    m.refresh(&p, &mut sym, facts(1));
    assert_eq!(
        m.interval_states(),
        [(GoroutineState::Running, 1), (GoroutineState::Syscall, 2)]
    );
    let syscall = StateView(Some(GoroutineState::Syscall));
    let rows = m.functions(syscall, SortColumn::OwnShare);
    assert!(rows.iter().all(|r| &*r.function != "fn3"), "{rows:?}");
    assert_eq!(m.interval_kept(syscall), 2);

    let mut v = StateView::default();
    let mut seen = vec![v.name()];
    for _ in 0..StateView::CYCLE.len() {
        v = v.next();
        seen.push(v.name());
    }
    assert_eq!(
        seen,
        ["all", "running", "syscall", "waiting", "runnable", "all"]
    );
}

#[test]
fn samples_filtered_out_count_as_received_not_kept() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), false);
    add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    m.refresh(
        &p,
        &mut sym,
        RefreshFacts {
            elapsed: Duration::from_secs(1),
            lost: 5,
            ..Default::default()
        },
    );
    let t = m.interval_totals();
    assert_eq!((t.received, t.kept, t.lost), (2, 1, 5));
    m.refresh(
        &p,
        &mut sym,
        RefreshFacts {
            elapsed: Duration::from_secs(2),
            lost: 7,
            ..Default::default()
        },
    );
    assert_eq!(m.interval_totals().lost, 2);
    assert_eq!(m.all_totals().lost, 7);
    assert_eq!(p.counts.total, 2);
    assert_eq!(p.counts.kept, 1);
}

#[test]
fn the_view_is_frozen_between_refreshes() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    m.refresh(&p, &mut sym, facts(1));
    let before = m.functions(StateView::default(), SortColumn::OwnTime);
    for _ in 0..10 {
        add(&mut p, &sample(&SYSCALL, 2, GoroutineState::Syscall), true);
    }
    assert_eq!(
        m.functions(StateView::default(), SortColumn::OwnTime),
        before
    );
    // The session profile has everything, for -o.
    assert_eq!(p.counts.kept, 11);
}

#[test]
fn goroutine_rate_over_the_history() {
    let mut m = TopModel::default();
    let p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    assert!(m.goroutines().is_none());
    for (secs, n) in [(1, 10), (2, 30), (3, 50)] {
        m.refresh(
            &p,
            &mut sym,
            RefreshFacts {
                elapsed: Duration::from_secs(secs),
                goroutines: Some(n),
                ..Default::default()
            },
        );
    }
    let g = m.goroutines().unwrap();
    assert_eq!(g.live, 50);
    assert_eq!(g.per_sec, Some(20.0));
    for secs in 4..20 {
        m.refresh(
            &p,
            &mut sym,
            RefreshFacts {
                elapsed: Duration::from_secs(secs),
                goroutines: Some(50),
                ..Default::default()
            },
        );
    }
    assert_eq!(m.goroutines().unwrap().per_sec, Some(0.0));
}

#[test]
fn deepest_stacks_and_runaway_recursion() {
    let mut m = TopModel::default();
    let mut p = Profile::default();
    let mut sym = FakeSymbolizer::default();
    // fn5 -> fn6 recursion, 200 times, entered from fn7, under the runtime's goexit.
    let mut deep: Vec<u64> = vec![0x800];
    for _ in 0..200 {
        deep.extend([0x500, 0x600]);
    }
    deep.extend([0x700, 0x1100]);
    add(&mut p, &sample(&deep, 3, GoroutineState::Running), true);
    // Another pc in the same innermost function: the same line on screen.
    let mut other_pc = deep.clone();
    other_pc[0] = 0x810;
    add(&mut p, &sample(&other_pc, 4, GoroutineState::Running), true);
    add(&mut p, &sample(&HOT, 1, GoroutineState::Running), true);
    m.refresh(&p, &mut sym, facts(1));
    let d: Vec<_> = m.deepest(StateView::default()).collect();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].depth, deep.len() as u64);
    assert_eq!((&*d[0].leaf, d[0].entry.as_deref()), ("fn8", Some("fn7")));
    assert_eq!((d[0].goids.as_slice(), d[0].samples), (&[3, 4][..], 2));
    assert_eq!(d[1].depth, 3);
    assert_eq!(
        m.deepest(StateView(Some(GoroutineState::Syscall))).count(),
        0
    );
    let runaway: Vec<_> = m
        .findings()
        .iter()
        .filter(|f| f.kind() == diagnose::RUNAWAY_RECURSION)
        .collect();
    assert_eq!(runaway.len(), 1, "{:?}", m.findings());
    assert!(
        summary(runaway[0]).contains("fn5"),
        "{}",
        summary(runaway[0])
    );
}
