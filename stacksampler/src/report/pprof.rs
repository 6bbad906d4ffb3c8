//! pprof output: a gzipped `perftools.profiles.Profile` protobuf that `go tool pprof` reads.
//!
//! - Sample types `samples/count` and `cpu/nanoseconds` (default `cpu`); period type
//!   `cpu/nanoseconds`, period `1e9 / frequency`, as Go's own CPU profiles. A `--wall` run adds
//!   `wall/nanoseconds` (the default there): wall rows have `[snapshots, 0, wall ns]`, CPU rows
//!   `[samples, cpu ns, 0]`, and every sample a `kind` label (`cpu`, `wall`).
//! - One sample per aggregated row (state, stack) with labels `state` (string), `goid` (numeric,
//!   one value per distinct goroutine, at most [`MAX_GOID_LABELS`]), `goroutines` (numeric,
//!   the count), `waitreason` (string: Go's name for it in the target's version, else the raw
//!   number; waiting rows) and `truncated`.
//! - One Location per address, its inlined frames in `line[]` innermost first; one Function per
//!   (name, file); one Mapping per mapping of the target's files that a sample is in (start,
//!   limit and file offset as `/proc/PID/maps` lists them, so backends can re-symbolize by
//!   build id and file offset), the target binary first, each with its build id.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use crate::{images::split_address, sample::SampleKind, symbolize::Frame};

use super::{RenderError, Renderer, Report, stack};

/// Most `goid` label values written per sample.
pub const MAX_GOID_LABELS: usize = 100;

/// The messages of pprof's `profile.proto` (github.com/google/pprof, `proto/profile.proto`,
/// package `perftools.profiles`), declared by hand with prost derives so the build needs no
/// `protoc`. Field numbers and types mirror the published file; string fields are indices into
/// `Profile::string_table`, whose entry 0 is `""`.
pub mod proto {
    /// `message Profile`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    /// `message ValueType`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// `message Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Innermost location first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// `message Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// `message Mapping`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// `message Location`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Innermost (most inlined) first.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    /// `message Line`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    /// `message Function`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Writes gzipped pprof.
#[derive(Clone, Copy, Debug, Default)]
pub struct PprofRenderer;

impl Renderer for PprofRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        let bytes = build(report).encode_to_vec();
        let mut gz = GzEncoder::new(out, Compression::default());
        gz.write_all(&bytes)?;
        gz.finish()?;
        Ok(())
    }
}

/// Interned strings: index 0 is `""`.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// One pprof Mapping: the target's mapping (range, file offset and build id from
/// `/proc/PID/maps` and the file), or the sampled range of a module the symbolizer had no
/// mapping of.
struct MappingInfo {
    id: u64,
    start: u64,
    limit: u64,
    file_offset: u64,
    build_id: Option<String>,
}

/// The profile message for `report` (not yet encoded).
pub fn build(report: &Report) -> proto::Profile {
    let mut strings = Strings::new();
    let run = &report.run;
    let period = 1_000_000_000 / run.frequency_hz.max(1) as i64;
    let cpu = strings.get("cpu");
    let nanoseconds = strings.get("nanoseconds");
    let mut sample_type = vec![
        proto::ValueType {
            r#type: strings.get("samples"),
            unit: strings.get("count"),
        },
        proto::ValueType {
            r#type: cpu,
            unit: nanoseconds,
        },
    ];
    // A `--wall` run: goroutine wall-clock time, the default view.
    let wall = report.profile.has_wall().then(|| {
        let wall = strings.get("wall");
        sample_type.push(proto::ValueType {
            r#type: wall,
            unit: nanoseconds,
        });
        wall
    });

    // Mappings: the target binary first (pprof takes the first as the main binary), then every
    // other mapping a frame names, by file name and address.
    let binary = run.binary.display().to_string();
    let addrs = report.profile.table.unique_addresses();
    let mut mappings: BTreeMap<(bool, String, u64), MappingInfo> = BTreeMap::new();
    let mut addr_mapping: HashMap<u64, (bool, String, u64)> = HashMap::new();
    for &addr in &addrs {
        let Some(module) = report
            .symbols
            .frames(addr)
            .iter()
            .find_map(|f| f.module.as_deref().map(str::to_owned))
        else {
            continue;
        };
        // The address in its own program image (see `images`: later images are tagged).
        let (image, real) = split_address(addr);
        let not_main = module != binary;
        let real_mapping = report
            .symbols
            .mappings
            .iter()
            .find(|m| m.contains(image, real) && *m.path == *module);
        match real_mapping {
            Some(m) => {
                let key = (not_main, module, m.start);
                mappings.entry(key.clone()).or_insert_with(|| MappingInfo {
                    id: 0,
                    start: m.start,
                    limit: m.limit,
                    file_offset: m.file_offset,
                    build_id: m.build_id.clone(),
                });
                addr_mapping.insert(addr, key);
            }
            // A module without its mapping (the kernel, a copied vdso): the sampled range.
            None => {
                let key = (not_main, module, 0);
                let info = mappings.entry(key.clone()).or_insert(MappingInfo {
                    id: 0,
                    start: real,
                    limit: real.saturating_add(1),
                    file_offset: 0,
                    build_id: None,
                });
                info.start = info.start.min(real);
                info.limit = info.limit.max(real.saturating_add(1));
                addr_mapping.insert(addr, key);
            }
        }
    }
    if !mappings.keys().any(|(not_main, _, _)| !not_main) {
        mappings.insert(
            (false, binary.clone(), 0),
            MappingInfo {
                id: 0,
                start: 0,
                limit: 0,
                file_offset: 0,
                build_id: None,
            },
        );
    }
    let mut mapping = Vec::new();
    for (i, ((_, name, _), info)) in mappings.iter_mut().enumerate() {
        info.id = i as u64 + 1;
        let build_id = if *name == binary {
            // Go's build id when the file has no GNU one.
            run.build_id.clone()
        } else {
            // A program the target exec'd during the run, else the file's own.
            run.execs
                .iter()
                .find(|e| e.binary.as_os_str() == name.as_str())
                .and_then(|e| e.build_id.clone())
                .or_else(|| info.build_id.clone())
        };
        let build_id = build_id.map_or(0, |b| strings.get(&b));
        mapping.push(proto::Mapping {
            id: info.id,
            memory_start: info.start,
            memory_limit: info.limit,
            file_offset: info.file_offset,
            filename: strings.get(name),
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
    }

    // Functions and one location per address.
    let mut function = Vec::new();
    let mut function_ids: HashMap<(Arc<str>, Option<Arc<str>>), u64> = HashMap::new();
    let mut location = Vec::with_capacity(addrs.len());
    let mut location_ids: HashMap<u64, u64> = HashMap::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let frames = report.symbols.frames(addr);
        let line = frames
            .iter()
            .map(|f| proto::Line {
                function_id: function_id(f, &mut function, &mut function_ids, &mut strings),
                line: f.line.map_or(0, i64::from),
                column: 0,
            })
            .collect();
        let mapping_id = addr_mapping
            .get(&addr)
            .and_then(|k| mappings.get(k))
            .map_or(0, |m| m.id);
        location.push(proto::Location {
            id,
            mapping_id,
            address: split_address(addr).1,
            line,
            is_folded: false,
        });
        location_ids.insert(addr, id);
    }

    // One sample per row.
    let key = |s: &mut Strings, k: &str| s.get(k);
    let mut sample = Vec::new();
    for row in report.profile.ranked() {
        let stats = row.stats;
        let location_id = report
            .profile
            .table
            .frames(row.key.stack)
            .iter()
            // Pseudo-frames (switch point, gap) have no location: pprof has no such concept.
            .filter(|a| !crate::markers::is_marker(**a))
            .map(|a| location_ids.get(a).copied().unwrap_or(0))
            .collect();
        let count = stats.count as i64;
        let mut label = vec![proto::Label {
            key: key(&mut strings, "state"),
            str: strings.get(row.key.state.name()),
            num: 0,
            num_unit: 0,
        }];
        if wall.is_some() {
            label.push(proto::Label {
                key: key(&mut strings, "kind"),
                str: strings.get(row.key.kind.name()),
                num: 0,
                num_unit: 0,
            });
        }
        let goid_key = key(&mut strings, "goid");
        label.extend(
            stats
                .goids
                .iter()
                .take(MAX_GOID_LABELS)
                .map(|&g| num_label(goid_key, g as i64)),
        );
        if !stats.goids.is_empty() {
            label.push(num_label(
                key(&mut strings, "goroutines"),
                stats.goids.len() as i64,
            ));
        }
        let wait_key = key(&mut strings, "waitreason");
        for &w in &stats.waitreasons {
            let name =
                stack::waitreason_name(report, w).map_or_else(|| w.to_string(), str::to_owned);
            label.push(proto::Label {
                key: wait_key,
                str: strings.get(&name),
                num: 0,
                num_unit: 0,
            });
        }
        // The goroutines' own pprof labels (`pprof.Do`), as `go tool pprof -tagfocus` uses them.
        for (k, v) in report.profile.label_set(row.key.labels) {
            label.push(proto::Label {
                key: key(&mut strings, k),
                str: strings.get(v),
                num: 0,
                num_unit: 0,
            });
        }
        if stats.truncated {
            label.push(proto::Label {
                key: key(&mut strings, "truncated"),
                str: strings.get("true"),
                num: 0,
                num_unit: 0,
            });
        }
        let value = match (wall, row.key.kind) {
            (None, _) => vec![count, count.saturating_mul(period)],
            (Some(_), SampleKind::Cpu) => vec![count, count.saturating_mul(period), 0],
            (Some(_), SampleKind::Wall) => vec![count, 0, stats.wall_ns as i64],
        };
        sample.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }

    let mut comment = vec![strings.get(&format!(
        "stacksampler: pid {} {}{}",
        run.pid,
        binary,
        run.go_version
            .as_deref()
            .map_or(String::new(), |v| format!(" ({v})"))
    ))];
    comment.extend(report.warnings.iter().map(|w| strings.get(&w.to_string())));

    let duration = Duration::from_secs_f64(run.duration_secs.max(0.0));
    let end = SystemTime::now();
    let start = end.checked_sub(duration).unwrap_or(end);
    let time_nanos = start
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    proto::Profile {
        sample_type,
        sample,
        mapping,
        location,
        function,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos,
        duration_nanos: duration.as_nanos() as i64,
        period_type: Some(proto::ValueType {
            r#type: cpu,
            unit: nanoseconds,
        }),
        period,
        comment,
        default_sample_type: wall.unwrap_or(cpu),
        doc_url: 0,
        string_table: strings.table,
    }
}

fn num_label(key: i64, num: i64) -> proto::Label {
    proto::Label {
        key,
        str: 0,
        num,
        num_unit: 0,
    }
}

/// The id of `f`'s Function, added on first use.
fn function_id(
    f: &Frame,
    functions: &mut Vec<proto::Function>,
    ids: &mut HashMap<(Arc<str>, Option<Arc<str>>), u64>,
    strings: &mut Strings,
) -> u64 {
    let k = (f.function.clone(), f.file.clone());
    if let Some(&id) = ids.get(&k) {
        return id;
    }
    let id = functions.len() as u64 + 1;
    let name = strings.get(&f.function);
    functions.push(proto::Function {
        id,
        name,
        system_name: name,
        filename: f.file.as_deref().map_or(0, |file| strings.get(file)),
        start_line: 0,
    });
    ids.insert(k, id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_interned_with_empty_first() {
        let mut s = Strings::new();
        assert_eq!(s.get(""), 0);
        let a = s.get("cpu");
        assert_eq!(s.get("cpu"), a);
        assert_eq!(s.table, ["", "cpu"]);
    }
}
