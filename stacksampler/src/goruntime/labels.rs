//! Goroutine profiler labels (`pprof.Do`, `pprof.SetGoroutineLabels`) as the runtime keeps them.
//!
//! `g.labels` is an `unsafe.Pointer` to a `runtime/pprof.labelMap`, whose representation changed:
//!
//! - Go 1.19-1.23: `type labelMap map[string]string`; `g.labels` points at a word holding the map
//!   (`*hmap`). The map is built once per `WithLabels` and never written again, so it is never
//!   mid-growth (`oldbuckets` nil): reading `2^B` buckets of 8 slots plus overflow chains is exact.
//! - Go 1.24+: `type labelMap struct { LabelSet }` with `LabelSet{ list []label }` (1.26+:
//!   `label.Set{ List []label.Label }`, same memory), a slice sorted by key of `{key, value string}`.
//!
//! The offsets below are from the DWARF of real builds (`runtime.hmap`, `bucket<string,string>`,
//! `runtime/pprof.label`); `docs/go-runtime.md` has the details. [`read_labels`] decodes a label
//! set through any [`ReadMemory`] (a `/proc/PID/mem` reader in user space).

use super::version::GoVersion;

/// Size of a Go string header (`data`, `len`).
const STRING_SIZE: u64 = 16;
/// Size of a Go slice header (`data`, `len`, `cap`).
const SLICE_LEN_OFFSET: u64 = 8;
/// Go 1.24+: size of one `label{key, value string}`.
const LABEL_SIZE: u64 = 2 * STRING_SIZE;
/// `runtime.hmap.count`.
const HMAP_COUNT: u64 = 0;
/// `runtime.hmap.B` (log2 of the bucket count).
const HMAP_B: u64 = 9;
/// `runtime.hmap.buckets`.
const HMAP_BUCKETS: u64 = 16;
/// `runtime.hmap.oldbuckets` (non-nil while the map grows).
const HMAP_OLDBUCKETS: u64 = 24;
/// Slots per map bucket (`abi.MapBucketCount`).
const BUCKET_SLOTS: u64 = 8;
/// `bucket<string,string>`: size, and offsets of `keys`, `values`, `overflow`.
const BUCKET_SIZE: u64 = 272;
const BUCKET_KEYS: u64 = 8;
const BUCKET_VALUES: u64 = 136;
const BUCKET_OVERFLOW: u64 = 264;
/// Smallest `tophash` of an occupied slot (smaller values mark empty or evacuated slots).
const MIN_TOPHASH: u8 = 5;
/// Most labels read from one set: real sets hold a handful; more means corrupt memory.
pub const MAX_LABELS: u64 = 64;
/// Longest label key or value read.
pub const MAX_LABEL_LEN: u64 = 4096;
/// Most buckets (including overflow buckets) visited in one map.
const MAX_BUCKETS: u64 = 64;

/// How a Go release represents a goroutine's label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelRepr {
    /// Go 1.19-1.23: pointer to a `map[string]string`.
    Map,
    /// Go 1.24+: pointer to a slice of `{key, value string}`, sorted by key.
    Slice,
}

/// The label representation of `version`, for releases stacksampler knows (1.19-1.27).
pub fn repr(version: &GoVersion) -> Option<LabelRepr> {
    match version.family() {
        (1, 19..=23) => Some(LabelRepr::Map),
        (1, 24..=27) => Some(LabelRepr::Slice),
        _ => None,
    }
}

/// Reads the target's memory.
pub trait ReadMemory {
    /// Fills `buf` from address `addr`; `None` if the range cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()>;
}

/// Why a label set could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    /// The Go release's label representation is unknown.
    #[error("no known goroutine label representation for {0}")]
    UnknownVersion(String),
    /// A read of the target's memory failed.
    #[error("cannot read target memory at {0:#x}")]
    Unreadable(u64),
    /// The data read is not a plausible label set.
    #[error("implausible goroutine label set: {0}")]
    Corrupt(&'static str),
}

fn read_u64(mem: &dyn ReadMemory, addr: u64) -> Result<u64, LabelError> {
    let mut buf = [0u8; 8];
    mem.read(addr, &mut buf)
        .ok_or(LabelError::Unreadable(addr))?;
    Ok(u64::from_le_bytes(buf))
}

fn read_u8(mem: &dyn ReadMemory, addr: u64) -> Result<u8, LabelError> {
    let mut buf = [0u8; 1];
    mem.read(addr, &mut buf)
        .ok_or(LabelError::Unreadable(addr))?;
    Ok(buf[0])
}

/// Reads the Go string whose header is at `addr`.
fn read_string(mem: &dyn ReadMemory, addr: u64) -> Result<String, LabelError> {
    let data = read_u64(mem, addr)?;
    let len = read_u64(mem, addr + 8)?;
    if len > MAX_LABEL_LEN {
        return Err(LabelError::Corrupt("label longer than MAX_LABEL_LEN"));
    }
    let mut buf = vec![0u8; len as usize];
    if len > 0 {
        mem.read(data, &mut buf)
            .ok_or(LabelError::Unreadable(data))?;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads the label set `g.labels` points at (`labels_ptr`, 0 for none) in a binary built by
/// `version`, as (key, value) pairs sorted by key. linux/amd64 and arm64 (64-bit little endian).
pub fn read_labels(
    version: &GoVersion,
    labels_ptr: u64,
    mem: &dyn ReadMemory,
) -> Result<Vec<(String, String)>, LabelError> {
    if labels_ptr == 0 {
        return Ok(Vec::new());
    }
    let mut labels =
        match repr(version).ok_or_else(|| LabelError::UnknownVersion(version.to_string()))? {
            LabelRepr::Slice => {
                let data = read_u64(mem, labels_ptr)?;
                let len = read_u64(mem, labels_ptr + SLICE_LEN_OFFSET)?;
                if len > MAX_LABELS {
                    return Err(LabelError::Corrupt("more than MAX_LABELS labels"));
                }
                (0..len)
                    .map(|i| {
                        let label = data + i * LABEL_SIZE;
                        Ok((
                            read_string(mem, label)?,
                            read_string(mem, label + STRING_SIZE)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, LabelError>>()?
            }
            LabelRepr::Map => read_map(mem, read_u64(mem, labels_ptr)?)?,
        };
    labels.sort();
    Ok(labels)
}

/// Reads a `map[string]string` whose `hmap` is at `hmap`.
fn read_map(mem: &dyn ReadMemory, hmap: u64) -> Result<Vec<(String, String)>, LabelError> {
    if hmap == 0 {
        return Ok(Vec::new());
    }
    let count = read_u64(mem, hmap + HMAP_COUNT)?;
    if count > MAX_LABELS {
        return Err(LabelError::Corrupt("more than MAX_LABELS labels"));
    }
    if read_u64(mem, hmap + HMAP_OLDBUCKETS)? != 0 {
        return Err(LabelError::Corrupt("label map is growing"));
    }
    let log2_buckets = read_u8(mem, hmap + HMAP_B)?;
    let buckets = read_u64(mem, hmap + HMAP_BUCKETS)?;
    if 1u64
        .checked_shl(u32::from(log2_buckets))
        .is_none_or(|n| n > MAX_BUCKETS)
    {
        return Err(LabelError::Corrupt("too many map buckets"));
    }
    let mut out = Vec::new();
    let mut visited = 0;
    for index in 0..(1u64 << log2_buckets) {
        let mut bucket = buckets + index * BUCKET_SIZE;
        while bucket != 0 {
            visited += 1;
            if visited > MAX_BUCKETS {
                return Err(LabelError::Corrupt("overflow chain too long"));
            }
            let mut tophash = [0u8; BUCKET_SLOTS as usize];
            mem.read(bucket, &mut tophash)
                .ok_or(LabelError::Unreadable(bucket))?;
            for (slot, &top) in (0u64..).zip(tophash.iter()) {
                if top >= MIN_TOPHASH {
                    let key = read_string(mem, bucket + BUCKET_KEYS + slot * STRING_SIZE)?;
                    let value = read_string(mem, bucket + BUCKET_VALUES + slot * STRING_SIZE)?;
                    out.push((key, value));
                }
            }
            bucket = read_u64(mem, bucket + BUCKET_OVERFLOW)?;
        }
    }
    if out.len() as u64 != count {
        return Err(LabelError::Corrupt("map count disagrees with its buckets"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Sparse little-endian memory for synthetic label sets.
    #[derive(Default)]
    struct Mem(BTreeMap<u64, u8>);

    impl Mem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
        /// Writes a string header at `header` for text stored at `data`.
        fn put_string(&mut self, header: u64, data: u64, text: &str) {
            self.put(data, text.as_bytes());
            self.put_u64(header, data);
            self.put_u64(header + 8, text.len() as u64);
        }
    }

    impl ReadMemory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.0.get(&(addr + i as u64))?;
            }
            Some(())
        }
    }

    fn go(minor: u32) -> GoVersion {
        GoVersion::new(1, minor, 0)
    }

    #[test]
    fn reads_slice_labels() {
        let mut mem = Mem::default();
        mem.put_u64(0x1000, 0x2000); // list.data
        mem.put_u64(0x1008, 2); // list.len
        mem.put_string(0x2000, 0x3000, "req");
        mem.put_string(0x2010, 0x3100, "42");
        mem.put_string(0x2020, 0x3200, "user");
        mem.put_string(0x2030, 0x3300, "");
        let labels = read_labels(&go(24), 0x1000, &mem).unwrap();
        assert_eq!(
            labels,
            [("req".into(), "42".into()), ("user".into(), "".into())]
        );
        assert_eq!(read_labels(&go(27), 0, &mem), Ok(vec![]));
    }

    #[test]
    fn reads_map_labels() {
        let mut mem = Mem::default();
        mem.put_u64(0x1000, 0x4000); // *labelMap -> hmap
        mem.put_u64(0x4000 + HMAP_COUNT, 2);
        mem.put(0x4000 + HMAP_B, &[0]);
        mem.put_u64(0x4000 + HMAP_BUCKETS, 0x5000);
        mem.put_u64(0x4000 + HMAP_OLDBUCKETS, 0);
        mem.put(0x5000, &[0, 9, 1, 0, 200, 0, 0, 0]);
        mem.put_string(0x5000 + BUCKET_KEYS + 16, 0x6000, "req");
        mem.put_string(0x5000 + BUCKET_VALUES + 16, 0x6100, "42");
        mem.put_string(0x5000 + BUCKET_KEYS + 4 * 16, 0x6200, "a");
        mem.put_string(0x5000 + BUCKET_VALUES + 4 * 16, 0x6300, "b");
        mem.put_u64(0x5000 + BUCKET_OVERFLOW, 0);
        let labels = read_labels(&go(21), 0x1000, &mem).unwrap();
        assert_eq!(
            labels,
            [("a".into(), "b".into()), ("req".into(), "42".into())]
        );
    }

    #[test]
    fn bad_memory_is_an_error() {
        let mut mem = Mem::default();
        assert_eq!(
            read_labels(&go(24), 0x1000, &mem),
            Err(LabelError::Unreadable(0x1000))
        );
        mem.put_u64(0x1000, 0x2000);
        mem.put_u64(0x1008, 1 << 40);
        assert!(matches!(
            read_labels(&go(25), 0x1000, &mem),
            Err(LabelError::Corrupt(_))
        ));
        assert!(matches!(
            read_labels(&go(99), 0x1000, &mem),
            Err(LabelError::UnknownVersion(_))
        ));
    }
}
