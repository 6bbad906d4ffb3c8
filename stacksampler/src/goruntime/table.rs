//! Runtime layouts per Go release, for binaries without DWARF (stripped with `-ldflags=-s -w`).
//!
//! Every row was read from the DWARF of a real linux/amd64 build of that release (the test
//! `tests/tests/goruntime_layout.rs` re-checks the table against DWARF for every toolchain the test
//! machine has), except Go 1.20, which was derived from its `runtime/runtime2.go` (no 1.20
//! toolchain on the test machines). `docs/go-runtime.md` lists the sources. linux/arm64 has the same
//! layout: the structures hold no architecture-dependent members before the ones read here.

use super::{layout::RuntimeLayout, version::GoVersion};

/// Oldest Go release in the table.
pub const OLDEST: (u32, u32) = (1, 19);
/// Newest Go release in the table; newer releases get no layout without DWARF.
pub const NEWEST: (u32, u32) = (1, 27);

/// Go 1.19 and 1.20.
const GO_1_19: RuntimeLayout = RuntimeLayout {
    g_stack_lo: 0,
    g_stack_hi: 8,
    g_m: 48,
    g_sched: 56,
    g_syscallsp: 112,
    g_syscallpc: 120,
    g_atomicstatus: 144,
    g_goid: 152,
    g_waitreason: 176,
    g_labels: 360,
    m_g0: 0,
    m_gsignal: 80,
    m_curg: 192,
    m_procid: 72,
    gobuf_sp: 0,
    gobuf_pc: 8,
    gobuf_bp: 48,
    g_syscallbp: None,
    g_waitsince: Some(168),
    g_lockedm: Some(232),
    g_gopc: Some(296),
    g_startpc: Some(312),
    g_parent_goid: None,
};

/// Go 1.21 and 1.22: `g.labels` moved to 344, `g.parentGoid` added, trace fields regrouped.
const GO_1_21: RuntimeLayout = RuntimeLayout {
    g_labels: 344,
    g_lockedm: Some(208),
    g_parent_goid: Some(272),
    g_gopc: Some(280),
    g_startpc: Some(296),
    ..GO_1_19
};

/// Go 1.23 and 1.24: `g.syscallbp` inserted after `syscallpc`, shifting status, goid, waitreason.
const GO_1_23: RuntimeLayout = RuntimeLayout {
    g_atomicstatus: 152,
    g_goid: 160,
    g_waitreason: 184,
    g_labels: 352,
    g_syscallbp: Some(128),
    g_waitsince: Some(176),
    g_lockedm: Some(216),
    g_parent_goid: Some(280),
    g_gopc: Some(288),
    g_startpc: Some(304),
    ..GO_1_21
};

/// Go 1.25: `gobuf.ret` removed (sched and everything after it 8 bytes shorter), `m.procid`,
/// `m.gsignal` and `m.curg` 8 bytes earlier.
const GO_1_25: RuntimeLayout = RuntimeLayout {
    g_syscallsp: 104,
    g_syscallpc: 112,
    g_atomicstatus: 144,
    g_goid: 152,
    g_waitreason: 176,
    g_labels: 344,
    m_gsignal: 72,
    m_curg: 184,
    m_procid: 64,
    gobuf_bp: 40,
    g_syscallbp: Some(120),
    g_waitsince: Some(168),
    g_lockedm: Some(208),
    g_parent_goid: Some(272),
    g_gopc: Some(280),
    g_startpc: Some(296),
    ..GO_1_23
};

/// Go 1.26 and 1.27: `g.labels` at 352, `g.parentGoid`, `gopc` and `startpc` 8 bytes later.
const GO_1_26: RuntimeLayout = RuntimeLayout {
    g_labels: 352,
    g_parent_goid: Some(280),
    g_gopc: Some(288),
    g_startpc: Some(304),
    ..GO_1_25
};

/// The layout of Go release family `1.minor`, if the table has it.
pub fn layout_for_family(major: u32, minor: u32) -> Option<RuntimeLayout> {
    match (major, minor) {
        (1, 19 | 20) => Some(GO_1_19),
        (1, 21 | 22) => Some(GO_1_21),
        (1, 23 | 24) => Some(GO_1_23),
        (1, 25) => Some(GO_1_25),
        (1, 26 | 27) => Some(GO_1_26),
        _ => None,
    }
}

/// The layout of `version`'s release family, if the table has it.
pub fn layout_for(version: &GoVersion) -> Option<RuntimeLayout> {
    layout_for_family(version.major, version.minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_exactly_the_supported_range() {
        for minor in OLDEST.1..=NEWEST.1 {
            assert!(layout_for_family(1, minor).is_some(), "1.{minor}");
        }
        assert!(layout_for_family(1, OLDEST.1 - 1).is_none());
        assert!(layout_for_family(1, NEWEST.1 + 1).is_none());
        assert!(layout_for_family(2, 0).is_none());
    }

    /// The invariants NOTES.md lists for every release.
    #[test]
    fn common_members_never_move() {
        for minor in OLDEST.1..=NEWEST.1 {
            let l = layout_for_family(1, minor).unwrap();
            assert_eq!(
                (l.g_stack_lo, l.g_stack_hi, l.g_m, l.g_sched),
                (0, 8, 48, 56)
            );
            assert_eq!((l.gobuf_sp, l.gobuf_pc, l.m_g0), (0, 8, 0));
            assert_eq!(l.g_syscallpc, l.g_syscallsp + 8);
            if let Some(bp) = l.g_syscallbp {
                assert_eq!(bp, l.g_syscallpc + 8);
            }
        }
    }
}
