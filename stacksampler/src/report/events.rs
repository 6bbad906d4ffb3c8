//! The watch report: fatal error first, then goroutines (live count, leak sources), stack
//! growth histories, alerts and the probes' own numbers. Text and json renderings.

use std::{collections::HashMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    bpf::{
        AttachedProbe, ProbeCost,
        runtime_event::{RuntimeEvent, RuntimeEventKind},
        sites::functions,
    },
    events::tracker::{LivePoint, StackAlert, Tracker},
    symbolize::{Symbolize, Symbols},
    units::human_bytes,
};

/// Frames printed at each end of a long stack (as Go's own traceback does).
pub const HEAD_TAIL_FRAMES: usize = 50;
/// Creation sites listed.
const TOP_SITES: usize = 10;
/// Growth histories listed.
const TOP_HISTORIES: usize = 10;
/// Frames shown per growth in the json history.
const GROWTH_TOP_FRAMES: usize = 5;

/// One symbolized frame.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FrameOut {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The fatal error that ended the target.
#[derive(Clone, Debug, Serialize)]
pub struct FatalReport {
    /// As Go prints it after `fatal error: `.
    pub message: String,
    pub goid: u64,
    /// Frames of the failing goroutine's stack (exact unless `truncated`).
    pub depth: u64,
    pub truncated: bool,
    /// Innermost frames (at most [`HEAD_TAIL_FRAMES`]).
    pub head: Vec<FrameOut>,
    /// Outermost frames (at most [`HEAD_TAIL_FRAMES`]), innermost first.
    pub tail: Vec<FrameOut>,
    /// Frames between head and tail.
    pub omitted: u64,
}

/// One creation site of goroutines still alive at the end.
#[derive(Clone, Debug, Serialize)]
pub struct CreationSite {
    /// Live goroutines created there.
    pub count: u64,
    /// The function with the `go` statement, its file and line.
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// A few of their goroutine ids.
    pub goids: Vec<u64>,
}

/// Goroutine counts.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineSummary {
    /// Alive at attach (from `runtime.allgs`), when readable.
    pub at_attach: Option<u64>,
    pub created: u64,
    /// Ended (created during the watch, or before it).
    pub exited: u64,
    pub exited_preexisting: u64,
    pub net_change: i64,
    pub live_at_end: Option<i64>,
    /// Creations per second over the watch.
    pub creation_rate_per_s: f64,
    /// New goroutines were identified (their ids known).
    pub creation_goids_known: bool,
}

/// One size in a growth history.
#[derive(Clone, Debug, Serialize)]
pub struct GrowthStep {
    pub t_s: f64,
    pub bytes: u64,
    pub depth: u64,
    /// Innermost frames at the growth.
    pub top: Vec<String>,
}

/// A goroutine's stack sizes over time.
#[derive(Clone, Debug, Serialize)]
pub struct GrowthHistory {
    pub goid: u64,
    /// The size before the first growth seen.
    pub initial_bytes: u64,
    pub steps: Vec<GrowthStep>,
}

/// An alert, as printed when it fired.
#[derive(Clone, Debug, Serialize)]
pub struct AlertOut {
    pub event: &'static str,
    /// Version of this document's schema.
    pub format_version: u32,
    pub goid: u64,
    pub stack_bytes: u64,
    pub threshold_bytes: u64,
    pub t_s: f64,
    pub depth: u64,
    pub truncated: bool,
    /// Root first, `;`-separated (frames between head and tail elided as `...`).
    pub folded: String,
}

/// Event delivery numbers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventStats {
    pub received: u64,
    pub lost: u64,
    pub decode_errors: u64,
    pub read_errors: u64,
    pub by_kind: crate::events::tracker::KindCounts,
}

/// The whole watch report.
#[derive(Clone, Debug, Serialize)]
pub struct WatchReport {
    pub event: &'static str,
    /// Version of this document's schema (the sampling report's, `report::json`).
    pub format_version: u32,
    pub pid: u32,
    pub binary: String,
    pub go_version: Option<String>,
    pub duration_s: f64,
    pub ended_by: super::EndReason,
    pub fatal: Option<FatalReport>,
    pub goroutines: GoroutineSummary,
    pub timeline: Vec<LivePoint>,
    pub leak_sites: Vec<CreationSite>,
    pub stack_growth: Vec<GrowthHistory>,
    pub biggest_stack: Option<(u64, u64)>,
    pub alerts: Vec<AlertOut>,
    pub events: EventStats,
    pub probes: Vec<AttachedProbe>,
    pub probe_cost: Vec<ProbeCost>,
}

/// Symbolizes a stack (innermost first) into frames, expanding inlined calls.
pub fn symbolize_stack(sym: &mut dyn Symbolize, addrs: &[u64]) -> Vec<FrameOut> {
    let symbols: Symbols = sym.symbolize(addrs);
    addrs
        .iter()
        .flat_map(|a| {
            symbols
                .frames(*a)
                .iter()
                .map(|f| FrameOut {
                    function: f.function.to_string(),
                    file: f.file.as_deref().map(str::to_owned),
                    line: f.line,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `root;...;leaf` of a stack; `omitted` frames after the head are shown as `...`.
pub fn folded(frames: &[FrameOut], head_len: Option<usize>) -> String {
    let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
    let mut parts: Vec<&str> = Vec::with_capacity(names.len() + 1);
    match head_len {
        Some(h) if h < names.len() => {
            parts.extend(names[h..].iter().rev());
            parts.push("...");
            parts.extend(names[..h].iter().rev());
        }
        _ => parts.extend(names.iter().rev()),
    }
    parts.join(";")
}

/// The alert record for `a`.
pub fn alert_out(
    sym: &mut dyn Symbolize,
    a: &StackAlert,
    threshold: u64,
    start_ns: u64,
) -> AlertOut {
    let head = (a.omitted > 0).then_some(stacksampler_common::EVENT_HEAD_FRAMES);
    let frames = symbolize_stack(sym, &a.frames);
    // Inlining may expand the head: count its symbolized length.
    let head_len = head.map(|h| symbolize_stack(sym, &a.frames[..h.min(a.frames.len())]).len());
    AlertOut {
        event: "stack_alert",
        format_version: super::json::FORMAT_VERSION,
        goid: a.goid,
        stack_bytes: a.stack_bytes,
        threshold_bytes: threshold,
        t_s: a.time_ns.saturating_sub(start_ns) as f64 / 1e9,
        depth: a.depth,
        truncated: a.truncated,
        folded: folded(&frames, head_len),
    }
}

/// The fatal error among `events` (the message of `runtime.throw`/`fatal`, the stack of the
/// failing goroutine), symbolized; `None` when there is none.
pub fn fatal_report(sym: &mut dyn Symbolize, events: &[RuntimeEvent]) -> Option<FatalReport> {
    let with_message = events.iter().find(|e| e.kind == RuntimeEventKind::Fatal);
    let e = with_message.or_else(|| events.first())?;
    let mut frames = e.frames.clone();
    let mut depth = e.depth;
    if e.system_stack && frames.len() > 1 {
        // frames[1] is the caller pc morestack saved: only valid when newstack threw.
        let thrower = symbolize_stack(sym, &[e.caller_pc.saturating_sub(1)]);
        let from_newstack = thrower.iter().any(|f| f.function == functions::NEWSTACK);
        if !from_newstack {
            frames.remove(1);
            depth = depth.saturating_sub(1);
        }
    }
    let all = symbolize_stack(sym, &frames);
    let (head, tail, omitted) = if e.omitted > 0 {
        let h = stacksampler_common::EVENT_HEAD_FRAMES.min(frames.len());
        let head_syms = symbolize_stack(sym, &frames[..h]);
        let tail_syms = symbolize_stack(sym, &frames[h..]);
        let head: Vec<FrameOut> = head_syms.iter().take(HEAD_TAIL_FRAMES).cloned().collect();
        let tail: Vec<FrameOut> =
            tail_syms[tail_syms.len().saturating_sub(HEAD_TAIL_FRAMES)..].to_vec();
        let omitted = depth.saturating_sub((head.len() + tail.len()) as u64);
        (head, tail, omitted)
    } else if all.len() > 2 * HEAD_TAIL_FRAMES {
        let head = all[..HEAD_TAIL_FRAMES].to_vec();
        let tail = all[all.len() - HEAD_TAIL_FRAMES..].to_vec();
        let omitted = (all.len() - 2 * HEAD_TAIL_FRAMES) as u64;
        (head, tail, omitted)
    } else {
        (all.clone(), Vec::new(), 0)
    };
    // Depth counts symbolized frames when the whole stack is known (inlined calls included).
    let depth = if e.omitted == 0 {
        all.len() as u64
    } else {
        depth
    };
    Some(FatalReport {
        message: e
            .message
            .clone()
            .unwrap_or_else(|| "(message not readable)".into()),
        goid: e.goid,
        depth,
        truncated: e.truncated,
        head,
        tail,
        omitted,
    })
}

/// The function with the `go` statement: the first non-runtime frame of the creator's stack.
fn creation_site(frames: &[FrameOut]) -> Option<&FrameOut> {
    frames
        .iter()
        .find(|f| !f.function.starts_with("runtime.") && !f.function.starts_with("0x"))
        .or_else(|| frames.get(1))
}

/// Inputs of [`build`] besides the tracker.
pub struct ReportContext {
    pub pid: u32,
    pub binary: String,
    pub go_version: Option<String>,
    pub duration_s: f64,
    pub ended_by: super::EndReason,
    pub alerts: Vec<AlertOut>,
    pub events: EventStats,
    pub probes: Vec<AttachedProbe>,
    pub probe_cost: Vec<ProbeCost>,
    pub creation_goids_known: bool,
}

/// A creation site: function, file and line of the `go` statement.
type SiteKey = (String, Option<String>, Option<u32>);
/// Goroutines created at a site and still alive: their number and (some of) their ids.
type SiteCount = (u64, Vec<u64>);

/// Builds the report from the tracker, symbolizing what it shows.
pub fn build(t: &Tracker, sym: &mut dyn Symbolize, ctx: ReportContext) -> WatchReport {
    let fatal = fatal_report(sym, &t.fatal);

    let mut sites: HashMap<SiteKey, SiteCount> = HashMap::new();
    let mut add_site = |frames: &[FrameOut], goid: Option<u64>| {
        let Some(site) = creation_site(frames) else {
            return;
        };
        let e = sites
            .entry((site.function.clone(), site.file.clone(), site.line))
            .or_default();
        e.0 += 1;
        if let Some(id) = goid
            && e.1.len() < 5
        {
            e.1.push(id);
        }
    };
    let mut live: Vec<(u64, &Vec<u64>)> = t
        .live_created()
        .map(|(id, g)| (id, &g.creation_stack))
        .collect();
    live.sort_by_key(|(id, _)| *id);
    for (id, stack) in live {
        let frames = symbolize_stack(sym, stack);
        add_site(&frames, Some(id));
    }
    for stack in &t.anonymous_creations {
        let frames = symbolize_stack(sym, stack);
        add_site(&frames, None);
    }
    let mut leak_sites: Vec<CreationSite> = sites
        .into_iter()
        .map(|((function, file, line), (count, goids))| CreationSite {
            count,
            function,
            file,
            line,
            goids,
        })
        .collect();
    leak_sites.sort_by(|a, b| b.count.cmp(&a.count).then(a.function.cmp(&b.function)));
    leak_sites.truncate(TOP_SITES);

    let stack_growth = t
        .histories()
        .into_iter()
        .take(TOP_HISTORIES)
        .map(|(goid, g)| GrowthHistory {
            goid,
            initial_bytes: g.growths.first().map_or(0, |x| x.from),
            steps: g
                .growths
                .iter()
                .map(|x| GrowthStep {
                    t_s: x.time_ns.saturating_sub(t.start_ns) as f64 / 1e9,
                    bytes: x.to,
                    depth: x.depth,
                    top: symbolize_stack(sym, &x.frames[..x.frames.len().min(GROWTH_TOP_FRAMES)])
                        .into_iter()
                        .map(|f| f.function)
                        .collect(),
                })
                .collect(),
        })
        .collect();

    let duration = ctx.duration_s.max(1e-9);
    WatchReport {
        event: "report",
        format_version: super::json::FORMAT_VERSION,
        pid: ctx.pid,
        binary: ctx.binary,
        go_version: ctx.go_version,
        duration_s: ctx.duration_s,
        ended_by: ctx.ended_by,
        fatal,
        goroutines: GoroutineSummary {
            at_attach: t.at_attach,
            created: t.created,
            exited: t.exited + t.exited_preexisting,
            exited_preexisting: t.exited_preexisting,
            net_change: t.net_change(),
            live_at_end: t.live(),
            creation_rate_per_s: t.created as f64 / duration,
            creation_goids_known: ctx.creation_goids_known,
        },
        timeline: t.timeline.clone(),
        leak_sites,
        stack_growth,
        biggest_stack: t.biggest,
        alerts: ctx.alerts,
        events: ctx.events,
        probes: ctx.probes,
        probe_cost: ctx.probe_cost,
    }
}

fn frame_line(f: &FrameOut) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{}\n        {file}:{line}", f.function),
        _ => f.function.clone(),
    }
}

/// The fatal error as text: `FATAL: fatal error: MESSAGE (goroutine N)`, then the failing
/// goroutine's stack (head, elided count, tail, as Go's own traceback).
pub fn render_fatal_text(f: &FatalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "FATAL: fatal error: {} (goroutine {})",
        f.message, f.goid
    );
    let _ = writeln!(
        s,
        "  stack of goroutine {}: {} frames{}",
        f.goid,
        f.depth,
        if f.truncated {
            " (walk limit reached: at least)"
        } else {
            ""
        }
    );
    for fr in &f.head {
        let _ = writeln!(s, "    {}", frame_line(fr));
    }
    if f.omitted > 0 {
        let _ = writeln!(s, "    ...{} frames elided...", f.omitted);
    }
    for fr in &f.tail {
        let _ = writeln!(s, "    {}", frame_line(fr));
    }
    s
}

/// Renders the report as text.
pub fn render_text(r: &WatchReport, verbose: bool) -> String {
    let mut s = String::new();
    if let Some(f) = &r.fatal {
        s.push_str(&render_fatal_text(f));
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "stacksampler watch: pid {} ({}), Go {}, {:.1}s, ended by {}",
        r.pid,
        r.binary,
        r.go_version.as_deref().unwrap_or("unknown"),
        r.duration_s,
        r.ended_by.describe()
    );
    s.push_str(&render_events_text(r, verbose));
    s
}

/// The body of the report as text, without the fatal error and the header: goroutines, their
/// creation sites, stack growth, alerts, event counts (a `record --events` report shows it too).
pub fn render_events_text(r: &WatchReport, verbose: bool) -> String {
    let mut s = String::new();
    let g = &r.goroutines;
    let _ = writeln!(
        s,
        "goroutines: {} created ({:.1}/s), {} ended, net {:+}{}{}",
        g.created,
        g.creation_rate_per_s,
        g.exited,
        g.net_change,
        g.at_attach
            .map_or(String::new(), |n| format!(", {n} at attach")),
        g.live_at_end
            .map_or(String::new(), |n| format!(", {n} live at end")),
    );
    if !r.timeline.is_empty() {
        let points: Vec<String> = r
            .timeline
            .iter()
            .map(|p| format!("{:.0}s:{:+}", p.t_s, p.net_change))
            .collect();
        let _ = writeln!(s, "live change over time: {}", points.join(" "));
    }
    if !r.leak_sites.is_empty() {
        let _ = writeln!(s, "\ncreation sites of goroutines still alive:");
        for site in &r.leak_sites {
            let at = match (&site.file, site.line) {
                (Some(f), Some(l)) => format!(" {f}:{l}"),
                _ => String::new(),
            };
            let _ = writeln!(s, "  {:>7}  {}{}", site.count, site.function, at);
        }
    }
    if !r.stack_growth.is_empty() {
        let _ = writeln!(s, "\nstack growth (biggest first):");
        for h in &r.stack_growth {
            let sizes: Vec<String> = std::iter::once(human_bytes(h.initial_bytes))
                .chain(
                    h.steps
                        .iter()
                        .map(|x| format!("{} @{:.3}s", human_bytes(x.bytes), x.t_s)),
                )
                .collect();
            let _ = writeln!(s, "  goroutine {}: {}", h.goid, sizes.join(" -> "));
        }
    }
    for a in &r.alerts {
        let _ = writeln!(
            s,
            "\nALERT goroutine {} stack {} >= {} at {:.3}s, {} frames",
            a.goid,
            human_bytes(a.stack_bytes),
            human_bytes(a.threshold_bytes),
            a.t_s,
            a.depth
        );
    }
    let e = &r.events;
    let _ = writeln!(
        s,
        "\nevents: {} received, {} lost, {} undecodable",
        e.received, e.lost, e.decode_errors
    );
    if verbose {
        for p in &r.probes {
            let _ = writeln!(
                s,
                "probe {} at {} (file offset {:#x})",
                p.program, p.location, p.file_offset
            );
        }
        for c in &r.probe_cost {
            let _ = writeln!(
                s,
                "probe cost {}: {} hits, {:.0} ns/hit",
                c.program,
                c.cost.run_count,
                c.cost.mean_ns().unwrap_or(0.0)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> FrameOut {
        FrameOut {
            function: name.into(),
            file: None,
            line: None,
        }
    }

    #[test]
    fn folded_is_root_first_with_elision() {
        let frames = [f("leaf"), f("mid"), f("root")];
        assert_eq!(folded(&frames, None), "root;mid;leaf");
        assert_eq!(folded(&frames, Some(1)), "root;mid;...;leaf");
    }

    #[test]
    fn creation_site_skips_runtime_frames() {
        let frames = [
            f("runtime.systemstack_switch"),
            f("main.leak"),
            f("main.main"),
        ];
        assert_eq!(
            creation_site(&frames).map(|x| x.function.as_str()),
            Some("main.leak")
        );
    }

    #[test]
    fn sizes_print_like_go() {
        assert_eq!(human_bytes(8192), "8 KiB");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
