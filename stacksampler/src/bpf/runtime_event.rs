//! Decoding runtime-event records from the ring buffer into [`RuntimeEvent`]s.

use stacksampler_common::{
    EVENT_HEAD_FRAMES, EVENT_HEADER_SIZE, EVENT_MAX_FRAMES, EVENT_MESSAGE_BYTES, EVENT_TAIL_FRAMES,
    EventFlags, EventHeader, EventKind,
};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeEventKind {
    /// A goroutine's stack was copied to a bigger one.
    StackGrowth,
    /// A goroutine's stack was shrunk by the garbage collector.
    StackShrink,
    /// A goroutine was created.
    GoroutineCreate,
    /// A goroutine ended.
    GoroutineExit,
    /// `runtime.throw` / `runtime.fatal` with its message.
    Fatal,
}

/// One decoded event.
#[derive(Clone, Debug)]
pub struct RuntimeEvent {
    /// Kernel monotonic time in nanoseconds.
    pub time_ns: u64,
    pub kind: RuntimeEventKind,
    /// The goroutine the event is about (0 when unknown, e.g. a creation seen at
    /// `runtime.newproc1` entry).
    pub goid: u64,
    /// Its `runtime.g` address.
    pub g_addr: u64,
    /// The goroutine running when the event fired (the creator of a new goroutine).
    pub parent_goid: u64,
    pub tid: u32,
    /// Stack growth/shrink: new and old stack size in bytes.
    pub new_size: u64,
    pub old_size: u64,
    /// Creation: the `go` statement's pc when known; fatal: the thrower's return address.
    pub caller_pc: u64,
    /// Fatal error message (possibly cut, see `message_len`).
    pub message: Option<String>,
    /// Full length of the message in the target.
    pub message_len: u64,
    /// Frames on the goroutine's stack (exact unless `truncated`).
    pub depth: u64,
    /// The walk hit its limit.
    pub truncated: bool,
    /// The event fired on a system stack; the stack is the goroutine's saved one.
    pub system_stack: bool,
    /// Innermost first: `frames[0]` is a pc, the others call sites (return address - 1). When
    /// `omitted > 0`, the first [`EVENT_HEAD_FRAMES`] are the head and the rest the tail.
    pub frames: Vec<u64>,
    /// Frames between head and tail that the kernel did not keep.
    pub omitted: u64,
}

/// Error decoding a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventDecodeError {
    /// Shorter than the header.
    #[error("event record of {0} bytes is shorter than its {EVENT_HEADER_SIZE}-byte header")]
    Short(usize),
    /// Claims more frames than it carries.
    #[error("event record says {claimed} frames but carries {present}")]
    FrameCount { claimed: usize, present: usize },
    /// Unknown kind value.
    #[error("unknown event kind {0}")]
    Kind(u32),
}

impl super::Record for RuntimeEvent {
    type Error = EventDecodeError;
    const WHAT: &'static str = "runtime event";

    fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        Self::decode(bytes)
    }
}

impl RuntimeEvent {
    /// Decodes one ring buffer record: an [`EventHeader`] followed by `n_frames` u64 values.
    pub fn decode(record: &[u8]) -> Result<Self, EventDecodeError> {
        if record.len() < EVENT_HEADER_SIZE {
            return Err(EventDecodeError::Short(record.len()));
        }
        // SAFETY: EventHeader is repr(C) plain old data valid for any bit pattern; unaligned read.
        let h: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let kind = match h.kind {
            EventKind::STACK_GROWTH => RuntimeEventKind::StackGrowth,
            EventKind::STACK_SHRINK => RuntimeEventKind::StackShrink,
            EventKind::GOROUTINE_CREATE => RuntimeEventKind::GoroutineCreate,
            EventKind::GOROUTINE_EXIT => RuntimeEventKind::GoroutineExit,
            EventKind::FATAL => RuntimeEventKind::Fatal,
            other => return Err(EventDecodeError::Kind(other)),
        };
        let body = &record[EVENT_HEADER_SIZE..];
        let claimed = (h.n_frames as usize).min(EVENT_MAX_FRAMES);
        let present = body.len() / 8;
        if claimed > present {
            return Err(EventDecodeError::FrameCount { claimed, present });
        }
        let raw: Vec<u64> = body
            .chunks_exact(8)
            .take(claimed)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let depth = u64::from(h.depth);
        let (ordered, omitted) = order_frames(&raw, depth);
        let frames = ordered
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
            .collect();
        let message = (kind == RuntimeEventKind::Fatal).then(|| {
            let n = (h.message_len as usize).min(EVENT_MESSAGE_BYTES);
            String::from_utf8_lossy(&h.message[..n]).into_owned()
        });
        let (new_size, old_size, caller_pc) = match kind {
            RuntimeEventKind::StackGrowth | RuntimeEventKind::StackShrink => (h.arg0, h.arg1, 0),
            _ => (0, 0, h.arg1),
        };
        Ok(Self {
            time_ns: h.time_ns,
            kind,
            goid: h.goid,
            g_addr: h.g_addr,
            parent_goid: h.parent_goid,
            tid: h.tid,
            new_size,
            old_size,
            caller_pc,
            message,
            message_len: if kind == RuntimeEventKind::Fatal {
                h.arg0
            } else {
                0
            },
            depth,
            truncated: h.flags & EventFlags::TRUNCATED != 0,
            system_stack: h.flags & EventFlags::SYSTEM_STACK != 0,
            frames,
            omitted,
        })
    }
}

/// Puts the kernel's head + tail ring in order; returns the frames and how many were omitted.
pub fn order_frames(raw: &[u64], depth: u64) -> (Vec<u64>, u64) {
    if depth <= raw.len() as u64 || raw.len() < EVENT_MAX_FRAMES {
        let n = (depth as usize).min(raw.len());
        return (raw[..n].to_vec(), 0);
    }
    let mut out = raw[..EVENT_HEAD_FRAMES].to_vec();
    let tail_start = depth - EVENT_TAIL_FRAMES as u64;
    for pos in tail_start..depth {
        let slot = EVENT_HEAD_FRAMES
            + ((pos - EVENT_HEAD_FRAMES as u64) as usize & (EVENT_TAIL_FRAMES - 1));
        out.push(raw[slot]);
    }
    (out, depth - EVENT_MAX_FRAMES as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_tail_is_put_back_in_order() {
        // A walk of depth D wrote frame p at p (head) or in the tail ring.
        let depth = (EVENT_MAX_FRAMES + 1234) as u64;
        let mut raw = vec![0u64; EVENT_MAX_FRAMES];
        for p in 0..depth {
            let slot = if p < EVENT_HEAD_FRAMES as u64 {
                p as usize
            } else {
                EVENT_HEAD_FRAMES
                    + ((p - EVENT_HEAD_FRAMES as u64) as usize & (EVENT_TAIL_FRAMES - 1))
            };
            raw[slot] = p;
        }
        let (frames, omitted) = order_frames(&raw, depth);
        assert_eq!(omitted, 1234);
        assert_eq!(frames.len(), EVENT_MAX_FRAMES);
        assert_eq!(frames[..3], [0, 1, 2]);
        assert_eq!(frames[EVENT_HEAD_FRAMES - 1], EVENT_HEAD_FRAMES as u64 - 1);
        assert_eq!(frames[EVENT_HEAD_FRAMES], depth - EVENT_TAIL_FRAMES as u64);
        assert_eq!(*frames.last().unwrap(), depth - 1);
    }

    #[test]
    fn short_stacks_are_kept_whole() {
        let (frames, omitted) = order_frames(&[5, 6, 7], 3);
        assert_eq!((frames, omitted), (vec![5, 6, 7], 0));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            RuntimeEvent::decode(&[0; 4]).unwrap_err(),
            EventDecodeError::Short(4)
        );
        let mut rec = vec![0u8; EVENT_HEADER_SIZE];
        assert_eq!(
            RuntimeEvent::decode(&rec).unwrap_err(),
            EventDecodeError::Kind(0)
        );
        // kind at offset 6*8 + 8 (after tgid, tid), n_frames at +20.
        rec[56..60].copy_from_slice(&EventKind::GOROUTINE_EXIT.to_le_bytes());
        rec[68..72].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            RuntimeEvent::decode(&rec).unwrap_err(),
            EventDecodeError::FrameCount {
                claimed: 2,
                present: 0
            }
        );
    }
}
