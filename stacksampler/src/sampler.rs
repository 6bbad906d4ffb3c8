//! The sample stream: ring buffer records -> decoded [`Sample`]s, with a count of what could not
//! be decoded. Readiness comes from tokio's `AsyncFd` on the ring buffer's epoll-able fd.

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::sample::Sample;

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

    /// Waits until records are available, then hands each decoded sample to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl FnMut(Sample)) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let (received, errors) = drain_ring(ring, sink);
        self.received += received;
        self.decode_errors += errors;
        guard.clear_ready();
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
