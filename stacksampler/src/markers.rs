//! Pseudo-addresses in a stack: not code addresses but marks the stages put between frames
//! (the aggregated stack keeps them, the symbolizer turns each into one pseudo-frame). They sit
//! below every stage that writes or reads them.

/// Pseudo-address standing for the frames of a deep stack that were counted but not kept
/// (between head and tail, see [`crate::deep_stack`]); it symbolizes as one `[... not captured ...]` frame.
pub const GAP_MARKER: u64 = u64::MAX;

/// Pseudo-address marking where a sample's walk left a system stack (`g0`: `runtime.newstack`,
/// `systemstack` callees) for the user goroutine's stack (`m.curg.sched`): frames inward of it
/// ran on the system stack. It symbolizes as one `--- switched to goroutine stack ---` frame.
pub const SWITCH_MARKER: u64 = u64::MAX - 1;

/// Pseudo-address standing for the stack of a goroutine that a wall-clock snapshot found
/// running but whose live stack no CPU sample gave (see `record::wall`). It symbolizes as one
/// `[running, stack not captured]` frame.
pub const NOT_CAPTURED_MARKER: u64 = u64::MAX - 2;

/// Pseudo-address marking where the native (C) part of a mixed stack was cut: its unwind
/// stopped before it reached Go code again (the bounded stack copy ended, or a frame had no
/// call-frame information). It symbolizes as one `[native frames cut ...]` frame.
pub const NATIVE_CUT_MARKER: u64 = u64::MAX - 3;

/// Whether `addr` is one of the pseudo-addresses above rather than a code address.
pub fn is_marker(addr: u64) -> bool {
    addr == GAP_MARKER
        || addr == SWITCH_MARKER
        || addr == NOT_CAPTURED_MARKER
        || addr == NATIVE_CUT_MARKER
}
