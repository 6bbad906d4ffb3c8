//! A ring buffer read as a stream of typed records, with a count of what could not be decoded.
//!
//! Readiness comes from tokio's `AsyncFd` on the ring buffer's epoll-able fd, and, for a stream
//! with a poll interval, from a timer: the sampler writes most samples without waking the
//! reader (a wake-up is an interrupt of its own; see `WAKEUP_AT_BYTES` in the eBPF maps), so
//! that ring is also read every [`SAMPLES_POLL_INTERVAL`].

use std::{marker::PhantomData, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// How often the sample ring is read when the kernel did not wake the reader. The kernel wakes
/// it when a quarter of the ring is unread, when a sample needs its labels or its deep stack
/// read from the target soon, and otherwise leaves samples to this timer.
pub const SAMPLES_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A record type a ring buffer carries.
pub trait Record: Sized {
    /// Why a record did not decode.
    type Error: std::fmt::Display;
    /// What the records are, for logs.
    const WHAT: &'static str;
    /// Decodes one ring buffer record.
    fn decode(bytes: &[u8]) -> Result<Self, Self::Error>;

    /// Decodes one record into `into`, reusing what it owns (a type with buffers overrides
    /// this so that reading a record allocates nothing).
    fn decode_into(bytes: &[u8], into: &mut Self) -> Result<(), Self::Error> {
        *into = Self::decode(bytes)?;
        Ok(())
    }
}

/// Decoded records of type `R` from one ring buffer.
pub struct RecordStream<R> {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Read the ring at least this often, even without a wake-up.
    poll_interval: Option<Duration>,
    /// Records that could not be decoded (counted as lost).
    pub decode_errors: u64,
    /// Records received.
    pub received: u64,
    _records: PhantomData<fn() -> R>,
}

impl<R: Record> RecordStream<R> {
    /// Wraps a ring buffer taken from the loaded object; `poll_interval` for rings the kernel
    /// writes without waking the reader. Needs a tokio runtime with IO enabled.
    pub fn new(ring: RingBuf<MapData>, poll_interval: Option<Duration>) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?,
            poll_interval,
            decode_errors: 0,
            received: 0,
            _records: PhantomData,
        })
    }

    /// Waits until the kernel wakes the reader (or the poll interval passed), then hands each
    /// decoded record to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl FnMut(R)) -> std::io::Result<()> {
        let ready = match self.poll_interval {
            Some(interval) => tokio::time::timeout(interval, self.ring.readable_mut()).await,
            None => Ok(self.ring.readable_mut().await),
        };
        match ready {
            Ok(guard) => {
                let mut guard = guard?;
                let (received, errors) = drain_ring::<R>(guard.get_inner_mut(), sink);
                self.received += received;
                self.decode_errors += errors;
                guard.clear_ready();
            }
            Err(_elapsed) => self.drain(sink),
        }
        Ok(())
    }

    /// Waits until the kernel wakes the reader (or the poll interval passed); the records are
    /// then read one by one with [`RecordStream::next_into`].
    pub async fn ready(&mut self) -> std::io::Result<()> {
        let ready = match self.poll_interval {
            Some(interval) => tokio::time::timeout(interval, self.ring.readable_mut()).await,
            None => Ok(self.ring.readable_mut().await),
        };
        // Cleared before the ring is read: a record written after that wakes the reader again.
        if let Ok(guard) = ready {
            guard?.clear_ready();
        }
        Ok(())
    }

    /// Decodes the next record already in the ring buffer into `into`, straight from the
    /// ring's memory and reusing `into`'s buffers; `false` when the ring is empty. Records
    /// that do not decode are counted and skipped.
    pub fn next_into(&mut self, into: &mut R) -> bool {
        while let Some(record) = self.ring.get_mut().next() {
            self.received += 1;
            match R::decode_into(&record, into) {
                Ok(()) => return true,
                Err(e) => {
                    self.decode_errors += 1;
                    log::debug!("dropping a {} record: {e}", R::WHAT);
                }
            }
        }
        false
    }

    /// Hands every record already in the ring buffer to `sink` without waiting.
    pub fn drain(&mut self, sink: &mut impl FnMut(R)) {
        let (received, errors) = drain_ring::<R>(self.ring.get_mut(), sink);
        self.received += received;
        self.decode_errors += errors;
    }
}

fn drain_ring<R: Record>(ring: &mut RingBuf<MapData>, sink: &mut impl FnMut(R)) -> (u64, u64) {
    let (mut received, mut errors) = (0, 0);
    while let Some(record) = ring.next() {
        received += 1;
        match R::decode(&record) {
            Ok(r) => sink(r),
            Err(e) => {
                errors += 1;
                log::debug!("dropping a {} record: {e}", R::WHAT);
            }
        }
    }
    (received, errors)
}
