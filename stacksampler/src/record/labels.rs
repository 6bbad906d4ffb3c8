//! Goroutine pprof labels of samples, decoded in user space as samples arrive.
//!
//! The kernel program records, per sample, `g.labels` and the word it points at
//! ([`LabelRef`]). [`LabelResolver`] decodes the label set behind the pointer from
//! `/proc/PID/mem` with [`goruntime::labels::read_labels`] and caches it by that reference.
//!
//! Why this is exact in practice: label sets are immutable once built (every `pprof.WithLabels`
//! builds a new one), so a pointer names one content for as long as the set is alive. The race
//! left is a set that is freed and whose memory is reused between the sample and the moment user
//! space reads it (a few milliseconds later; a cached reference could be reused much later). The
//! word the kernel saw at the sample guards against it: the resolver re-reads that word before
//! trusting a fresh decode, and a reused address almost always holds a different word (a new
//! backing array or `hmap`). A sample whose set changed is left without labels and counted in
//! [`LabelStats::stale`]. A goroutine that changes its labels between two samples is not a race:
//! each sample carries the pointer it had when it was taken.

use std::{collections::HashMap, fs::File, os::unix::fs::FileExt};

use crate::{
    goruntime::{
        GoVersion,
        labels::{LabelError, ReadMemory, read_labels},
    },
    sample::{LabelRef, LabelSet, Sample},
};

/// Most distinct label references cached; past it the cache starts over (label sets of a
/// long-running server come and go).
const MAX_CACHED_SETS: usize = 4096;

/// Reads a process's memory through `/proc/PID/mem`.
pub struct ProcMem(File);

impl ProcMem {
    /// Opens `/proc/PID/mem` (needs ptrace access: root, or the same user without Yama limits).
    pub fn open(pid: u32) -> std::io::Result<Self> {
        File::open(format!("/proc/{pid}/mem")).map(Self)
    }
}

impl ReadMemory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        self.0.read_exact_at(buf, addr).ok()
    }
}

/// What the resolver did, for `--verbose` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelStats {
    /// Samples that carried a label reference.
    pub referenced: u64,
    /// Label sets decoded from memory (cache misses).
    pub decoded: u64,
    /// Samples whose set had changed (freed and reused) before it could be read.
    pub stale: u64,
    /// Samples whose set could not be read or decoded.
    pub failed: u64,
}

/// Decodes and caches goroutine label sets of one process.
pub struct LabelResolver {
    version: GoVersion,
    mem: Box<dyn ReadMemory + Send>,
    cache: HashMap<LabelRef, LabelSet>,
    /// The last decode error, for one warning at the end of a run.
    pub last_error: Option<LabelError>,
    pub stats: LabelStats,
}

impl LabelResolver {
    /// A resolver for a process running a binary of Go `version`, reading through `mem`.
    pub fn new(version: GoVersion, mem: Box<dyn ReadMemory + Send>) -> Self {
        Self {
            version,
            mem,
            cache: HashMap::new(),
            last_error: None,
            stats: LabelStats::default(),
        }
    }

    /// Fills `sample.labels.set` from the sample's label reference, if it has one.
    pub fn resolve(&mut self, sample: &mut Sample) {
        let Some(reference) = sample.labels.raw else {
            return;
        };
        self.stats.referenced += 1;
        sample.labels.set = self.lookup(reference);
    }

    fn lookup(&mut self, reference: LabelRef) -> Option<LabelSet> {
        if let Some(set) = self.cache.get(&reference) {
            return Some(set.clone());
        }
        // The word the kernel saw must still be there, or the set was replaced since.
        let mut word = [0u8; 8];
        if self.mem.read(reference.ptr, &mut word).is_none() {
            self.stats.failed += 1;
            self.last_error = Some(LabelError::Unreadable(reference.ptr));
            return None;
        }
        if u64::from_le_bytes(word) != reference.word {
            self.stats.stale += 1;
            return None;
        }
        match read_labels(&self.version, reference.ptr, self.mem.as_ref()) {
            Ok(pairs) => {
                self.stats.decoded += 1;
                let set: LabelSet = pairs.into();
                if self.cache.len() >= MAX_CACHED_SETS {
                    self.cache.clear();
                }
                self.cache.insert(reference, set.clone());
                Some(set)
            }
            Err(e) => {
                self.stats.failed += 1;
                self.last_error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::sample::SampleLabels;

    /// Sparse memory shared with the test so it can be changed under the resolver.
    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<BTreeMap<u64, u8>>>);

    impl Mem {
        fn put(&self, addr: u64, bytes: &[u8]) {
            let mut m = self.0.lock().unwrap();
            for (i, b) in bytes.iter().enumerate() {
                m.insert(addr + i as u64, *b);
            }
        }
        fn put_u64(&self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
        fn put_string(&self, header: u64, data: u64, text: &str) {
            self.put(data, text.as_bytes());
            self.put_u64(header, data);
            self.put_u64(header + 8, text.len() as u64);
        }
    }

    impl ReadMemory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
            let m = self.0.lock().unwrap();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *m.get(&(addr + i as u64))?;
            }
            Some(())
        }
    }

    fn sample_with(reference: Option<LabelRef>) -> Sample {
        Sample {
            goroutine: None,
            frames: vec![],
            labels: SampleLabels {
                raw: reference,
                set: None,
            },
            ..Default::default()
        }
    }

    #[test]
    fn resolves_caches_and_detects_reuse() {
        let mem = Mem::default();
        // Go 1.24+ slice form: labelMap at 0x1000 -> list data 0x2000, one label.
        mem.put_u64(0x1000, 0x2000);
        mem.put_u64(0x1008, 1);
        mem.put_string(0x2000, 0x3000, "req");
        mem.put_string(0x2010, 0x3100, "42");
        let mut r = LabelResolver::new(GoVersion::new(1, 27, 0), Box::new(mem.clone()));
        let reference = LabelRef {
            ptr: 0x1000,
            word: 0x2000,
        };
        let mut s = sample_with(Some(reference));
        r.resolve(&mut s);
        assert_eq!(s.labels.get("req"), Some("42"));
        assert_eq!(
            crate::sample::format_labels(s.labels.set.as_deref().unwrap()),
            "req=42"
        );
        // Cached: a second sample does not read memory.
        let mut s2 = sample_with(Some(reference));
        r.resolve(&mut s2);
        assert_eq!(r.stats.decoded, 1);
        assert_eq!(s2.labels.get("req"), Some("42"));
        // The set at 0x1000 was freed and reused: the kernel saw another word.
        mem.put_u64(0x1000, 0x5000);
        let mut stale = sample_with(Some(LabelRef {
            ptr: 0x1000,
            word: 0x4000,
        }));
        r.resolve(&mut stale);
        assert_eq!(stale.labels.set, None);
        assert_eq!(r.stats.stale, 1);
        // No reference, nothing to do.
        let mut none = sample_with(None);
        r.resolve(&mut none);
        assert_eq!(r.stats.referenced, 3);
        // Unreadable memory is a failure, not a panic.
        let mut bad = sample_with(Some(LabelRef {
            ptr: 0x9000,
            word: 1,
        }));
        r.resolve(&mut bad);
        assert_eq!((r.stats.failed, bad.labels.set.clone()), (1, None));
    }
}
