//! `--all-go`: the host's Go processes, found by a scan of `/proc` (each interval). A process
//! is a Go program when the file it runs has Go build info; each file is inspected once
//! (remembered by device and inode), so a scan costs one `stat` per process.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::goruntime;

/// Which processes `--all-go` takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Only executables under this folder (as the process names its executable).
    pub exe_dir: Option<PathBuf>,
}

/// Finds Go processes; remembers what it learnt of each executable.
#[derive(Debug, Default)]
pub struct GoProcesses {
    discovery: Discovery,
    /// Whether the file of (device, inode) is a Go program.
    is_go: HashMap<(u64, u64), bool>,
}

impl GoProcesses {
    pub fn new(discovery: Discovery) -> Self {
        Self {
            discovery,
            is_go: HashMap::new(),
        }
    }

    /// The Go processes alive now, in pid order, this process excluded.
    pub fn scan(&mut self) -> Vec<u32> {
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me && self.is_go_process(pid))
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Whether `pid` runs a Go program that the filter takes. Kernel threads and processes
    /// gone meanwhile are not.
    pub fn is_go_process(&mut self, pid: u32) -> bool {
        let link = format!("/proc/{pid}/exe");
        if let Some(dir) = &self.discovery.exe_dir {
            match std::fs::read_link(&link) {
                Ok(exe) if exe.starts_with(dir) => {}
                _ => return false,
            }
        }
        // The file the process runs (its own mount namespace's), not its name.
        let Ok(meta) = std::fs::metadata(&link) else {
            return false;
        };
        *self
            .is_go
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| goruntime::inspect(Path::new(&link)).is_ok_and(|b| b.is_go))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_process_and_this_one_are_not_go() {
        let mut child = std::process::Command::new("sleep")
            .arg("1")
            .spawn()
            .expect("spawn sleep");
        let mut found = GoProcesses::default();
        assert!(!found.is_go_process(child.id()));
        let pids = found.scan();
        assert!(!pids.contains(&child.id()));
        assert!(!pids.contains(&std::process::id()));
        // A filter nothing is under finds nothing.
        let mut none = GoProcesses::new(Discovery {
            exe_dir: Some("/nonexistent-folder".into()),
        });
        assert!(none.scan().is_empty());
        let _ = child.wait();
    }
}
