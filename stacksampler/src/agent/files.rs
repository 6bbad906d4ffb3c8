//! `--output-dir`: each interval's pprof as `<service>-<pid>-<timestamp>.pb.gz`, written to a
//! temporary file beside it and renamed into place (a reader never sees half a profile), the
//! oldest of each process removed past `--keep`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::interval::IntervalProfile;

/// The exporter's name in metrics.
pub const EXPORTER: &str = "files";
/// Extension of every profile file.
const PROFILE_SUFFIX: &str = ".pb.gz";

/// Where the profiles go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDir {
    pub dir: PathBuf,
    /// Profiles kept per process (the newest); `None`: all.
    pub keep: Option<usize>,
}

/// Error writing or rotating a profile file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot use {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OutputDir {
    /// Creates the folder if it is missing; fails when it cannot be written to.
    pub fn prepare(&self) -> Result<(), FileError> {
        let err = |source| FileError::Dir {
            dir: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        // A temporary file proves the folder writable before anything is attached.
        crate::report::create_temp_beside(&self.dir.join("probe")).map_err(err)?;
        Ok(())
    }

    /// Writes `profile` and removes that process's oldest files past `keep`. Returns the file.
    pub fn write(&self, profile: &IntervalProfile) -> Result<PathBuf, FileError> {
        let path = self
            .dir
            .join(file_name(&profile.service, profile.pid, profile.end));
        let write_err = |source| FileError::Write {
            path: path.clone(),
            source,
        };
        let mut temp = crate::report::create_temp_beside(&path).map_err(write_err)?;
        temp.write_all(&profile.pprof).map_err(write_err)?;
        temp.persist(&path).map_err(|e| write_err(e.error))?;
        if let Some(keep) = self.keep {
            self.rotate(&prefix(&profile.service, profile.pid), keep)?;
        }
        Ok(path)
    }

    /// Removes the oldest files named `prefix...pb.gz` until `keep` are left.
    fn rotate(&self, prefix: &str, keep: usize) -> Result<(), FileError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| FileError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix) && n.ends_with(PROFILE_SUFFIX))
            .collect();
        // The timestamp is fixed-width: name order is time order.
        names.sort_unstable();
        let excess = names.len().saturating_sub(keep);
        for name in &names[..excess] {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(FileError::Remove { path, source }),
            }
        }
        Ok(())
    }
}

fn prefix(service: &str, pid: u32) -> String {
    format!("{service}-{pid}-")
}

/// `<service>-<pid>-<UTC time, ms>.pb.gz`, e.g. `api-4242-20261201T231500.123Z.pb.gz`.
pub fn file_name(service: &str, pid: u32, at: SystemTime) -> String {
    let stamp = jiff::Timestamp::try_from(at)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| "00000000T000000.000Z".into());
    format!("{}{stamp}{PROFILE_SUFFIX}", prefix(service, pid))
}

/// Whether `name` is one of this agent's profile files (for tests and tools).
pub fn is_profile_file(name: &Path) -> bool {
    name.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(PROFILE_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn profile(pid: u32, secs: u64) -> IntervalProfile {
        let end = UNIX_EPOCH + Duration::from_millis(secs * 1000 + 5);
        IntervalProfile {
            pid,
            service: "svc".into(),
            start: end - Duration::from_secs(1),
            end,
            pprof: vec![0x1f, 0x8b, 1, 2],
            samples: 1,
        }
    }

    #[test]
    fn names_carry_service_pid_and_utc_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_631_500_123);
        assert_eq!(
            file_name("api", 4242, at),
            "api-4242-20251201T232500.123Z.pb.gz"
        );
    }

    #[test]
    fn files_are_written_whole_and_rotated_per_process() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = OutputDir {
            dir: dir.path().join("profiles"),
            keep: Some(2),
        };
        out.prepare().expect("prepare");
        for secs in 1..=4 {
            out.write(&profile(10, secs)).expect("write");
        }
        let other = out.write(&profile(11, 1)).expect("write");
        let mut names: Vec<String> = std::fs::read_dir(&out.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "svc-10-19700101T000003.005Z.pb.gz",
                "svc-10-19700101T000004.005Z.pb.gz",
                "svc-11-19700101T000001.005Z.pb.gz",
            ]
        );
        assert_eq!(std::fs::read(other).unwrap(), [0x1f, 0x8b, 1, 2]);
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let out = OutputDir {
            dir: file.join("sub"),
            keep: None,
        };
        assert!(matches!(out.prepare(), Err(FileError::Dir { .. })));
    }
}
