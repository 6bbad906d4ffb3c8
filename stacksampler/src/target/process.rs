//! The target process: does it exist, what does it run, may we sample it.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

/// Capability bits (linux/capability.h) that loading and attaching the sampler needs.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Errors about the target process or our right to sample it.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("process {0} is a kernel thread: it has no user stack to sample")]
    KernelThread(u32),
    #[error(
        "not permitted: stacksampler needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs; run it with sudo"
    )]
    NotPermitted,
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A live process to sample.
#[derive(Clone, Debug)]
pub struct Process {
    pub pid: u32,
    /// The executable (`/proc/PID/exe` resolved), as the process's mount namespace names it.
    pub exe: PathBuf,
    /// `/proc/PID/exe` itself: opens the executable even across mount namespaces or when deleted.
    pub exe_link: PathBuf,
    /// The command name (`/proc/PID/comm`).
    pub comm: String,
}

impl Process {
    /// Looks up `pid`; fails with a precise error when it does not exist or is a kernel thread.
    pub fn open(pid: u32) -> Result<Self, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess(pid));
        }
        // The process may be the main thread of another tgid: only tgids have sense here.
        let status = read(&proc_dir.join("status"))?;
        if let Some(tgid) = status_field(&status, "Tgid:")
            && tgid != pid.to_string()
        {
            return Err(TargetError::NoSuchProcess(pid));
        }
        let comm = read(&proc_dir.join("comm"))?.trim().to_owned();
        let exe_link = proc_dir.join("exe");
        let exe = match fs::read_link(&exe_link) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return if proc_dir.exists() {
                    Err(TargetError::KernelThread(pid))
                } else {
                    Err(TargetError::NoSuchProcess(pid))
                };
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(TargetError::NotPermitted);
            }
            Err(source) => {
                return Err(TargetError::Io {
                    path: exe_link,
                    source,
                });
            }
        };
        Ok(Self {
            pid,
            exe,
            exe_link,
            comm,
        })
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        is_alive(self.pid)
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn read(path: &Path) -> Result<String, TargetError> {
    fs::read_to_string(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => TargetError::Io {
            path: path.to_owned(),
            source,
        },
        ErrorKind::PermissionDenied => TargetError::NotPermitted,
        _ => TargetError::Io {
            path: path.to_owned(),
            source,
        },
    })
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// Checks that this process may load and attach eBPF programs: root, or CAP_BPF + CAP_PERFMON
/// (or CAP_SYS_ADMIN) in its effective set.
pub fn check_privileges() -> Result<(), TargetError> {
    let status = read(Path::new("/proc/self/status"))?;
    let caps = status_field(&status, "CapEff:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(TargetError::NotPermitted)
    }
}

/// The PID namespace `pid` lives in (its innermost one: where its own `getpid`/`gettid` ids
/// are taken), from `stat(2)` of `/proc/PID/ns/pid`.
pub fn pid_namespace(pid: u32) -> Result<stacksampler_common::PidNamespace, TargetError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    let meta = fs::metadata(&path).map_err(|source| TargetError::Io { path, source })?;
    Ok(stacksampler_common::PidNamespace {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Reads one machine word of the target's memory (`/proc/PID/mem`).
pub fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt as _;
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = [0u8; 8];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(u64::from_ne_bytes(buf))
}

/// Load address of a position-independent executable: the start of its first mapping (file
/// offset 0) in `/proc/PID/maps`. Link-time addresses of a PIE are relative to it.
pub fn pie_base(pid: u32, exe: &Path) -> Option<u64> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let exe = exe.to_str()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let offset = fields.next()?;
        let path = fields.nth(2)?;
        (path == exe && u64::from_str_radix(offset, 16).ok()? == 0)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_itself_and_rejects_missing_pids() {
        let me = Process::open(std::process::id()).unwrap();
        assert!(me.exe.exists());
        assert!(me.is_alive());
        assert!(matches!(
            Process::open(u32::MAX - 7),
            Err(TargetError::NoSuchProcess(_))
        ));
        assert!(matches!(
            Process::open(0),
            Err(TargetError::NoSuchProcess(0))
        ));
    }

    #[test]
    fn kernel_threads_are_refused() {
        // kthreadd is pid 2 on Linux.
        assert!(matches!(
            Process::open(2),
            Err(TargetError::KernelThread(2))
        ));
    }
}
