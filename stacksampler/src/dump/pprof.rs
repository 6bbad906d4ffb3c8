//! The dump as a goroutine profile (gzipped `profile.proto`, as Go's own
//! `/debug/pprof/goroutine`): sample type `goroutine/count`, one sample per identical (stack,
//! status, labels) with the number of goroutines, string labels `state` (Go's
//! status text) and `wait_reason`, plus the goroutines' pprof labels. Running goroutines, whose
//! stacks are not captured, are one sample each group with no locations.

use std::{collections::HashMap, io::Write, sync::Arc};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use crate::report::pprof::proto;

use super::{Dump, DumpFrame, Goroutine, GroupKey};

/// Interned strings, entry 0 `""`.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn get(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Builds the profile.
pub fn build(dump: &Dump) -> proto::Profile {
    let mut strings = Strings::default();
    let mut profile = proto::Profile {
        sample_type: vec![proto::ValueType {
            r#type: strings.get("goroutine"),
            unit: strings.get("count"),
        }],
        period_type: Some(proto::ValueType {
            r#type: strings.get("goroutine"),
            unit: strings.get("count"),
        }),
        period: 1,
        time_nanos: (dump.time_unix_s * 1e9) as i64,
        ..Default::default()
    };
    let mut locations: HashMap<u64, u64> = HashMap::new();
    let mut functions: HashMap<(Arc<str>, Option<Arc<str>>), u64> = HashMap::new();
    let mut samples: HashMap<GroupKey<'_>, usize> = HashMap::new();
    for g in &dump.goroutines {
        let key = g.group_key();
        let pcs = key.pcs.clone();
        if let Some(&i) = samples.get(&key) {
            profile.sample[i].value[0] += 1;
            continue;
        }
        let location_id: Vec<u64> = pcs
            .iter()
            .map(|&pc| {
                let next = locations.len() as u64 + 1;
                *locations.entry(pc).or_insert_with(|| {
                    let lines = frames_at(g, pc)
                        .map(|f| {
                            let key = (f.function.clone(), f.file.clone());
                            let next_fn = functions.len() as u64 + 1;
                            let function_id = *functions.entry(key).or_insert_with(|| {
                                profile.function.push(proto::Function {
                                    id: next_fn,
                                    name: strings.get(&f.function),
                                    system_name: strings.get(&f.function),
                                    filename: strings.get(f.file.as_deref().unwrap_or("")),
                                    start_line: 0,
                                });
                                next_fn
                            });
                            proto::Line {
                                function_id,
                                line: i64::from(f.line.unwrap_or(0)),
                                column: 0,
                            }
                        })
                        .collect();
                    profile.location.push(proto::Location {
                        id: next,
                        mapping_id: 0,
                        address: pc.saturating_sub(1),
                        line: lines,
                        is_folded: false,
                    });
                    next
                })
            })
            .collect();
        let mut label = vec![string_label(&mut strings, "state", &g.status_text)];
        if let Some(reason) = &g.wait_reason {
            label.push(string_label(&mut strings, "wait_reason", reason));
        }
        for (k, v) in &g.labels {
            label.push(string_label(&mut strings, k, v));
        }
        samples.insert(key, profile.sample.len());
        profile.sample.push(proto::Sample {
            location_id,
            value: vec![1],
            label,
        });
    }
    profile.string_table = strings.table;
    profile
}

/// The frames (inlined first) of the call at `pc` in `g`'s stack.
fn frames_at(g: &Goroutine, pc: u64) -> impl Iterator<Item = &DumpFrame> {
    g.stack
        .all_frames()
        .skip_while(move |f| f.pc != pc)
        .take_while(move |f| f.pc == pc)
}

fn string_label(strings: &mut Strings, key: &str, value: &str) -> proto::Label {
    proto::Label {
        key: strings.get(key),
        str: strings.get(value),
        num: 0,
        num_unit: 0,
    }
}

/// Writes the gzipped profile.
pub fn write(dump: &Dump, out: &mut dyn Write) -> std::io::Result<()> {
    let bytes = build(dump).encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}
