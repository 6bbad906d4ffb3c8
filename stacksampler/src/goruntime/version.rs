//! Go release versions as recorded in a binary's build information (`go1.21.13`, `go1.22rc1`).

use std::{fmt, str::FromStr};

use serde::Serialize;

/// A Go release: `go1.MINOR[.PATCH]`, possibly a pre-release (`go1.22rc1`, `go1.21beta2`).
///
/// Ordered by (major, minor, patch); a pre-release sorts before the release it precedes is not
/// modelled: only the minor version selects a runtime layout, and pre-releases of a minor version
/// share its layout once released (a pre-release that differs is caught by DWARF when present).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GoVersion {
    /// Major version (always 1 so far).
    pub major: u32,
    /// Minor version: the release family (`21` for Go 1.21.x), which decides the runtime layout.
    pub minor: u32,
    /// Patch level (`13` in `go1.21.13`; 0 for `go1.21` and pre-releases).
    pub patch: u32,
    /// Pre-release tag (`rc1`, `beta2`), if any.
    pub pre_release: Option<String>,
}

/// Why a version string is not a Go release version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unrecognised Go version {0:?} (expected go1.N[.P], go1.NrcK or go1.NbetaK)")]
pub struct BadGoVersion(pub String);

impl GoVersion {
    /// Builds a release version `go{major}.{minor}.{patch}`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            pre_release: None,
        }
    }

    /// `(major, minor)`: the release family.
    pub fn family(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}", self.major, self.minor)?;
        match &self.pre_release {
            Some(pre) => write!(f, "{pre}"),
            None if self.patch > 0 || (self.major, self.minor) >= (1, 21) => {
                write!(f, ".{}", self.patch)
            }
            None => Ok(()),
        }
    }
}

/// Splits the leading decimal digits off `s`.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

impl FromStr for GoVersion {
    type Err = BadGoVersion;

    /// Parses what `runtime.Version()` returns for a release: `go1.21.13`, `go1.21`, `go1.22rc1`.
    ///
    /// Anything after the first space (`go1.23.0 X:nocoverageredesign`, GOEXPERIMENT flags) is
    /// ignored. Development builds (`devel go1.24-abcdef`) have no release number and are rejected:
    /// their layout cannot be selected by version.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadGoVersion(s.to_owned());
        let word = s.split_whitespace().next().ok_or_else(bad)?;
        let rest = word.strip_prefix("go").ok_or_else(bad)?;
        let (major, rest) = leading_number(rest).ok_or_else(bad)?;
        let rest = rest.strip_prefix('.').ok_or_else(bad)?;
        let (minor, rest) = leading_number(rest).ok_or_else(bad)?;
        let (patch, pre_release) = if rest.is_empty() {
            (0, None)
        } else if let Some(patch) = rest.strip_prefix('.') {
            let (patch, tail) = leading_number(patch).ok_or_else(bad)?;
            if !tail.is_empty() {
                return Err(bad());
            }
            (patch, None)
        } else if ["rc", "beta", "alpha"].iter().any(|tag| {
            rest.strip_prefix(tag)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }) {
            (0, Some(rest.to_owned()))
        } else {
            return Err(bad());
        };
        Ok(Self {
            major,
            minor,
            patch,
            pre_release,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_pre_release_versions() {
        assert_eq!("go1.21.13".parse(), Ok(GoVersion::new(1, 21, 13)));
        assert_eq!("go1.19".parse(), Ok(GoVersion::new(1, 19, 0)));
        assert_eq!(
            "go1.23.0 X:nocoverageredesign".parse(),
            Ok(GoVersion::new(1, 23, 0))
        );
        let rc: GoVersion = "go1.22rc1".parse().unwrap();
        assert_eq!(rc.family(), (1, 22));
        assert_eq!(rc.pre_release.as_deref(), Some("rc1"));
        assert_eq!(rc.to_string(), "go1.22rc1");
        assert_eq!(GoVersion::new(1, 27, 3).to_string(), "go1.27.3");
        assert_eq!(GoVersion::new(1, 19, 0).to_string(), "go1.19");
    }

    #[test]
    fn rejects_non_release_strings() {
        for s in [
            "",
            "go",
            "go1",
            "go1.",
            "gox.1",
            "devel go1.24-abcdef Tue",
            "go1.21.x",
            "go1.21rc",
            "go1.21.3.4",
            "1.21.3",
            "go99999999999.1",
        ] {
            assert!(s.parse::<GoVersion>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn orders_by_release() {
        assert!(GoVersion::new(1, 21, 13) < GoVersion::new(1, 22, 0));
        assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 10, 0));
    }
}
