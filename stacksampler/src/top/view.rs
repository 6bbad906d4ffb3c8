//! Drawing the [`TopModel`] with ratatui: a header, the goroutine-state bar, findings, the
//! deepest stacks, the function table and a key line. Fits 80x24; a taller terminal gets more
//! findings, stacks and functions, a wider one longer names. Everything shown as colour is also
//! written as text (state names inside the bar), so a plain capture of the screen reads the same.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table},
};

use super::{
    UiState,
    model::{SortColumn, StateCounts, TopModel},
};
use crate::{diagnose::Severity, goruntime::state::GoroutineState};

/// Lines of the header, the state bar and its legend, the key line.
const FIXED_LINES: u16 = 5;
/// Fewest function rows (with their heading) the table keeps.
const MIN_TABLE_LINES: u16 = 6;
/// A block (findings, deepest stacks) gets one line per this many terminal lines.
const LINES_PER_BLOCK_LINE: u16 = 8;

/// Draws the whole screen.
pub fn render(frame: &mut Frame<'_>, model: &TopModel, ui: &UiState) {
    let area = frame.area();
    let spare = area.height.saturating_sub(FIXED_LINES + MIN_TABLE_LINES);
    let per_block = (area.height / LINES_PER_BLOCK_LINE).max(1);
    let findings = block_lines(model.findings().len(), per_block, spare / 2);
    let deepest = block_lines(model.deepest(ui.states).count(), per_block, spare / 2);
    let [header, states, findings_area, deep_area, table, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(2),
        Constraint::Length(findings),
        Constraint::Length(deepest),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_lines(model, ui)), header);
    frame.render_widget(Paragraph::new(state_lines(model, states.width)), states);
    frame.render_widget(
        Paragraph::new(finding_lines(model, findings_area.height)),
        findings_area,
    );
    frame.render_widget(
        Paragraph::new(deep_lines(model, ui, deep_area.height)),
        deep_area,
    );
    render_table(frame, table, model, ui);
    frame.render_widget(Paragraph::new(key_line(ui)), keys);
    if ui.help {
        render_help(frame, area);
    }
}

/// Lines for a block with `items` entries and its title: at most `per_block` entries, or
/// `spare` lines.
fn block_lines(items: usize, per_block: u16, spare: u16) -> u16 {
    let wanted = (items as u16).clamp(1, per_block) + 1;
    wanted.min(spare.max(1))
}

fn header_lines(model: &TopModel, ui: &UiState) -> Vec<Line<'static>> {
    let name = ui.binary.file_name().map_or_else(
        || ui.binary.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let go = ui.go_version.as_deref().unwrap_or("not Go");
    let mut first = vec![
        Span::styled(
            "stacksampler top",
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  pid {} {name} ({go})  {} Hz  {:.0}s",
            ui.pid,
            ui.frequency_hz,
            model.elapsed().as_secs_f64()
        )),
    ];
    if let Some(f) = &ui.filter {
        first.push(Span::raw(format!("  {f}")));
    }
    if ui.paused {
        first.push(Span::styled(
            "  PAUSED",
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let interval = model.interval_totals();
    let all = model.all_totals();
    let rate = interval.received as f64 / model.interval_secs().max(f64::EPSILON);
    let goroutines = match (model.goroutines(), ui.goroutines_note) {
        (Some(g), _) => match g.per_sec {
            Some(r) => format!("goroutines {} ({r:+.1}/s)", g.live),
            None => format!("goroutines {}", g.live),
        },
        (None, Some(note)) => format!("goroutines {note}"),
        (None, None) => "goroutines ?".to_owned(),
    };
    let lost_style = if interval.lost > 0 {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    let second = vec![
        Span::raw(format!(
            "samples {rate:.0}/s {} kept of {}  ",
            all.kept, all.received
        )),
        Span::styled(
            format!("lost {} ({} total)", interval.lost, all.lost),
            lost_style,
        ),
        Span::raw(format!("  {goroutines}")),
    ];
    vec![Line::from(first), Line::from(second)]
}

fn state_color(state: GoroutineState) -> Color {
    match state {
        GoroutineState::Running => Color::Green,
        GoroutineState::Syscall => Color::Red,
        GoroutineState::Waiting => Color::Blue,
        GoroutineState::Runnable => Color::Yellow,
        GoroutineState::Preempted => Color::Magenta,
        GoroutineState::Copystack => Color::Cyan,
        _ => Color::Gray,
    }
}

const STATES_LABEL: &str = "states ";

/// The state bar (last interval: one coloured segment per state, its name inside) and a legend
/// (since start).
fn state_lines(model: &TopModel, width: u16) -> Vec<Line<'static>> {
    let interval = model.interval_states();
    let bar_width = (width as usize).saturating_sub(STATES_LABEL.len());
    let mut bar = vec![Span::raw(STATES_LABEL)];
    bar.extend(bar_segments(&interval, bar_width));
    let all = model.all_states();
    let total: u64 = all.iter().map(|(_, n)| n).sum();
    let mut legend = vec![Span::raw("since start ")];
    if total == 0 {
        legend.push(Span::raw("no samples kept yet"));
    }
    for (state, n) in &all {
        legend.push(Span::styled("■ ", Style::new().fg(state_color(*state))));
        legend.push(Span::raw(format!(
            "{} {:.1}%  ",
            state.name(),
            *n as f64 * 100.0 / total as f64
        )));
    }
    vec![Line::from(bar), Line::from(legend)]
}

/// Segments of `width` cells in proportion to `counts`, each labelled `name NN%` (cut to fit).
/// A state with any sample gets at least one cell.
fn bar_segments(counts: &StateCounts, width: usize) -> Vec<Span<'static>> {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 || width == 0 {
        return vec![Span::raw("no samples in the last interval")];
    }
    let mut widths: Vec<usize> = counts
        .iter()
        .map(|(_, n)| ((*n as f64 / total as f64 * width as f64).round() as usize).max(1))
        .collect();
    // Rounding may overshoot: take the excess from the widest segments.
    while widths.iter().sum::<usize>() > width {
        if let Some(w) = widths.iter_mut().max() {
            *w -= 1;
        }
    }
    counts
        .iter()
        .zip(widths)
        .map(|((state, n), w)| {
            let label = format!("{} {:.0}%", state.name(), *n as f64 * 100.0 / total as f64);
            let text: String = format!("{label:<w$}").chars().take(w).collect();
            Span::styled(text, Style::new().fg(Color::Black).bg(state_color(*state)))
        })
        .collect()
}

fn severity_style(s: Severity) -> (&'static str, Style) {
    match s {
        Severity::Critical => ("CRIT", Style::new().fg(Color::White).bg(Color::Red)),
        Severity::Warning => ("WARN", Style::new().fg(Color::Black).bg(Color::Yellow)),
        Severity::Info => ("INFO", Style::new()),
    }
}

fn finding_lines(model: &TopModel, height: u16) -> Vec<Line<'static>> {
    let findings = model.findings();
    let mut lines = vec![Line::styled(
        format!("findings ({})", findings.len()),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if findings.is_empty() {
        lines.push(Line::raw("  none: no runaway recursion, no pile-up"));
    }
    for f in findings.iter().take(height.saturating_sub(1) as usize) {
        let (word, style) = severity_style(f.severity);
        lines.push(Line::from(vec![
            Span::raw("  "),
            Span::styled(word, style),
            Span::raw(format!(" {}", crate::report::findings::summary(f))),
        ]));
    }
    lines
}

fn deep_lines(model: &TopModel, ui: &UiState, height: u16) -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        "deepest stacks (frames, state, goroutines, innermost <- entry)",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let rows = model
        .deepest(ui.states)
        .take(height.saturating_sub(1) as usize);
    for d in rows {
        let goids = match d.goids.as_slice() {
            [] => "g?".to_owned(),
            [one] => format!("g{one}"),
            [first, rest @ ..] => format!("g{first}+{}", rest.len()),
        };
        let depth = if d.truncated {
            format!(">={}", d.depth)
        } else {
            d.depth.to_string()
        };
        let entry = d
            .entry
            .as_ref()
            .map_or_else(String::new, |e| format!(" <- {e}"));
        lines.push(Line::from(vec![
            Span::raw(format!("  {depth:>7} ")),
            Span::styled(
                format!("{:<8}", d.state.name()),
                Style::new().fg(state_color(d.state)),
            ),
            Span::raw(format!(" {goids:<7} {}{entry}", d.leaf)),
        ]));
    }
    lines
}

fn percent(n: u64, of: u64) -> String {
    if of == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", n as f64 * 100.0 / of as f64)
}

fn seconds(samples: u64, hz: u64) -> String {
    format!("{:.2}s", samples as f64 / hz.max(1) as f64)
}

fn render_table(frame: &mut Frame<'_>, area: Rect, model: &TopModel, ui: &UiState) {
    let rows = model.functions(ui.states, ui.sort);
    let interval = model.interval_kept(ui.states);
    let heading = Row::new(
        SortColumn::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let text = format!("{}{}", i + 1, c.heading());
                let style = if *c == ui.sort {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new().add_modifier(Modifier::BOLD)
                };
                Cell::from(text).style(style)
            })
            .chain([
                Cell::from(format!("Function (states: {})", ui.states.name()))
                    .style(Style::new().add_modifier(Modifier::BOLD)),
            ]),
    );
    let body = rows.iter().take(area.height as usize).map(|r| {
        Row::new([
            Cell::from(percent(r.own_interval, interval)),
            Cell::from(percent(r.total_interval, interval)),
            Cell::from(seconds(r.own_all, ui.frequency_hz)),
            Cell::from(seconds(r.total_all, ui.frequency_hz)),
            Cell::from(r.function.to_string()),
        ])
    });
    let table = Table::new(
        body,
        [
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
    )
    .header(heading)
    .column_spacing(1);
    frame.render_widget(table, area);
}

fn key_line(ui: &UiState) -> Line<'static> {
    let key = Style::new().add_modifier(Modifier::REVERSED);
    let mut spans = vec![
        Span::styled("q", key),
        Span::raw(" quit "),
        Span::styled("p", key),
        Span::raw(if ui.paused { " resume " } else { " pause " }),
        Span::styled("s", key),
        Span::raw(format!(" states:{} ", ui.states.name())),
        Span::styled("1-4", key),
        Span::raw(" sort "),
        Span::styled("?", key),
        Span::raw(" help"),
    ];
    if let Some(w) = ui.warnings.first() {
        spans.push(Span::styled(
            format!("  warning: {w}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

const HELP: [&str; 10] = [
    "q, Ctrl-C   quit (the target is detached; -o writes the report)",
    "p, space    pause the display (sampling goes on)",
    "s           cycle the state filter: all, running, syscall, waiting, runnable",
    "1 2 3 4     sort by %Own, %Total (last interval), OwnTime, TotalTime (since start)",
    "?           show or hide this help",
    "",
    "%Own: share of the samples with the function innermost; %Total: anywhere on the",
    "stack. OwnTime/TotalTime: the same since start, as CPU seconds (one sample per",
    "1/FREQUENCY s). The state bar shows the last interval, its legend since start.",
    "",
];

fn render_help(frame: &mut Frame<'_>, area: Rect) {
    let width = area.width.min(86);
    let height = (HELP.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(HELP.iter().map(|l| Line::raw(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        sample::Sample,
        symbolize::{Frame as SymFrame, FrameKind, Symbolize, Symbols},
        top::{Key, model::RefreshFacts},
    };

    struct Names;

    impl Symbolize for Names {
        fn symbolize(&mut self, addrs: &[u64]) -> Symbols {
            Symbols {
                by_addr: addrs
                    .iter()
                    .map(|&a| {
                        let function = match a {
                            1 => "main.hotLoop",
                            2 => "syscall.read",
                            _ => "runtime.goexit",
                        };
                        let frame = SymFrame {
                            function: function.into(),
                            file: None,
                            line: None,
                            inlined: false,
                            module: None,
                            kind: FrameKind::Go,
                        };
                        (a, vec![frame])
                    })
                    .collect(),
                ..Symbols::default()
            }
        }
    }

    fn screen(width: u16, height: u16, ui: &UiState) -> String {
        let mut model = TopModel::default();
        let mut profile = crate::aggregate::Profile::default();
        for (frames, state, n) in [
            (&[1u64, 9][..], GoroutineState::Running, 60),
            (&[2, 9], GoroutineState::Syscall, 40),
        ] {
            for _ in 0..n {
                profile.counts.total += 1;
                profile.add(&Sample::of_goroutine(frames, frames[0], state));
            }
        }
        model.refresh(
            &profile,
            &mut Names,
            RefreshFacts {
                elapsed: Duration::from_secs(1),
                ..Default::default()
            },
        );
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, &model, ui)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn ui() -> UiState {
        UiState {
            sort: SortColumn::default(),
            states: crate::top::model::StateView::default(),
            paused: false,
            help: false,
            pid: 42,
            binary: "/x/demo".into(),
            go_version: Some("go1.27.3".into()),
            frequency_hz: 99,
            filter: None,
            warnings: vec![],
            goroutines_note: Some("n/a (PIE binary)"),
        }
    }

    #[test]
    fn fits_80x24_with_every_part() {
        let text = screen(80, 24, &ui());
        for needle in [
            "stacksampler top  pid 42 demo (go1.27.3)  99 Hz",
            "lost 0 (0 total)",
            "goroutines n/a (PIE binary)",
            "states running 60%",
            "syscall 40%",
            "findings (0)",
            "deepest stacks",
            "1%Own",
            "4TotalTime",
            "60.0%",
            "main.hotLoop",
            "syscall.read",
            "q quit",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        // The hottest function is the first row of the table.
        let hot = text.find("main.hotLoop").unwrap();
        assert!(hot < text.find("syscall.read").unwrap(), "{text}");
    }

    #[test]
    fn keys_change_what_is_drawn() {
        let mut ui = ui();
        ui.apply(Key::CycleState);
        ui.apply(Key::CycleState);
        let text = screen(100, 30, &ui);
        assert!(text.contains("states: syscall"), "{text}");
        let table = &text[text.find("Function").unwrap()..];
        assert!(!table.contains("main.hotLoop"), "{text}");
        ui.apply(Key::Pause);
        ui.apply(Key::Help);
        let text = screen(100, 30, &ui);
        assert!(text.contains("PAUSED") && text.contains(" help "), "{text}");
    }

    #[test]
    fn bar_segments_fill_the_width() {
        let counts = vec![
            (GoroutineState::Running, 1),
            (GoroutineState::Syscall, 1),
            (GoroutineState::Waiting, 1),
        ];
        let spans = bar_segments(&counts, 20);
        let width: usize = spans.iter().map(|s| s.content.chars().count()).sum();
        assert_eq!(width, 20);
        assert!(spans[1].content.starts_with("syscall"));
        let tiny = bar_segments(
            &vec![(GoroutineState::Running, 1000), (GoroutineState::Idle, 1)],
            10,
        );
        assert_eq!(tiny.len(), 2);
        assert!(tiny.iter().all(|s| !s.content.is_empty()));
    }
}
