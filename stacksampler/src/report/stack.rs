//! What every format needs from one aggregated row: its stack expanded into source frames
//! (inlined frames included) and folded into repeated cycles.

use crate::{
    aggregate::{Row, StackId},
    diagnose::cycles::{self, Segment},
    goruntime::{GoVersion, waitreason},
    symbolize::Frame,
};

use super::Report;

/// One source frame of a stack, with the address it was symbolized from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFrame {
    /// Call-site address (as stored in the profile).
    pub addr: u64,
    pub frame: Frame,
}

/// The stack ending at `leaf`, expanded into source frames, innermost first (an address with
/// inlined functions gives several frames, the most inlined first).
pub fn expand(report: &Report, leaf: StackId) -> Vec<SourceFrame> {
    let addrs = report.profile.table.frames(leaf);
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        for frame in report.symbols.frames(addr).iter() {
            out.push(SourceFrame {
                addr,
                frame: frame.clone(),
            });
        }
    }
    out
}

/// Folds repeated cycles of `frames` (innermost first) with the diagnosis' cycle finder; two
/// frames are the same when they have the same address and function.
pub fn fold(frames: &[SourceFrame]) -> Vec<Segment> {
    let keys: Vec<(u64, &str)> = frames
        .iter()
        .map(|f| (f.addr, &*f.frame.function))
        .collect();
    cycles::fold(&keys)
}

/// Number of frames a segment covers.
pub fn segment_frames(segment: &Segment) -> usize {
    match *segment {
        Segment::Frame(_) => 1,
        Segment::Cycle { len, repeat, .. } => len * repeat,
    }
}

/// The label of a cycle, in call order (caller first): `[main.a -> main.b] x 2500`.
///
/// `frames` is innermost first, so the body is read backwards. A cycle of one frame is
/// `[main.f] x 2500`.
pub fn cycle_label(frames: &[SourceFrame], start: usize, len: usize, repeat: usize) -> String {
    let body: Vec<&str> = frames
        .get(start..start + len)
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|f| &*f.frame.function)
        .collect();
    format!("[{}] x {repeat}", body.join(" -> "))
}

/// The number of distinct goroutines of a row and the first few goids, for summaries.
pub fn goid_sample(row: &Row<'_>, at_most: usize) -> (usize, Vec<u64>) {
    let goids = &row.stats.goids;
    (goids.len(), goids.iter().take(at_most).copied().collect())
}

/// The name Go prints for wait reason `raw` in the target's Go version (`chan receive`), when
/// the version and the value are known.
pub fn waitreason_name(report: &Report, raw: u8) -> Option<&'static str> {
    let version: GoVersion = report.run.go_version.as_deref()?.parse().ok()?;
    waitreason::name(&version, raw)
}

/// Wait reason `raw` for display: its Go name, else `waitreason N`.
pub fn waitreason_text(report: &Report, raw: u8) -> String {
    waitreason_name(report, raw).map_or_else(|| format!("waitreason {raw}"), str::to_owned)
}

/// Percentage of `part` in `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::FrameKind;

    fn sf(addr: u64, name: &str) -> SourceFrame {
        SourceFrame {
            addr,
            frame: Frame {
                function: name.into(),
                file: None,
                line: None,
                inlined: false,
                module: None,
                kind: FrameKind::Go,
            },
        }
    }

    #[test]
    fn cycle_label_is_in_call_order() {
        let frames = [
            sf(1, "leaf"),
            sf(2, "main.b"),
            sf(3, "main.a"),
            sf(2, "main.b"),
        ];
        assert_eq!(cycle_label(&frames, 1, 2, 7), "[main.a -> main.b] x 7");
        assert_eq!(cycle_label(&frames, 0, 1, 3), "[leaf] x 3");
        assert_eq!(
            segment_frames(&Segment::Cycle {
                start: 0,
                len: 2,
                repeat: 5
            }),
            10
        );
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
    }
}
