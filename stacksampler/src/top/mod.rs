//! `top`: a live view of a running Go program. It is a `record` run ([`record::run`]: the same
//! attach, sample completion, exec handling and report) observed live: at each of the run's
//! ticks ([`Observer::live`]) the view reads the keys, and every [`TopOptions::refresh`]
//! [`model`] works out what is shown from the run's profile (ranked functions, goroutine
//! states, deepest stacks, findings); [`view`] draws it with ratatui. The caller (the binary)
//! owns the terminal: it hands [`run`] the keys it reads and a function that draws.

pub mod model;
pub mod view;

use std::{path::PathBuf, time::Duration};

use stacksampler_common::GoLayout;
use std::task::{Context, Waker};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc::{UnboundedReceiver, error::TryRecvError},
};

use crate::{
    goruntime::{self, GoBinary},
    record::{self, Finished, RecordOptions, RunError, filter::Filter},
    report::EndReason,
    session::{LiveTick, Notice, Observer},
    watch::count_live_goroutines,
};
use model::{RefreshFacts, SortColumn, StateView, TopModel};

/// How often the view is refreshed by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// What a `top` session does.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// The record run behind the view (no duration: it runs until a key, a signal or the
    /// target's exit ends it). Its filter decides what is kept; the display filter (`s`)
    /// comes on top.
    pub record: RecordOptions,
    /// Time between refreshes of the view.
    pub refresh: Duration,
}

/// Errors that end `top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("drawing the view: {0}")]
    Draw(std::io::Error),
}

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `q`, Ctrl-C.
    Quit,
    /// `p`: freeze the display (sampling goes on).
    Pause,
    /// `s`: the next display state filter.
    CycleState,
    /// `1`-`4`.
    Sort(SortColumn),
    /// `?`: show or hide the help.
    Help,
    /// The terminal changed size.
    Redraw,
}

impl Key {
    /// The key a typed character means, if any.
    pub fn from_char(c: char) -> Option<Self> {
        Some(match c {
            'q' | 'Q' => Self::Quit,
            'p' | 'P' | ' ' => Self::Pause,
            's' | 'S' => Self::CycleState,
            '?' | 'h' => Self::Help,
            '1'..='4' => {
                let index = c as usize - '1' as usize;
                Self::Sort(SortColumn::ALL[index])
            }
            _ => return None,
        })
    }
}

/// The view's own state: what the keys changed, and facts about the session for the header.
#[derive(Clone, Debug)]
pub struct UiState {
    pub sort: SortColumn,
    pub states: StateView,
    pub paused: bool,
    pub help: bool,
    pub pid: u32,
    pub binary: PathBuf,
    pub go_version: Option<String>,
    pub frequency_hz: u64,
    /// The session's `--state` and other filters, described, when any.
    pub filter: Option<String>,
    /// Warnings of the session, shown once at the bottom.
    pub warnings: Vec<String>,
    /// Why live goroutines are not counted, when they are not.
    pub goroutines_note: Option<&'static str>,
}

impl UiState {
    fn new(opts: &TopOptions, binary: PathBuf, go_version: Option<String>) -> Self {
        Self {
            sort: SortColumn::default(),
            states: StateView::default(),
            paused: false,
            help: false,
            pid: opts.record.pid,
            binary,
            go_version,
            frequency_hz: opts.record.frequency_hz,
            filter: describe_filter(&opts.record.filter),
            warnings: Vec::new(),
            goroutines_note: None,
        }
    }

    /// Applies a key; `false` for [`Key::Quit`].
    pub fn apply(&mut self, key: Key) -> bool {
        match key {
            Key::Quit => return false,
            Key::Pause => self.paused = !self.paused,
            Key::CycleState => self.states = self.states.next(),
            Key::Sort(column) => self.sort = column,
            Key::Help => self.help = !self.help,
            Key::Redraw => {}
        }
        true
    }
}

fn describe_filter(f: &Filter) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(states) = &f.states {
        let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        parts.push(format!("--state {}", names.join(",")));
    }
    if let Some(goid) = f.goid {
        parts.push(format!("--goid {goid}"));
    }
    for l in &f.labels {
        parts.push(format!("--label {}={}", l.key, l.value));
    }
    if f.min_depth > 0 {
        parts.push(format!("--min-depth {}", f.min_depth));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Ctrl-C and SIGTERM, listened for before the terminal changes: one arriving while the run
/// still loads (before its own stop conditions listen) must not kill the process with the
/// terminal raw. Read at each tick of the run.
pub struct StopSignals {
    sigint: Signal,
    sigterm: Signal,
}

impl StopSignals {
    /// Starts listening. Needs a tokio runtime with signals enabled.
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
        })
    }

    /// Whether either signal arrived since the last call (never waits).
    fn received(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let int = self.sigint.poll_recv(&mut cx).is_ready();
        let term = self.sigterm.poll_recv(&mut cx).is_ready();
        int || term
    }
}

/// How a `top` session ended.
pub struct TopEnd {
    /// The whole session's report, as `record` would make it.
    pub finished: Finished,
}

/// Samples `opts.record.pid` and keeps the view current until a key quits, a signal or the
/// target's exit; everything is detached when it returns. `draw` is called after each refresh
/// and after each key (not while paused, except for keys).
pub async fn run<D>(
    opts: &TopOptions,
    signals: StopSignals,
    keys: UnboundedReceiver<Key>,
    draw: D,
) -> Result<TopEnd, TopError>
where
    D: FnMut(&TopModel, &UiState) -> std::io::Result<()>,
{
    let mut view = TopView::new(opts, keys, draw);
    view.signals = Some(signals);
    // The frame (header, empty table) at once, while the run loads and attaches.
    if view.draw().is_some() {
        return Err(TopError::Draw(view.draw_error.take().unwrap_or_else(
            || std::io::Error::other("the terminal cannot be drawn on"),
        )));
    }
    let finished = record::run(&opts.record, &mut view).await?;
    if let Some(e) = view.draw_error {
        return Err(TopError::Draw(e));
    }
    Ok(TopEnd { finished })
}

/// The live view as an [`Observer`] of the record run.
struct TopView<D> {
    model: TopModel,
    ui: UiState,
    keys: UnboundedReceiver<Key>,
    draw: D,
    refresh: Duration,
    /// Run time of the last refresh.
    refreshed_at: Option<Duration>,
    goroutines: GoroutineCounter,
    draw_error: Option<std::io::Error>,
    signals: Option<StopSignals>,
}

impl<D> TopView<D>
where
    D: FnMut(&TopModel, &UiState) -> std::io::Result<()>,
{
    fn new(opts: &TopOptions, keys: UnboundedReceiver<Key>, draw: D) -> Self {
        let pid = opts.record.pid;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let binary = goruntime::inspect(std::path::Path::new(&format!("/proc/{pid}/exe"))).ok();
        let go_version = binary
            .as_ref()
            .and_then(|b| b.version.as_ref())
            .map(|v| v.to_string());
        let goroutines = GoroutineCounter::new(pid, exe.clone(), binary);
        let mut ui = UiState::new(opts, exe, go_version);
        ui.goroutines_note = goroutines.note();
        Self {
            model: TopModel::default(),
            ui,
            keys,
            draw,
            refresh: opts.refresh,
            refreshed_at: None,
            goroutines,
            draw_error: None,
            signals: None,
        }
    }

    fn draw(&mut self) -> Option<EndReason> {
        match (self.draw)(&self.model, &self.ui) {
            Ok(()) => None,
            Err(e) => {
                self.draw_error = Some(e);
                Some(EndReason::Interrupted)
            }
        }
    }
}

impl<D> Observer for TopView<D>
where
    D: FnMut(&TopModel, &UiState) -> std::io::Result<()>,
{
    fn notice(&mut self, notice: Notice<'_>) {
        if let Notice::Warning(w) = notice {
            self.ui.warnings.push(w.to_string());
        }
    }

    fn live(&mut self, tick: LiveTick<'_>) -> Option<EndReason> {
        if self.signals.as_mut().is_some_and(StopSignals::received) {
            return Some(EndReason::Interrupted);
        }
        let mut changed = false;
        loop {
            match self.keys.try_recv() {
                Ok(key) => {
                    if !self.ui.apply(key) {
                        return Some(EndReason::Interrupted);
                    }
                    changed = true;
                }
                Err(TryRecvError::Empty) => break,
                // The terminal is gone.
                Err(TryRecvError::Disconnected) => return Some(EndReason::Interrupted),
            }
        }
        let due = self
            .refreshed_at
            .is_none_or(|at| tick.elapsed >= at + self.refresh);
        if due && !self.ui.paused {
            let facts = RefreshFacts {
                elapsed: tick.elapsed,
                lost: tick.lost,
                goroutines: self.goroutines.count(),
                max_stack_bytes: tick.max_stack_bytes,
            };
            self.model.refresh(tick.profile, tick.symbolizer, facts);
            self.refreshed_at = Some(tick.elapsed);
            changed = true;
        }
        if changed { self.draw() } else { None }
    }
}

/// Counts the target's live goroutines from `runtime.allgs` (one read of the array and one
/// of each `g`'s status per refresh; found from the symbol table, or from the code of
/// `runtime.allgadd` in stripped binaries).
struct GoroutineCounter {
    pid: u32,
    /// The executable as the target names it (where its mappings are in /proc/PID/maps).
    exe: std::path::PathBuf,
    source: Result<(GoBinary, GoLayout), &'static str>,
}

impl GoroutineCounter {
    fn new(pid: u32, exe: std::path::PathBuf, binary: Option<GoBinary>) -> Self {
        let source = match binary {
            Some(b) => match b.layout {
                Some(layout) => Ok((b, layout)),
                None => Err("n/a (no Go layout)"),
            },
            None => Err("n/a (no Go layout)"),
        };
        Self { pid, exe, source }
    }

    fn note(&self) -> Option<&'static str> {
        self.source.as_ref().err().copied()
    }

    fn count(&self) -> Option<u64> {
        let (binary, layout) = self.source.as_ref().ok()?;
        count_live_goroutines(self.pid, &self.exe, binary, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::Profile,
        goruntime::state::GoroutineState,
        sample::Sample,
        symbolize::{Symbolize, Symbols},
    };

    struct NoNames;

    impl Symbolize for NoNames {
        fn symbolize(&mut self, _: &[u64]) -> Symbols {
            Symbols::default()
        }
    }

    fn tick<'a>(ms: u64, profile: &'a mut Profile, names: &'a mut NoNames) -> LiveTick<'a> {
        LiveTick {
            elapsed: Duration::from_millis(ms),
            profile,
            symbolizer: names,
            lost: 0,
            max_stack_bytes: None,
            runtime_events: None,
        }
    }

    #[test]
    fn the_view_refreshes_each_second_follows_keys_and_quits() {
        let opts = TopOptions {
            record: RecordOptions {
                pid: std::process::id(),
                duration: None,
                frequency_hz: 99,
                max_frames: 64,
                kernel_stacks: false,
                events: false,
                event_details: true,
                filter: Filter::default(),
                verbose: false,
                samples_ring: None,
                wall_frequency_hz: None,
            },
            refresh: DEFAULT_REFRESH,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let draws = std::cell::Cell::new(0);
        let mut view = TopView::new(&opts, rx, |_: &TopModel, _: &UiState| {
            draws.set(draws.get() + 1);
            Ok(())
        });
        let mut profile = Profile::default();
        let mut names = NoNames;
        profile.add(&Sample::of_goroutine(&[1, 2], 1, GoroutineState::Running));
        // First tick refreshes and draws; the next ones within the second do nothing.
        assert_eq!(view.live(tick(250, &mut profile, &mut names)), None);
        assert_eq!((draws.get(), view.model.refreshes()), (1, 1));
        assert_eq!(view.live(tick(500, &mut profile, &mut names)), None);
        assert_eq!(draws.get(), 1);
        assert_eq!(view.live(tick(1250, &mut profile, &mut names)), None);
        assert_eq!((draws.get(), view.model.refreshes()), (2, 2));
        // Paused: keys redraw, refreshes stop.
        tx.send(Key::Pause).unwrap();
        assert_eq!(view.live(tick(1500, &mut profile, &mut names)), None);
        assert_eq!((draws.get(), view.model.refreshes()), (3, 2));
        assert_eq!(view.live(tick(5000, &mut profile, &mut names)), None);
        assert_eq!(view.model.refreshes(), 2);
        tx.send(Key::Pause).unwrap();
        assert_eq!(view.live(tick(5250, &mut profile, &mut names)), None);
        assert_eq!(view.model.refreshes(), 3);
        // q ends the run; so does a closed key channel.
        tx.send(Key::Quit).unwrap();
        assert_eq!(
            view.live(tick(5500, &mut profile, &mut names)),
            Some(EndReason::Interrupted)
        );
        drop(tx);
        assert_eq!(
            view.live(tick(5750, &mut profile, &mut names)),
            Some(EndReason::Interrupted)
        );
    }

    #[test]
    fn keys_map_and_change_the_ui() {
        assert_eq!(Key::from_char('q'), Some(Key::Quit));
        assert_eq!(Key::from_char('3'), Some(Key::Sort(SortColumn::OwnTime)));
        assert_eq!(Key::from_char('1'), Some(Key::Sort(SortColumn::OwnShare)));
        assert_eq!(Key::from_char('4'), Some(Key::Sort(SortColumn::TotalTime)));
        assert_eq!(Key::from_char('5'), None);
        assert_eq!(Key::from_char('x'), None);
        let mut ui = UiState {
            sort: SortColumn::default(),
            states: StateView::default(),
            paused: false,
            help: false,
            pid: 1,
            binary: "/x".into(),
            go_version: None,
            frequency_hz: 99,
            filter: None,
            warnings: vec![],
            goroutines_note: None,
        };
        assert!(ui.apply(Key::Pause) && ui.paused);
        assert!(ui.apply(Key::Pause) && !ui.paused);
        assert!(ui.apply(Key::Sort(SortColumn::TotalShare)));
        assert_eq!(ui.sort, SortColumn::TotalShare);
        assert!(ui.apply(Key::CycleState));
        assert_eq!(ui.states.name(), "running");
        assert!(!ui.apply(Key::Quit));
    }
}
