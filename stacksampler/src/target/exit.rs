//! Waiting for the end of a run: the target's exit (pidfd) or a deadline.

use std::{
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};

/// Sleeps for `remaining`, or forever when there is no deadline.
pub async fn sleep_or_forever(remaining: Option<Duration>) {
    match remaining {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Becomes ready when the target process exits (a pidfd polls readable then). Without pidfd
/// support (kernels before 5.3) it never becomes ready: callers then poll
/// [`super::process::is_alive`].
pub struct ExitWatch {
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    /// Watches `pid`. Needs a tokio runtime with IO enabled.
    pub fn new(pid: u32) -> Self {
        // SAFETY: plain syscall; a non-negative result is a new fd we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0)
            // SAFETY: the fd was just returned to us.
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
            // SAFETY: the AsyncFd owns the pidfd.
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok());
        Self { pidfd }
    }

    /// Whether exits are noticed through a pidfd.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Resolves when the target has exited.
    pub async fn exited(&self) {
        match &self.pidfd {
            Some(fd) => {
                let _ = fd.readable().await;
            }
            None => std::future::pending().await,
        }
    }
}
