//! SVG flame graph through inferno.
//!
//! Stacks are folded as for `--format folded`, with every repeated cycle drawn as one frame
//! named `[a -> b] x N` (so a 20,000-frame recursion is a handful of frames high), and any stack
//! still deeper than [`MAX_DEPTH`] frames keeps its outermost and innermost frames around one
//! `[... N frames elided ...]` frame. Frames are coloured by kind: Go code red, Go runtime aqua,
//! native code yellow, kernel orange, unknown grey, folded cycles purple, state frames blue, the
//! root frame (`all`) a lighter grey.

use std::{collections::BTreeMap, io::Write};

use inferno::flamegraph::{self, Options, color::Color, color::PaletteMap};

use crate::symbolize::FrameKind;

use super::{
    RenderError, Renderer, Report,
    folded::{self, CyclePolicy},
};

/// Deepest stack drawn frame by frame (after cycle folding).
pub const MAX_DEPTH: usize = 1_000;

/// Colour of inferno's root frame `all`: a neutral grey, so it is not taken for native code
/// (inferno's own choice for it is a yellow of the native family).
pub const ROOT_COLOR: Color = Color {
    r: 200,
    g: 200,
    b: 200,
};

/// Writes an SVG flame graph.
#[derive(Clone, Debug, Default)]
pub struct FlamegraphRenderer {
    /// The goroutine state as the root frame, so running and syscall time are separable.
    pub state_frames: bool,
}

/// What a flame graph frame stands for (its colour family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Kind(FrameKind),
    Cycle,
    State,
    Elided,
}

impl Family {
    /// Base colour and per-channel spread for names of this family.
    fn range(self) -> ([u8; 3], [u8; 3]) {
        match self {
            Family::Kind(FrameKind::Go) => ([200, 50, 40], [55, 60, 30]),
            Family::Kind(FrameKind::GoRuntime) => ([50, 165, 175], [60, 50, 50]),
            Family::Kind(FrameKind::Native) => ([175, 175, 50], [55, 55, 30]),
            Family::Kind(FrameKind::Kernel) => ([215, 110, 0], [40, 50, 40]),
            Family::Kind(FrameKind::Unknown) => ([160, 160, 160], [30, 30, 30]),
            Family::Cycle => ([160, 110, 210], [40, 40, 40]),
            Family::State => ([110, 150, 230], [0, 0, 0]),
            Family::Elided => ([120, 120, 120], [0, 0, 0]),
        }
    }

    /// A colour of this family, varied by a hash of `name` so neighbours differ (deterministic).
    fn color(self, name: &str) -> Color {
        let (base, spread) = self.range();
        let h = fnv1a(name.as_bytes());
        let pick = |i: usize| {
            let s = u64::from(spread[i]);
            let v = if s == 0 { 0 } else { (h >> (i * 16)) % (s + 1) };
            base[i].saturating_add(v as u8)
        };
        Color {
            r: pick(0),
            g: pick(1),
            b: pick(2),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `names` (outermost first) cut to at most `max` frames around one elision frame.
fn cap_depth(names: Vec<String>, max: usize) -> Vec<String> {
    if names.len() <= max || max < 3 {
        return names;
    }
    let outer = max / 2;
    let inner = max - outer - 1;
    let elided = names.len() - outer - inner;
    let mut out = Vec::with_capacity(max);
    out.extend_from_slice(&names[..outer]);
    out.push(format!("[... {elided} frames elided ...]"));
    out.extend_from_slice(&names[names.len() - inner..]);
    out
}

impl FlamegraphRenderer {
    /// Folded lines (merged) and the colour of every frame name in them.
    fn lines(&self, report: &Report) -> (BTreeMap<String, u64>, PaletteMap) {
        let mut kinds: BTreeMap<String, FrameKind> = BTreeMap::new();
        for frames in report.symbols.by_addr.values() {
            for f in frames {
                kinds
                    .entry(folded::sanitize(&f.function).into_owned())
                    .or_insert(f.kind);
            }
        }
        let mut palette = PaletteMap::default();
        let mut lines: BTreeMap<String, u64> = BTreeMap::new();
        for row in report.profile.ranked() {
            let names = folded::row_names(report, &row, self.state_frames, CyclePolicy::Label);
            let names = cap_depth(names, MAX_DEPTH);
            for (i, name) in names.iter().enumerate() {
                if palette.get(name).is_some() {
                    continue;
                }
                let family = if let Some(k) = kinds.get(name) {
                    Family::Kind(*k)
                } else if i == 0 && (self.state_frames || report.profile.has_wall()) {
                    Family::State
                } else if name.starts_with("[... ") {
                    Family::Elided
                } else if name.starts_with('[') && name.contains("] x ") {
                    Family::Cycle
                } else {
                    Family::Kind(FrameKind::Unknown)
                };
                palette.insert(name, family.color(name));
            }
            let key = if names.is_empty() {
                "[no frames]".to_owned()
            } else {
                names.join(";")
            };
            *lines.entry(key).or_default() += folded::row_weight(report, &row);
        }
        (lines, palette)
    }
}

impl Renderer for FlamegraphRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        let run = &report.run;
        let kept = report.profile.counts.kept;
        let binary_name = run.binary.file_name().map_or_else(
            || run.binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let title = match run.wall_frequency_hz {
            Some(wall_hz) => format!(
                "stacksampler: pid {} {binary_name}, {:.1} s: [cpu] {kept} samples at {} Hz, \
                 [wall] every goroutine at {wall_hz} Hz (ms)",
                run.pid, run.duration_secs, run.frequency_hz
            ),
            None => format!(
                "stacksampler: pid {} {binary_name}, {kept} samples in {:.1} s at {} Hz",
                run.pid, run.duration_secs, run.frequency_hz
            ),
        };
        let (lines, palette) = self.lines(report);
        if lines.is_empty() {
            return Ok(write_empty(out, &title)?);
        }
        let subtitle = format!(
            "{}{}; red Go, aqua Go runtime, yellow native, orange kernel, purple folded recursion",
            run.binary.display(),
            run.go_version
                .as_deref()
                .map_or(String::new(), |v| format!(" ({v})"))
        );
        draw(&lines, palette, title, subtitle, out)
    }
}

/// Draws folded `lines` (with their counts) with inferno, frames coloured by `palette` and the
/// root frame `all` by [`ROOT_COLOR`].
fn draw(
    lines: &BTreeMap<String, u64>,
    mut palette: PaletteMap,
    title: String,
    subtitle: String,
    out: &mut dyn Write,
) -> Result<(), RenderError> {
    // inferno draws the root from an empty-named frame (titled "all").
    palette.insert("", ROOT_COLOR);
    let text: Vec<String> = lines.iter().map(|(l, c)| format!("{l} {c}")).collect();
    let mut options = Options::default();
    options.title = title;
    options.subtitle = Some(subtitle);
    options.count_name = "samples".to_owned();
    options.deterministic = true;
    options.palette_map = Some(&mut palette);
    flamegraph::from_lines(&mut options, text.iter().map(String::as_str), out)?;
    Ok(())
}

/// A valid SVG saying there is nothing to draw.
fn write_empty(out: &mut dyn Write, title: &str) -> std::io::Result<()> {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    writeln!(
        out,
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="600" y="24" text-anchor="middle" font-family="Verdana" font-size="17">{title}</text><text x="600" y="48" text-anchor="middle" font-family="Verdana" font-size="12">no samples kept</text></svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_depth_around_an_elision_frame() {
        let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        assert_eq!(cap_depth(names.clone(), 10), names);
        assert_eq!(
            cap_depth(names, 5),
            ["f0", "f1", "[... 6 frames elided ...]", "f8", "f9"]
        );
    }

    /// The `fill` of the rectangle drawn for frame `name` in `svg`.
    fn fill_of(svg: &str, name: &str) -> String {
        let at = svg
            .find(&format!("<title>{name} ("))
            .unwrap_or_else(|| panic!("no frame {name}"));
        let rest = &svg[at..];
        let start = rest.find("fill=\"").expect("fill") + 6;
        rest[start..start + rest[start..].find('"').unwrap()].to_owned()
    }

    #[test]
    fn root_frame_is_grey_not_native_yellow() {
        let lines = BTreeMap::from([("main.main;main.hot".to_owned(), 3u64)]);
        let mut palette = PaletteMap::default();
        for name in ["main.main", "main.hot"] {
            palette.insert(name, Family::Kind(FrameKind::Go).color(name));
        }
        let mut svg = Vec::new();
        draw(&lines, palette, "t".into(), "s".into(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert_eq!(fill_of(&svg, "all"), "rgb(200,200,200)");
        let c = Family::Kind(FrameKind::Go).color("main.hot");
        assert_eq!(
            fill_of(&svg, "main.hot"),
            format!("rgb({},{},{})", c.r, c.g, c.b)
        );
    }

    #[test]
    fn colours_are_deterministic_and_in_family() {
        let a = Family::Kind(FrameKind::GoRuntime).color("runtime.gopark");
        assert_eq!(
            a,
            Family::Kind(FrameKind::GoRuntime).color("runtime.gopark")
        );
        assert!(a.b >= 175 && a.r <= 110);
        let k = Family::Kind(FrameKind::Kernel).color("do_syscall_64");
        assert!(k.r >= 215 && k.b <= 40);
    }
}
