//! Pc-value tables: runs of (value, end offset) decoded from zig-zag varint pairs, and lookups
//! of the value at an offset.

use super::*;

/// One run of a pc-value table: `value` holds up to `end` (offset from the function entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PcValueRun {
    pub(super) end: u32,
    pub(super) value: i32,
}

/// "No value here" (the table ended, or is absent). Every use of a value treats `i32::MIN`
/// exactly like an absent one (no file index, no line, no inline index), so the sentinel loses
/// nothing.
pub(super) const NO_VALUE: i32 = i32::MIN;

/// Reads the unsigned varint at `*p` of `data`, advancing `*p` (at most 5 bytes; bits past 32
/// are dropped, as the runtime's `readvarint` does).
#[inline(always)]
pub(super) fn read_uvarint(data: &[u8], p: &mut usize) -> Option<u32> {
    let b = *data.get(*p)?;
    if b < 0x80 {
        *p += 1;
        return Some(u32::from(b));
    }
    let mut v = u32::from(b & 0x7f);
    let mut shift = 7u32;
    for i in 1..5 {
        let b = *data.get(*p + i)?;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            *p += i + 1;
            return Some(v);
        }
        shift += 7;
    }
    None
}

/// A streaming reader of one pc-value table: yields its runs in order, without storing them.
pub(super) struct PcValueReader<'a> {
    /// `pctab` and everything after it; the table starts at `p`.
    data: &'a [u8],
    p: usize,
    quantum: u64,
    value: i32,
    pc_off: u64,
    func_len: u32,
    /// Pairs left before the table is treated as corrupt.
    budget: usize,
    first: bool,
    done: bool,
}

impl<'a> PcValueReader<'a> {
    /// The table at `table` (offset into `pctab`; 0 means absent) of a function of `func_len`
    /// bytes.
    pub(super) fn new(tab: &'a GoPclnTab, table: u32, func_len: u32) -> Self {
        let data = tab.data.get(tab.pctab..).unwrap_or_default();
        let p = table as usize;
        Self {
            data,
            p,
            quantum: tab.quantum,
            value: -1,
            pc_off: 0,
            func_len,
            // Pairs that do not advance are rare; bound them so garbage cannot spin.
            budget: (func_len as usize)
                .saturating_add(1024)
                .min(MAX_PCVALUE_RUNS),
            first: true,
            done: table == 0 || p >= data.len(),
        }
    }

    /// The next run of positive length, up to the one covering the last byte of the function
    /// (lookups never go past it). Zero-length runs are skipped: no offset ever selects them.
    #[inline]
    pub(super) fn next_run(&mut self) -> Option<PcValueRun> {
        while !self.done {
            if self.budget == 0 {
                self.done = true;
                break;
            }
            self.budget -= 1;
            let mut p = self.p;
            let Some(uvdelta) = read_uvarint(self.data, &mut p) else {
                self.done = true;
                break;
            };
            if uvdelta == 0 && !self.first {
                self.done = true;
                break;
            }
            self.first = false;
            let Some(pcdelta) = read_uvarint(self.data, &mut p) else {
                self.done = true;
                break;
            };
            self.p = p;
            let delta = ((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32);
            self.value = self.value.wrapping_add(delta);
            let prev = self.pc_off;
            self.pc_off = self
                .pc_off
                .saturating_add(u64::from(pcdelta) * self.quantum);
            let Ok(end) = u32::try_from(self.pc_off) else {
                self.done = true;
                break;
            };
            if end >= self.func_len {
                self.done = true;
            }
            if self.pc_off > prev {
                return Some(PcValueRun {
                    end,
                    value: self.value,
                });
            }
        }
        None
    }

    /// The value at `off`, decoding no further than its run; `NO_VALUE` past the table's end.
    pub(super) fn value_at(mut self, off: u32) -> i32 {
        while let Some(run) = self.next_run() {
            if off < run.end {
                return run.value;
            }
        }
        NO_VALUE
    }
}

/// Decodes the pc-value table at `table` (offset into `pctab`; 0 means absent) of a function of
/// `func_len` bytes into `runs` (cleared first): runs of positive length, up to the one covering
/// the last byte of the function.
pub(super) fn decode_pcvalue_into(
    tab: &GoPclnTab,
    table: u32,
    func_len: u32,
    runs: &mut Vec<PcValueRun>,
) {
    runs.clear();
    if table == 0 {
        return;
    }
    let Some(data) = tab
        .pctab
        .checked_add(table as usize)
        .and_then(|at| tab.data.get(at..))
    else {
        return;
    };
    let quantum = tab.quantum;
    let mut p = 0usize;
    let mut value: i32 = -1;
    let mut pc_off: u64 = 0;
    // Pairs that do not advance are rare; bound them so garbage cannot spin.
    let max_pairs = (func_len as usize)
        .saturating_add(1024)
        .min(MAX_PCVALUE_RUNS);
    for n in 0..max_pairs {
        let Some(uvdelta) = read_uvarint(data, &mut p) else {
            break;
        };
        if uvdelta == 0 && n != 0 {
            break;
        }
        let Some(pcdelta) = read_uvarint(data, &mut p) else {
            break;
        };
        value = value.wrapping_add(((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32));
        let prev = pc_off;
        pc_off += u64::from(pcdelta) * quantum;
        let Ok(end) = u32::try_from(pc_off) else {
            break;
        };
        if pc_off > prev {
            runs.push(PcValueRun { end, value });
        }
        if end >= func_len {
            break;
        }
    }
}

#[cfg(test)]
pub(super) fn decode_pcvalue(tab: &GoPclnTab, table: u32, func_len: u32) -> Vec<PcValueRun> {
    let mut runs = Vec::new();
    decode_pcvalue_into(tab, table, func_len, &mut runs);
    runs
}

/// The value of decoded `runs` at `off`, `NO_VALUE` past their end or without an offset.
#[inline]
pub(super) fn value_at(runs: &[PcValueRun], off: Option<u32>) -> i32 {
    let Some(off) = off else {
        return NO_VALUE;
    };
    let i = runs.partition_point(|r| r.end <= off);
    runs.get(i).map_or(NO_VALUE, |r| r.value)
}

/// Index of the first run of `runs` (from `*cursor` on) covering `off`, for offsets that do not
/// decrease from call to call.
#[inline]
pub(super) fn value_from(runs: &[PcValueRun], cursor: &mut usize, off: u32) -> i32 {
    if let Some(rest) = runs.get(*cursor..) {
        *cursor += rest.partition_point(|r| r.end <= off);
    }
    runs.get(*cursor).map_or(NO_VALUE, |r| r.value)
}
