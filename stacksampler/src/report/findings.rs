//! Findings in words: the one-line summary and the detail lines of each kind, for the text
//! report, the live view and stderr, and the json object `{severity, kind, summary, details,
//! data}` (the facts as `data`, docs/json-format.md).

use serde::Serialize;

use crate::{
    diagnose::{
        AllGoroutinesBlocked, Facts, Finding, FrameInfo, GoroutineGrowth, GoroutinePileup,
        RunawayRecursion, Severity, is_runtime,
    },
    units::{human_bytes, human_secs},
};

/// At most this many frames of a pile-up's stack are printed.
const PILEUP_FRAMES_PRINTED: usize = 32;
/// At most this many frames of a growing group's stack are printed.
const GROWTH_FRAMES_PRINTED: usize = 16;
/// Wait reasons named in the all-blocked summary.
const REASONS_LISTED: usize = 5;

/// The finding in one plain-language line.
pub fn summary(finding: &Finding) -> String {
    match &finding.facts {
        Facts::RunawayRecursion(f) => recursion_summary(f),
        Facts::GoroutinePileup(f) => pileup_summary(f),
        Facts::GoroutineGrowth(f) => growth_summary(f),
        Facts::AllGoroutinesBlocked(f) => all_blocked_summary(f),
    }
}

/// Further lines for the text report (cycle frames, entry frame, stack, ...).
pub fn details(finding: &Finding) -> Vec<String> {
    match &finding.facts {
        Facts::RunawayRecursion(f) => recursion_details(f),
        Facts::GoroutinePileup(f) => pileup_details(f),
        Facts::GoroutineGrowth(f) => growth_details(f),
        Facts::AllGoroutinesBlocked(f) => all_blocked_details(f),
    }
}

/// The json object of a finding of any source (a profile's, a dump's).
#[derive(Serialize)]
pub struct JsonFinding<'a, F: Serialize> {
    pub severity: Severity,
    pub kind: &'static str,
    pub summary: String,
    pub details: Vec<String>,
    /// The facts.
    pub data: &'a F,
}

impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonFinding {
            severity: self.severity,
            kind: self.kind(),
            summary: summary(self),
            details: details(self),
            data: &self.facts,
        }
        .serialize(serializer)
    }
}

/// `depth` as printed: `N frames`, or `at least N frames` when the stack was cut.
fn recursion_depth(f: &RunawayRecursion) -> String {
    if f.depth_exact {
        format!("{} frames", f.depth)
    } else {
        format!("at least {} frames", f.depth)
    }
}

fn recursion_summary(f: &RunawayRecursion) -> String {
    let who = match f.goids.len() {
        0 => "a goroutine recurses".to_string(),
        1 => format!(
            "goroutine {} recurses",
            f.goids.first().copied().unwrap_or_default()
        ),
        n => format!("{n} goroutines recurse"),
    };
    let names: Vec<&str> = f.cycle.iter().map(|c| c.function.as_str()).collect();
    let bytes = f
        .stack_bytes
        .map(|b| format!(", {} of stack", human_bytes(b)))
        .unwrap_or_default();
    let entry = match &f.entry {
        Some(e) => match e.location() {
            Some(loc) => format!("entered from {} at {loc}", e.function),
            None => format!("entered from {}", e.function),
        },
        None => "entry not captured".to_string(),
    };
    let fraction = f.stack_bytes.map(|b| b as f64 / f.limit_bytes as f64);
    let pace = match (f.growth_bytes_per_sec, f.seconds_to_limit, fraction) {
        (Some(g), Some(s), _) => format!(
            "; growing {}/s, {} limit in ~{}",
            human_bytes(g as u64),
            human_bytes(f.limit_bytes),
            human_secs(s)
        ),
        (_, _, Some(fr)) => format!(
            "; {:.1}% of the {} limit",
            fr * 100.0,
            human_bytes(f.limit_bytes)
        ),
        _ => String::new(),
    };
    format!(
        "{who} {} {} times ({}{bytes}), {entry}{pace}",
        names.join(" -> "),
        f.repeat,
        recursion_depth(f)
    )
}

fn recursion_details(f: &RunawayRecursion) -> Vec<String> {
    let mut details = vec![format!(
        "cycle of {} frames, from the root side, repeated {} times:",
        f.cycle.len(),
        f.repeat
    )];
    details.extend(f.cycle.iter().map(|c| format!("  {}", c.describe())));
    details.push(match &f.entry {
        Some(e) => format!("entered from {}", e.describe()),
        None => "entry frame not captured (the stack was cut on its root side)".to_string(),
    });
    details.push(format!("depth: {}", recursion_depth(f)));
    let limit_source = if f.limit_from_target {
        "runtime.maxstacksize"
    } else {
        "Go's default"
    };
    details.push(match f.stack_bytes {
        Some(b) => format!(
            "stack: {} in use, {} left before the {} limit ({limit_source}){}",
            human_bytes(b),
            human_bytes(f.limit_bytes.saturating_sub(b)),
            human_bytes(f.limit_bytes),
            match (f.growth_bytes_per_sec, f.seconds_to_limit) {
                (Some(_), Some(s)) => format!(", reached in ~{} at this rate", human_secs(s)),
                (Some(g), None) => format!(", not growing ({:.0} B/s)", g),
                _ => String::new(),
            }
        ),
        None => "stack bytes in use unknown (goroutine layout not read)".to_string(),
    });
    details.push(format!(
        "seen in {} samples over {} distinct stacks, states: {}",
        f.samples,
        f.rows,
        f.states
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    details
}

/// The pile-up's states: `waiting`, or `waiting 120, runnable 3`.
fn pileup_states(f: &GoroutinePileup) -> String {
    match f.states.as_slice() {
        [(s, _)] => s.name().to_string(),
        states => states
            .iter()
            .map(|(s, c)| format!("{} {c}", s.name()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn pileup_summary(f: &GoroutinePileup) -> String {
    // The most telling frame: the innermost outside the Go runtime, else the innermost.
    let place = f
        .stack
        .iter()
        .find(|fr| !is_runtime(&fr.function))
        .or(f.stack.first());
    let where_ = place.map_or_else(|| "an empty stack".to_string(), FrameInfo::describe);
    let state_text = pileup_states(f);
    format!(
        "{} goroutines {} in {where_} with the same {}",
        f.goroutines,
        if f.states.len() == 1 {
            state_text
        } else {
            format!("({state_text})")
        },
        if f.stack_complete {
            "stack".to_string()
        } else {
            format!("innermost {} frames", f.compared_frames)
        }
    )
}

fn pileup_details(f: &GoroutinePileup) -> Vec<String> {
    let mut details = vec![format!(
        "{} goroutines ({}), {} samples{}",
        f.goroutines,
        pileup_states(f),
        f.samples,
        if f.waitreasons.is_empty() {
            String::new()
        } else {
            format!(
                ", wait reasons {}",
                f.waitreasons
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )];
    details.push("stack, innermost first:".to_string());
    details.extend(stack_lines(&f.stack, PILEUP_FRAMES_PRINTED));
    if f.stack.len() > PILEUP_FRAMES_PRINTED {
        details.push(format!(
            "  ... {} more",
            f.stack.len() - PILEUP_FRAMES_PRINTED
        ));
    }
    details
}

/// The first `most` frames of `stack`, one indented line each.
fn stack_lines(stack: &[FrameInfo], most: usize) -> impl Iterator<Item = String> + '_ {
    stack
        .iter()
        .take(most)
        .map(|f| format!("  {}", f.describe()))
}

fn growth_summary(f: &GoroutineGrowth) -> String {
    let place = f
        .blocking
        .as_ref()
        .map_or_else(|| "an unknown place".to_owned(), FrameInfo::describe);
    let created = f
        .created_by
        .as_ref()
        .map(|c| format!(", created by {}", c.describe()))
        .unwrap_or_default();
    format!(
        "goroutines in {} at {place}{created} grew from {} to {} in {:.1} s (+{:.1}/s): a leak",
        f.status, f.first, f.last, f.span_s, f.rate_per_s
    )
}

fn growth_details(f: &GoroutineGrowth) -> Vec<String> {
    let mut details = vec![format!(
        "{} goroutines in the first snapshot, {} in the last ({} at most), {} snapshots",
        f.first, f.last, f.peak, f.snapshots
    )];
    if let Some(c) = &f.created_by {
        details.push(format!("created by {}", c.describe()));
    }
    details.push("stack, innermost first:".to_owned());
    details.extend(stack_lines(&f.stack, GROWTH_FRAMES_PRINTED));
    details
}

fn all_blocked_summary(f: &AllGoroutinesBlocked) -> String {
    let reasons: Vec<String> = f
        .wait_reasons
        .iter()
        .take(REASONS_LISTED)
        .map(|r| format!("{} {}", r.goroutines, r.wait_reason))
        .collect();
    format!(
        "every goroutine blocked, none runnable or running: {} goroutines waiting in {} \
         consecutive snapshots ({:.1} s), {}",
        f.goroutines,
        f.snapshots,
        f.to_s - f.from_s,
        reasons.join(", ")
    )
}

fn all_blocked_details(f: &AllGoroutinesBlocked) -> Vec<String> {
    vec![
        format!(
            "from {:.1} s to {:.1} s into the run ({} of {} snapshots all blocked)",
            f.from_s, f.to_s, f.blocked_snapshots_in_run, f.snapshots_in_run
        ),
        "a deadlock the runtime cannot report (a timer or the network poller keeps it alive), \
         or a program idle at that moment"
            .to_owned(),
    ]
}
