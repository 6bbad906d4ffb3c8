//! Sysctls the benchmark changes, restored when the guard drops (also on error and Ctrl-C, which
//! the benchmark turns into an error).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A changed sysctl; dropping it writes the original value back.
pub struct Sysctl {
    name: String,
    path: PathBuf,
    original: String,
}

fn path_of(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// Reads a sysctl, e.g. `kernel.perf_event_max_stack`.
pub fn read(name: &str) -> anyhow::Result<String> {
    let path = path_of(name);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// Writes, retrying while the kernel answers EBUSY (`perf_event_max_stack` cannot change while
/// any callchain perf event is open on the machine, e.g. another engineer's perf).
fn write(path: &PathBuf, value: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::fs::write(path, value) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("writing {value} to {}", path.display()));
            }
        }
    }
}

impl Sysctl {
    /// Sets `name` to `value`; the guard restores the value it had.
    pub fn set(name: &str, value: u64) -> anyhow::Result<Self> {
        let original = read(name)?;
        let path = path_of(name);
        write(&path, &value.to_string())?;
        let now = read(name)?;
        let guard = Self {
            name: name.to_owned(),
            path,
            original,
        };
        if now != value.to_string() {
            bail!("{name} reads {now} after writing {value}");
        }
        eprintln!(
            "bench: {name} = {value} (was {}, restored afterwards)",
            guard.original
        );
        Ok(guard)
    }

    /// Raises `name` to at least `value`; `None` when it already was.
    pub fn at_least(name: &str, value: u64) -> anyhow::Result<Option<Self>> {
        let current: u64 = read(name)?
            .parse()
            .with_context(|| format!("parsing {name}"))?;
        if current >= value {
            return Ok(None);
        }
        Self::set(name, value).map(Some)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        match write(&self.path, &self.original) {
            Ok(()) => eprintln!("bench: {} restored to {}", self.name, self.original),
            Err(e) => eprintln!(
                "bench: WARNING: could not restore {} to {}: {e:#}",
                self.name, self.original
            ),
        }
    }
}
