//! What the fuzz targets share: fuzzed bytes standing for the target's memory.

use stacksampler::goruntime::labels::ReadMemory;

/// The input laid out from address `base` of a fake address space; every other address is
/// unreadable, as an unmapped page of the target is.
pub struct FlatMemory<'a> {
    /// First address of the input.
    pub base: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

impl ReadMemory for FlatMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let bytes = self.bytes.get(start..start.checked_add(buf.len())?)?;
        buf.copy_from_slice(bytes);
        Some(())
    }
}
