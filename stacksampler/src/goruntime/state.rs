//! Goroutine states (`runtime.g.atomicstatus`) and the `--state` filter syntax.

use std::{fmt, str::FromStr};

use serde::Serialize;

/// `_Gscan` bit: the GC is scanning the goroutine; the remaining bits are the real state.
pub const GSCAN_BIT: u32 = 0x1000;

/// The state a goroutine was in when sampled, as Go's runtime names it (without `_G`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GoroutineState {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Dead,
    Copystack,
    Preempted,
    /// Not a Go program, no known layout, or a value outside Go's table.
    Unknown,
}

impl GoroutineState {
    /// Every state, in report order.
    pub const ALL: [GoroutineState; 9] = [
        Self::Running,
        Self::Syscall,
        Self::Runnable,
        Self::Waiting,
        Self::Preempted,
        Self::Copystack,
        Self::Idle,
        Self::Dead,
        Self::Unknown,
    ];

    /// Decodes a raw `atomicstatus` (`_Gidle` = 0 ... `_Gpreempted` = 9; scan bit ignored).
    pub fn from_raw(status: u32) -> Self {
        match status & !GSCAN_BIT {
            0 => Self::Idle,
            1 => Self::Runnable,
            2 => Self::Running,
            3 => Self::Syscall,
            4 => Self::Waiting,
            6 => Self::Dead,
            8 => Self::Copystack,
            9 => Self::Preempted,
            _ => Self::Unknown,
        }
    }

    /// Short lowercase name (`running`), as used in json and `--state running`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Runnable => "runnable",
            Self::Running => "running",
            Self::Syscall => "syscall",
            Self::Waiting => "waiting",
            Self::Dead => "dead",
            Self::Copystack => "copystack",
            Self::Preempted => "preempted",
            Self::Unknown => "unknown",
        }
    }

    /// Go's own constant name without the underscore (`Grunning`).
    pub fn go_name(self) -> &'static str {
        match self {
            Self::Idle => "Gidle",
            Self::Runnable => "Grunnable",
            Self::Running => "Grunning",
            Self::Syscall => "Gsyscall",
            Self::Waiting => "Gwaiting",
            Self::Dead => "Gdead",
            Self::Copystack => "Gcopystack",
            Self::Preempted => "Gpreempted",
            Self::Unknown => "Gunknown",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for GoroutineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for a `--state` word that names no goroutine state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown goroutine state {0:?}: expected idle, runnable, running, syscall, waiting, dead, copystack, preempted or unknown (Go names like Grunning and _Gsyscall work too)"
)]
pub struct UnknownState(pub String);

impl FromStr for GoroutineState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s.trim();
        let lower = word.to_ascii_lowercase();
        let bare = lower
            .strip_prefix("_g")
            .or_else(|| {
                lower
                    .strip_prefix('g')
                    .filter(|rest| Self::by_name(rest).is_some())
            })
            .unwrap_or(&lower);
        Self::by_name(bare).ok_or_else(|| UnknownState(word.to_owned()))
    }
}

impl GoroutineState {
    fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A set of goroutine states, parsed from `Grunning|Gsyscall` or `running,syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StateSet(u16);

impl StateSet {
    /// Whether `state` is in the set.
    pub fn contains(self, state: GoroutineState) -> bool {
        self.0 & state.bit() != 0
    }

    /// Adds `state`.
    pub fn insert(&mut self, state: GoroutineState) {
        self.0 |= state.bit();
    }

    /// The states in the set, in report order.
    pub fn iter(self) -> impl Iterator<Item = GoroutineState> {
        GoroutineState::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }
}

impl FromStr for StateSet {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = StateSet::default();
        for word in s.split(['|', ',']).filter(|w| !w.trim().is_empty()) {
            set.insert(word.parse()?);
        }
        if set == StateSet::default() {
            return Err(UnknownState(s.to_owned()));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_raw_status_with_scan_bit() {
        assert_eq!(GoroutineState::from_raw(2), GoroutineState::Running);
        assert_eq!(
            GoroutineState::from_raw(GSCAN_BIT | 3),
            GoroutineState::Syscall
        );
        assert_eq!(GoroutineState::from_raw(5), GoroutineState::Unknown);
        assert_eq!(GoroutineState::from_raw(77), GoroutineState::Unknown);
    }

    #[test]
    fn parses_go_and_short_names() {
        let set: StateSet = "Grunning|Gsyscall".parse().unwrap();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [GoroutineState::Running, GoroutineState::Syscall]
        );
        let set: StateSet = "running, _Gwaiting".parse().unwrap();
        assert!(set.contains(GoroutineState::Waiting));
        assert!(!set.contains(GoroutineState::Syscall));
        assert_eq!(
            "gone".parse::<StateSet>(),
            Err(UnknownState("gone".to_owned()))
        );
        assert!("".parse::<StateSet>().is_err());
    }
}
