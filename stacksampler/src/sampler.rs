//! The sample stream: ring buffer records -> decoded [`Sample`]s, with a count of what could not
//! be decoded. Readiness comes from tokio's `AsyncFd` on the ring buffer's epoll-able fd, and
//! from a timer: the kernel side writes most samples without waking the reader (a wake-up is an
//! interrupt of its own; see `WAKEUP_AT_BYTES` in the eBPF maps), so the ring is also read every
//! [`SAMPLES_POLL_INTERVAL`].

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::sample::Sample;

/// How often the ring buffer is read when the kernel did not wake the reader. The kernel wakes
/// it when a quarter of the ring is unread, when a sample needs its labels or its deep stack
/// read from the target soon, and otherwise leaves samples to this timer.
pub const SAMPLES_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Decoded samples from the kernel.
pub struct SampleStream {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (counted as lost).
    pub decode_errors: u64,
    /// Records received.
    pub received: u64,
}

impl SampleStream {
    /// Wraps the ring buffer taken from the loader. Needs a tokio runtime with IO enabled.
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?,
            decode_errors: 0,
            received: 0,
        })
    }

    /// Waits until the kernel wakes the reader or [`SAMPLES_POLL_INTERVAL`] passed, then hands
    /// each decoded sample to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl FnMut(Sample)) -> std::io::Result<()> {
        match tokio::time::timeout(SAMPLES_POLL_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                let (received, errors) = drain_ring(guard.get_inner_mut(), sink);
                self.received += received;
                self.decode_errors += errors;
                guard.clear_ready();
            }
            Err(_elapsed) => self.drain(sink),
        }
        Ok(())
    }

    /// Hands every record already in the ring buffer to `sink` without waiting.
    pub fn drain(&mut self, sink: &mut impl FnMut(Sample)) {
        let (received, errors) = drain_ring(self.ring.get_mut(), sink);
        self.received += received;
        self.decode_errors += errors;
    }
}

fn drain_ring(ring: &mut RingBuf<MapData>, sink: &mut impl FnMut(Sample)) -> (u64, u64) {
    let (mut received, mut errors) = (0, 0);
    while let Some(record) = ring.next() {
        received += 1;
        match Sample::decode(&record) {
            Ok(sample) => sink(sample),
            Err(e) => {
                errors += 1;
                log::debug!("dropping a sample record: {e}");
            }
        }
    }
    (received, errors)
}
