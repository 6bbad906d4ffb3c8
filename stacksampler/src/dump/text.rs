//! The dump as Go prints it: `goroutine?debug=2` (one block per goroutine) and `debug=1`
//! (identical stacks grouped, most common first), so tools that parse Go's dumps parse these.
//!
//! Differences from Go's own output, all forced by reading from outside: arguments are not
//! printed (every function line ends in `(...)`, as Go prints inlined calls); running goroutines
//! show `goroutine running on other thread; stack unavailable`, as Go's crash tracebacks do; a
//! goroutine that kept changing while it was read gets `, changed during read` in its header;
//! the grouped form keys groups by state too and prints it on a `# state:` line.

use std::{collections::HashMap, io::Write};

use crate::report::text::printable;

use super::{CreatedBy, Dump, DumpFrame, Goroutine, GroupKey, StackSource};

/// Nanoseconds in the unit Go's header counts waits in.
const NS_PER_MINUTE: u64 = 60_000_000_000;
/// The only runtime frame Go shows in the middle of a stack.
const GOPANIC: &str = "runtime.gopanic";
/// Package prefix of the runtime, whose unexported functions Go's tracebacks hide.
const RUNTIME_PREFIX: &str = "runtime.";
/// The outermost frame of every goroutine, hidden by Go everywhere.
const GOEXIT: &str = "runtime.goexit";

/// Which goroutines to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// Also the runtime's own goroutines (Go's dumps hide them).
    pub system: bool,
}

/// Whether Go's traceback (at the default `GOTRACEBACK` level) shows a frame of `name`.
pub fn shows_frame(name: &str, first: bool) -> bool {
    if name == GOPANIC && !first {
        return true;
    }
    name.contains('.') && (!name.starts_with(RUNTIME_PREFIX) || is_exported_runtime(name))
}

/// `runtime.Foo` or `runtime.(*T).Foo` with an exported name.
fn is_exported_runtime(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(RUNTIME_PREFIX) else {
        return false;
    };
    let rest = rest.trim_start_matches("(*").trim_start_matches('(');
    rest.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

fn listed(dump: &Dump, options: TextOptions) -> impl Iterator<Item = &Goroutine> {
    dump.goroutines
        .iter()
        .filter(move |g| options.system || !g.system)
}

/// The header's bracket: status, scan, minutes waited, thread lock, read consistency.
pub fn header_status(g: &Goroutine) -> String {
    let mut s = g.status_text.clone();
    if g.scan {
        s.push_str(" (scan)");
    }
    if let Some(minutes) = g.waiting_ns.map(|ns| ns / NS_PER_MINUTE)
        && minutes >= 1
    {
        s.push_str(&format!(", {minutes} minutes"));
    }
    if g.locked_to_thread {
        s.push_str(", locked to thread");
    }
    if g.inconsistent {
        s.push_str(", changed during read");
    }
    s
}

/// A source file for the text (escaped: names and paths come from the target).
fn file_text(file: Option<&str>) -> std::borrow::Cow<'_, str> {
    printable(file.unwrap_or("?"))
}

fn write_frame(out: &mut dyn Write, f: &DumpFrame) -> std::io::Result<()> {
    writeln!(out, "{}(...)", printable(&f.function))?;
    write!(
        out,
        "\t{}:{}",
        file_text(f.file.as_deref()),
        f.line.unwrap_or(0)
    )?;
    match f.offset {
        Some(off) if off > 0 => writeln!(out, " +{off:#x}"),
        _ => writeln!(out),
    }
}

fn write_created_by(out: &mut dyn Write, c: &CreatedBy) -> std::io::Result<()> {
    write!(out, "created by {}", printable(&c.function))?;
    if let Some(parent) = c.parent_goid {
        write!(out, " in goroutine {parent}")?;
    }
    write!(
        out,
        "\n\t{}:{}",
        file_text(c.file.as_deref()),
        c.line.unwrap_or(0)
    )?;
    match c.offset {
        Some(off) if off > 0 => writeln!(out, " +{off:#x}"),
        _ => writeln!(out),
    }
}

/// The frames Go would print for `frames` (hidden runtime frames dropped).
pub fn shown<'a>(frames: impl Iterator<Item = &'a DumpFrame>) -> Vec<&'a DumpFrame> {
    frames
        .enumerate()
        .filter(|(i, f)| !f.wrapper && shows_frame(&f.function, *i == 0))
        .map(|(_, f)| f)
        .collect()
}

/// One goroutine's block in `debug=2` form.
pub fn write_goroutine(out: &mut dyn Write, g: &Goroutine) -> std::io::Result<()> {
    writeln!(out, "goroutine {} [{}]:", g.goid, header_status(g))?;
    match g.stack.source {
        StackSource::NotCaptured => {
            writeln!(
                out,
                "\tgoroutine running on other thread; stack unavailable"
            )?;
        }
        StackSource::Unreadable => writeln!(out, "\tgoroutine stack unreadable")?,
        StackSource::Sched | StackSource::Syscall => {
            for f in shown(g.stack.frames.iter()) {
                write_frame(out, f)?;
            }
            if g.stack.elided > 0 || !g.stack.tail.is_empty() {
                writeln!(out, "...{} frames elided...", g.stack.elided)?;
                for f in g
                    .stack
                    .tail
                    .iter()
                    .filter(|f| !f.wrapper && shows_frame(&f.function, false))
                {
                    write_frame(out, f)?;
                }
            }
        }
    }
    if let Some(c) = &g.created_by
        && g.goid != 1
        && shows_frame(&c.function, false)
    {
        write_created_by(out, c)?;
    }
    Ok(())
}

/// Every goroutine in `debug=2` form.
pub fn write_text(dump: &Dump, options: TextOptions, out: &mut dyn Write) -> std::io::Result<()> {
    for (i, g) in listed(dump, options).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        write_goroutine(out, g)?;
    }
    Ok(())
}

/// Goroutines with one stack, state and label set.
struct Group<'a> {
    first: &'a Goroutine,
    count: u64,
}

/// Identical stacks grouped, in `debug=1` form, most common first.
pub fn write_grouped(
    dump: &Dump,
    options: TextOptions,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut index: HashMap<GroupKey<'_>, usize> = HashMap::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut total = 0;
    for g in listed(dump, options) {
        total += 1;
        let key = g.group_key();
        match index.get(&key) {
            Some(&i) => groups[i].count += 1,
            None => {
                index.insert(key, groups.len());
                groups.push(Group { first: g, count: 1 });
            }
        }
    }
    // Stable: equal counts keep the order of first appearance.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    writeln!(out, "goroutine profile: total {total}")?;
    for group in groups {
        let g = group.first;
        let pcs = g.physical_pcs();
        write!(out, "{} @", group.count)?;
        for pc in &pcs {
            write!(out, " {pc:#x}")?;
        }
        writeln!(out)?;
        if !g.labels.is_empty() {
            let labels: Vec<String> = g
                .labels
                .iter()
                .map(|(k, v)| format!("{k:?}:{v:?}"))
                .collect();
            writeln!(out, "# labels: {{{}}}", labels.join(", "))?;
        }
        writeln!(out, "# state: {}", header_status(g))?;
        if g.stack.source == StackSource::NotCaptured {
            writeln!(
                out,
                "#\tgoroutine running on other thread; stack unavailable"
            )?;
        }
        // Leading runtime frames are hidden, unless nothing else would be shown.
        let frames: Vec<&DumpFrame> = g
            .stack
            .all_frames()
            .filter(|f| &*f.function != GOEXIT)
            .collect();
        let skip = frames
            .iter()
            .position(|f| !f.function.starts_with(RUNTIME_PREFIX))
            .unwrap_or(0);
        for (i, f) in frames.iter().enumerate().skip(skip) {
            // Inlined frames share the offset of the real function's frame at their pc.
            let offset = frames[i..]
                .iter()
                .take_while(|o| o.pc == f.pc)
                .find_map(|o| o.offset)
                .unwrap_or(0);
            let at = if offset == 0 { f.pc } else { f.pc - 1 };
            writeln!(
                out,
                "#\t{at:#x}\t{}+{offset:#x}\t{}:{}",
                printable(&f.function),
                file_text(f.file.as_deref()),
                f.line.unwrap_or(0)
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dump::test_support::{dump, frame, goroutine},
        goruntime::state::GoroutineState,
    };

    fn parked() -> Vec<DumpFrame> {
        vec![
            frame("runtime.gopark", 435, 0x1100, Some(0xce), false),
            frame("runtime.chanrecv1", 506, 0x1200, Some(0x12), false),
            frame("main.recv", 20, 0x1300, None, true),
            frame("main.worker", 25, 0x1300, Some(0x25), false),
            frame("runtime.goexit", 1700, 0x1400, Some(0x1), false),
        ]
    }

    #[test]
    fn prints_goroutines_as_go_does() {
        let mut text = Vec::new();
        write_text(
            &dump(vec![goroutine(18, parked())]),
            TextOptions::default(),
            &mut text,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "goroutine 18 [chan receive, 3 minutes, locked to thread]:\n\
             main.recv(...)\n\t/src/main.go:20\n\
             main.worker(...)\n\t/src/main.go:25 +0x25\n\
             created by main.main in goroutine 1\n\t/src/main.go:40 +0x65\n"
        );
    }

    #[test]
    fn groups_identical_stacks_most_common_first() {
        let mut lone = goroutine(19, vec![frame("main.other", 7, 0x1500, Some(0x5), false)]);
        lone.labels.clear();
        let d = dump(vec![lone, goroutine(20, parked()), goroutine(21, parked())]);
        let mut text = Vec::new();
        write_grouped(&d, TextOptions::default(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with(
                "goroutine profile: total 3\n\
                 2 @ 0x1100 0x1200 0x1300 0x1400\n\
                 # labels: {\"k\":\"v\"}\n\
                 # state: chan receive, 3 minutes, locked to thread\n\
                 #\t0x12ff\tmain.recv+0x25\t/src/main.go:20\n\
                 #\t0x12ff\tmain.worker+0x25\t/src/main.go:25\n\n\
                 1 @ 0x1500\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn running_goroutines_have_no_stack_and_system_ones_are_hidden() {
        let mut running = goroutine(5, Vec::new());
        running.state = GoroutineState::Running;
        running.status_text = "running".into();
        running.waiting_ns = None;
        running.locked_to_thread = false;
        running.stack.source = StackSource::NotCaptured;
        let mut system = goroutine(2, parked());
        system.system = true;
        let d = dump(vec![system, running]);
        let mut text = Vec::new();
        write_text(&d, TextOptions::default(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with(
            "goroutine 5 [running]:\n\tgoroutine running on other thread; stack unavailable\n"
        ));
        assert!(!text.contains("goroutine 2 "));
        let mut all = Vec::new();
        write_text(&d, TextOptions { system: true }, &mut all).unwrap();
        assert!(String::from_utf8(all).unwrap().contains("goroutine 2 ["));
    }

    #[test]
    fn hides_runtime_frames_as_go_does() {
        assert!(!shows_frame("runtime.gopark", true));
        assert!(!shows_frame("runtime.chanrecv1", false));
        assert!(shows_frame("runtime.Gosched", false));
        assert!(shows_frame("runtime.(*Func).Name", false));
        assert!(shows_frame("runtime.gopanic", false));
        assert!(!shows_frame("runtime.gopanic", true));
        assert!(shows_frame("runtime/pprof.Do", false));
        assert!(shows_frame("main.main", true));
        assert!(!shows_frame("nodot", false));
    }
}
