//! What a dump keeps and how it is written: the goroutine filter (`--state`, `--goid`,
//! `--label`) and the formats (Go's `debug=2` and `debug=1` text, json, a goroutine profile).

use std::io::Write;

use crate::{goruntime::state::StateSet, sample::LabelFilter};

use super::{Dump, Goroutine, pprof, text};

/// Formats of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// Go's `goroutine?debug=2` text (or `debug=1` when grouped).
    Text,
    /// docs/dump.md.
    Json,
    /// A goroutine profile for `go tool pprof`.
    Pprof,
}

impl DumpFormat {
    /// Every format with its command-line name.
    pub const ALL: [(&'static str, DumpFormat); 3] = [
        ("text", DumpFormat::Text),
        ("json", DumpFormat::Json),
        ("pprof", DumpFormat::Pprof),
    ];
}

impl std::str::FromStr for DumpFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown dump format {s:?} (text, json or pprof)"))
    }
}

/// Which goroutines a dump keeps: all of `--state`, `--goid` and every `--label` must match.
#[derive(Clone, Debug, Default)]
pub struct GoroutineFilter {
    pub state: Option<StateSet>,
    pub goid: Option<u64>,
    pub labels: Vec<LabelFilter>,
}

impl GoroutineFilter {
    /// Whether `g` passes.
    pub fn keeps(&self, g: &Goroutine) -> bool {
        self.state.is_none_or(|s| s.contains(g.state))
            && self.goid.is_none_or(|id| id == g.goid)
            && self
                .labels
                .iter()
                .all(|f| g.labels.iter().any(|(k, v)| *k == f.key && *v == f.value))
    }
}

/// How a dump is written.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    pub format: DumpFormat,
    /// Text: group identical stacks (Go's `debug=1`).
    pub group: bool,
    /// Text: list the runtime's own goroutines too.
    pub system: bool,
}

/// Writes `dump` as `options` say.
pub fn write(dump: &Dump, options: WriteOptions, out: &mut dyn Write) -> std::io::Result<()> {
    let text_options = text::TextOptions {
        system: options.system,
    };
    match (options.format, options.group) {
        (DumpFormat::Text, false) => text::write_text(dump, text_options, out),
        (DumpFormat::Text, true) => text::write_grouped(dump, text_options, out),
        (DumpFormat::Json, _) => {
            serde_json::to_writer(&mut *out, dump).map_err(std::io::Error::from)?;
            writeln!(out)
        }
        (DumpFormat::Pprof, _) => pprof::write(dump, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_state_goid_and_label() {
        let filter = GoroutineFilter {
            state: Some("waiting".parse().unwrap()),
            goid: None,
            labels: vec!["k=v".parse().unwrap()],
        };
        let mut g = crate::dump::test_support::goroutine(1, Vec::new());
        g.labels.clear();
        assert!(!filter.keeps(&g));
        g.labels.push(("k".into(), "v".into()));
        assert!(filter.keeps(&g));
        g.state = crate::goruntime::state::GoroutineState::Running;
        assert!(!filter.keeps(&g));
        let by_id = GoroutineFilter {
            goid: Some(3),
            ..Default::default()
        };
        g.goid = 3;
        assert!(by_id.keeps(&g));
        g.goid = 4;
        assert!(!by_id.keeps(&g));
    }

    #[test]
    fn formats_by_name() {
        assert_eq!("pprof".parse::<DumpFormat>(), Ok(DumpFormat::Pprof));
        assert!("svg".parse::<DumpFormat>().is_err());
    }
}
