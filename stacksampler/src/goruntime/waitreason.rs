//! Names of `runtime.g.waitreason` values, as Go prints them in goroutine dumps
//! (`goroutine 7 [chan receive]:`).
//!
//! The `waitReason` enum is renumbered between releases (entries are inserted in the middle, and
//! Go 1.26 regrouped the channel reasons), so a raw value means nothing without the Go version.
//! Each table below lists `waitReasonStrings` in enum order, read from `src/runtime/runtime2.go` of
//! the release named (Go 1.19.8, 1.20.6, 1.21.13, 1.22.10, 1.23.9, 1.24.11, 1.25.5, 1.26.6,
//! 1.27.3); releases sharing a table are mapped in [`table`]. `docs/go-runtime.md` has the sources.

use super::version::GoVersion;

/// Wait reasons of Go 1.19 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_19: &[&str] = &[
    "",                        // 0 waitReasonZero
    "GC assist marking",       // 1 waitReasonGCAssistMarking
    "IO wait",                 // 2 waitReasonIOWait
    "chan receive (nil chan)", // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",    // 4 waitReasonChanSendNilChan
    "dumping heap",            // 5 waitReasonDumpingHeap
    "garbage collection",      // 6 waitReasonGarbageCollection
    "garbage collection scan", // 7 waitReasonGarbageCollectionScan
    "panicwait",               // 8 waitReasonPanicWait
    "select",                  // 9 waitReasonSelect
    "select (no cases)",       // 10 waitReasonSelectNoCases
    "GC assist wait",          // 11 waitReasonGCAssistWait
    "GC sweep wait",           // 12 waitReasonGCSweepWait
    "GC scavenge wait",        // 13 waitReasonGCScavengeWait
    "chan receive",            // 14 waitReasonChanReceive
    "chan send",               // 15 waitReasonChanSend
    "finalizer wait",          // 16 waitReasonFinalizerWait
    "force gc (idle)",         // 17 waitReasonForceGCIdle
    "semacquire",              // 18 waitReasonSemacquire
    "sleep",                   // 19 waitReasonSleep
    "sync.Cond.Wait",          // 20 waitReasonSyncCondWait
    "timer goroutine (idle)",  // 21 waitReasonTimerGoroutineIdle
    "trace reader (blocked)",  // 22 waitReasonTraceReaderBlocked
    "wait for GC cycle",       // 23 waitReasonWaitForGCCycle
    "GC worker (idle)",        // 24 waitReasonGCWorkerIdle
    "preempted",               // 25 waitReasonPreempted
    "debug call",              // 26 waitReasonDebugCall
];

/// Wait reasons of Go 1.21 (`runtime/runtime2.go`, `waitReasonStrings`).
/// Go 1.20 has the same list (checked against go1.20.6's runtime2.go).
const GO_1_21: &[&str] = &[
    "",                        // 0 waitReasonZero
    "GC assist marking",       // 1 waitReasonGCAssistMarking
    "IO wait",                 // 2 waitReasonIOWait
    "chan receive (nil chan)", // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",    // 4 waitReasonChanSendNilChan
    "dumping heap",            // 5 waitReasonDumpingHeap
    "garbage collection",      // 6 waitReasonGarbageCollection
    "garbage collection scan", // 7 waitReasonGarbageCollectionScan
    "panicwait",               // 8 waitReasonPanicWait
    "select",                  // 9 waitReasonSelect
    "select (no cases)",       // 10 waitReasonSelectNoCases
    "GC assist wait",          // 11 waitReasonGCAssistWait
    "GC sweep wait",           // 12 waitReasonGCSweepWait
    "GC scavenge wait",        // 13 waitReasonGCScavengeWait
    "chan receive",            // 14 waitReasonChanReceive
    "chan send",               // 15 waitReasonChanSend
    "finalizer wait",          // 16 waitReasonFinalizerWait
    "force gc (idle)",         // 17 waitReasonForceGCIdle
    "semacquire",              // 18 waitReasonSemacquire
    "sleep",                   // 19 waitReasonSleep
    "sync.Cond.Wait",          // 20 waitReasonSyncCondWait
    "sync.Mutex.Lock",         // 21 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",      // 22 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",       // 23 waitReasonSyncRWMutexLock
    "trace reader (blocked)",  // 24 waitReasonTraceReaderBlocked
    "wait for GC cycle",       // 25 waitReasonWaitForGCCycle
    "GC worker (idle)",        // 26 waitReasonGCWorkerIdle
    "GC worker (active)",      // 27 waitReasonGCWorkerActive
    "preempted",               // 28 waitReasonPreempted
    "debug call",              // 29 waitReasonDebugCall
    "GC mark termination",     // 30 waitReasonGCMarkTermination
    "stopping the world",      // 31 waitReasonStoppingTheWorld
];

/// Wait reasons of Go 1.22 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_22: &[&str] = &[
    "",                        // 0 waitReasonZero
    "GC assist marking",       // 1 waitReasonGCAssistMarking
    "IO wait",                 // 2 waitReasonIOWait
    "chan receive (nil chan)", // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",    // 4 waitReasonChanSendNilChan
    "dumping heap",            // 5 waitReasonDumpingHeap
    "garbage collection",      // 6 waitReasonGarbageCollection
    "garbage collection scan", // 7 waitReasonGarbageCollectionScan
    "panicwait",               // 8 waitReasonPanicWait
    "select",                  // 9 waitReasonSelect
    "select (no cases)",       // 10 waitReasonSelectNoCases
    "GC assist wait",          // 11 waitReasonGCAssistWait
    "GC sweep wait",           // 12 waitReasonGCSweepWait
    "GC scavenge wait",        // 13 waitReasonGCScavengeWait
    "chan receive",            // 14 waitReasonChanReceive
    "chan send",               // 15 waitReasonChanSend
    "finalizer wait",          // 16 waitReasonFinalizerWait
    "force gc (idle)",         // 17 waitReasonForceGCIdle
    "semacquire",              // 18 waitReasonSemacquire
    "sleep",                   // 19 waitReasonSleep
    "sync.Cond.Wait",          // 20 waitReasonSyncCondWait
    "sync.Mutex.Lock",         // 21 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",      // 22 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",       // 23 waitReasonSyncRWMutexLock
    "trace reader (blocked)",  // 24 waitReasonTraceReaderBlocked
    "wait for GC cycle",       // 25 waitReasonWaitForGCCycle
    "GC worker (idle)",        // 26 waitReasonGCWorkerIdle
    "GC worker (active)",      // 27 waitReasonGCWorkerActive
    "preempted",               // 28 waitReasonPreempted
    "debug call",              // 29 waitReasonDebugCall
    "GC mark termination",     // 30 waitReasonGCMarkTermination
    "stopping the world",      // 31 waitReasonStoppingTheWorld
    "flushing proc caches",    // 32 waitReasonFlushProcCaches
    "trace goroutine status",  // 33 waitReasonTraceGoroutineStatus
    "trace proc status",       // 34 waitReasonTraceProcStatus
    "page trace flush",        // 35 waitReasonPageTraceFlush
    "coroutine",               // 36 waitReasonCoroutine
];

/// Wait reasons of Go 1.23 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_23: &[&str] = &[
    "",                        // 0 waitReasonZero
    "GC assist marking",       // 1 waitReasonGCAssistMarking
    "IO wait",                 // 2 waitReasonIOWait
    "chan receive (nil chan)", // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",    // 4 waitReasonChanSendNilChan
    "dumping heap",            // 5 waitReasonDumpingHeap
    "garbage collection",      // 6 waitReasonGarbageCollection
    "garbage collection scan", // 7 waitReasonGarbageCollectionScan
    "panicwait",               // 8 waitReasonPanicWait
    "select",                  // 9 waitReasonSelect
    "select (no cases)",       // 10 waitReasonSelectNoCases
    "GC assist wait",          // 11 waitReasonGCAssistWait
    "GC sweep wait",           // 12 waitReasonGCSweepWait
    "GC scavenge wait",        // 13 waitReasonGCScavengeWait
    "chan receive",            // 14 waitReasonChanReceive
    "chan send",               // 15 waitReasonChanSend
    "finalizer wait",          // 16 waitReasonFinalizerWait
    "force gc (idle)",         // 17 waitReasonForceGCIdle
    "semacquire",              // 18 waitReasonSemacquire
    "sleep",                   // 19 waitReasonSleep
    "sync.Cond.Wait",          // 20 waitReasonSyncCondWait
    "sync.Mutex.Lock",         // 21 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",      // 22 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",       // 23 waitReasonSyncRWMutexLock
    "trace reader (blocked)",  // 24 waitReasonTraceReaderBlocked
    "wait for GC cycle",       // 25 waitReasonWaitForGCCycle
    "GC worker (idle)",        // 26 waitReasonGCWorkerIdle
    "GC worker (active)",      // 27 waitReasonGCWorkerActive
    "preempted",               // 28 waitReasonPreempted
    "debug call",              // 29 waitReasonDebugCall
    "GC mark termination",     // 30 waitReasonGCMarkTermination
    "stopping the world",      // 31 waitReasonStoppingTheWorld
    "flushing proc caches",    // 32 waitReasonFlushProcCaches
    "trace goroutine status",  // 33 waitReasonTraceGoroutineStatus
    "trace proc status",       // 34 waitReasonTraceProcStatus
    "page trace flush",        // 35 waitReasonPageTraceFlush
    "coroutine",               // 36 waitReasonCoroutine
    "GC weak to strong wait",  // 37 waitReasonGCWeakToStrongWait
];

/// Wait reasons of Go 1.24 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_24: &[&str] = &[
    "",                        // 0 waitReasonZero
    "GC assist marking",       // 1 waitReasonGCAssistMarking
    "IO wait",                 // 2 waitReasonIOWait
    "chan receive (nil chan)", // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",    // 4 waitReasonChanSendNilChan
    "dumping heap",            // 5 waitReasonDumpingHeap
    "garbage collection",      // 6 waitReasonGarbageCollection
    "garbage collection scan", // 7 waitReasonGarbageCollectionScan
    "panicwait",               // 8 waitReasonPanicWait
    "select",                  // 9 waitReasonSelect
    "select (no cases)",       // 10 waitReasonSelectNoCases
    "GC assist wait",          // 11 waitReasonGCAssistWait
    "GC sweep wait",           // 12 waitReasonGCSweepWait
    "GC scavenge wait",        // 13 waitReasonGCScavengeWait
    "chan receive",            // 14 waitReasonChanReceive
    "chan send",               // 15 waitReasonChanSend
    "finalizer wait",          // 16 waitReasonFinalizerWait
    "force gc (idle)",         // 17 waitReasonForceGCIdle
    "semacquire",              // 18 waitReasonSemacquire
    "sleep",                   // 19 waitReasonSleep
    "sync.Cond.Wait",          // 20 waitReasonSyncCondWait
    "sync.Mutex.Lock",         // 21 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",      // 22 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",       // 23 waitReasonSyncRWMutexLock
    "sync.WaitGroup.Wait",     // 24 waitReasonSyncWaitGroupWait
    "trace reader (blocked)",  // 25 waitReasonTraceReaderBlocked
    "wait for GC cycle",       // 26 waitReasonWaitForGCCycle
    "GC worker (idle)",        // 27 waitReasonGCWorkerIdle
    "GC worker (active)",      // 28 waitReasonGCWorkerActive
    "preempted",               // 29 waitReasonPreempted
    "debug call",              // 30 waitReasonDebugCall
    "GC mark termination",     // 31 waitReasonGCMarkTermination
    "stopping the world",      // 32 waitReasonStoppingTheWorld
    "flushing proc caches",    // 33 waitReasonFlushProcCaches
    "trace goroutine status",  // 34 waitReasonTraceGoroutineStatus
    "trace proc status",       // 35 waitReasonTraceProcStatus
    "page trace flush",        // 36 waitReasonPageTraceFlush
    "coroutine",               // 37 waitReasonCoroutine
    "GC weak to strong wait",  // 38 waitReasonGCWeakToStrongWait
    "synctest.Run",            // 39 waitReasonSynctestRun
    "synctest.Wait",           // 40 waitReasonSynctestWait
    "chan receive (synctest)", // 41 waitReasonSynctestChanReceive
    "chan send (synctest)",    // 42 waitReasonSynctestChanSend
    "select (synctest)",       // 43 waitReasonSynctestSelect
];

/// Wait reasons of Go 1.25 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_25: &[&str] = &[
    "",                              // 0 waitReasonZero
    "GC assist marking",             // 1 waitReasonGCAssistMarking
    "IO wait",                       // 2 waitReasonIOWait
    "chan receive (nil chan)",       // 3 waitReasonChanReceiveNilChan
    "chan send (nil chan)",          // 4 waitReasonChanSendNilChan
    "dumping heap",                  // 5 waitReasonDumpingHeap
    "garbage collection",            // 6 waitReasonGarbageCollection
    "garbage collection scan",       // 7 waitReasonGarbageCollectionScan
    "panicwait",                     // 8 waitReasonPanicWait
    "select",                        // 9 waitReasonSelect
    "select (no cases)",             // 10 waitReasonSelectNoCases
    "GC assist wait",                // 11 waitReasonGCAssistWait
    "GC sweep wait",                 // 12 waitReasonGCSweepWait
    "GC scavenge wait",              // 13 waitReasonGCScavengeWait
    "chan receive",                  // 14 waitReasonChanReceive
    "chan send",                     // 15 waitReasonChanSend
    "finalizer wait",                // 16 waitReasonFinalizerWait
    "force gc (idle)",               // 17 waitReasonForceGCIdle
    "GOMAXPROCS updater (idle)",     // 18 waitReasonUpdateGOMAXPROCSIdle
    "semacquire",                    // 19 waitReasonSemacquire
    "sleep",                         // 20 waitReasonSleep
    "sync.Cond.Wait",                // 21 waitReasonSyncCondWait
    "sync.Mutex.Lock",               // 22 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",            // 23 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",             // 24 waitReasonSyncRWMutexLock
    "sync.WaitGroup.Wait",           // 25 waitReasonSyncWaitGroupWait
    "trace reader (blocked)",        // 26 waitReasonTraceReaderBlocked
    "wait for GC cycle",             // 27 waitReasonWaitForGCCycle
    "GC worker (idle)",              // 28 waitReasonGCWorkerIdle
    "GC worker (active)",            // 29 waitReasonGCWorkerActive
    "preempted",                     // 30 waitReasonPreempted
    "debug call",                    // 31 waitReasonDebugCall
    "GC mark termination",           // 32 waitReasonGCMarkTermination
    "stopping the world",            // 33 waitReasonStoppingTheWorld
    "flushing proc caches",          // 34 waitReasonFlushProcCaches
    "trace goroutine status",        // 35 waitReasonTraceGoroutineStatus
    "trace proc status",             // 36 waitReasonTraceProcStatus
    "page trace flush",              // 37 waitReasonPageTraceFlush
    "coroutine",                     // 38 waitReasonCoroutine
    "GC weak to strong wait",        // 39 waitReasonGCWeakToStrongWait
    "synctest.Run",                  // 40 waitReasonSynctestRun
    "synctest.Wait",                 // 41 waitReasonSynctestWait
    "chan receive (durable)",        // 42 waitReasonSynctestChanReceive
    "chan send (durable)",           // 43 waitReasonSynctestChanSend
    "select (durable)",              // 44 waitReasonSynctestSelect
    "sync.WaitGroup.Wait (durable)", // 45 waitReasonSynctestWaitGroupWait
    "cleanup wait",                  // 46 waitReasonCleanupWait
];

/// Wait reasons of Go 1.26 (`runtime/runtime2.go`, `waitReasonStrings`).
const GO_1_26: &[&str] = &[
    "",                              // 0 waitReasonZero
    "GC assist marking",             // 1 waitReasonGCAssistMarking
    "IO wait",                       // 2 waitReasonIOWait
    "dumping heap",                  // 3 waitReasonDumpingHeap
    "garbage collection",            // 4 waitReasonGarbageCollection
    "garbage collection scan",       // 5 waitReasonGarbageCollectionScan
    "panicwait",                     // 6 waitReasonPanicWait
    "GC assist wait",                // 7 waitReasonGCAssistWait
    "GC sweep wait",                 // 8 waitReasonGCSweepWait
    "GC scavenge wait",              // 9 waitReasonGCScavengeWait
    "finalizer wait",                // 10 waitReasonFinalizerWait
    "force gc (idle)",               // 11 waitReasonForceGCIdle
    "GOMAXPROCS updater (idle)",     // 12 waitReasonUpdateGOMAXPROCSIdle
    "semacquire",                    // 13 waitReasonSemacquire
    "sleep",                         // 14 waitReasonSleep
    "chan receive (nil chan)",       // 15 waitReasonChanReceiveNilChan
    "chan send (nil chan)",          // 16 waitReasonChanSendNilChan
    "select (no cases)",             // 17 waitReasonSelectNoCases
    "select",                        // 18 waitReasonSelect
    "chan receive",                  // 19 waitReasonChanReceive
    "chan send",                     // 20 waitReasonChanSend
    "sync.Cond.Wait",                // 21 waitReasonSyncCondWait
    "sync.Mutex.Lock",               // 22 waitReasonSyncMutexLock
    "sync.RWMutex.RLock",            // 23 waitReasonSyncRWMutexRLock
    "sync.RWMutex.Lock",             // 24 waitReasonSyncRWMutexLock
    "sync.WaitGroup.Wait",           // 25 waitReasonSyncWaitGroupWait
    "trace reader (blocked)",        // 26 waitReasonTraceReaderBlocked
    "wait for GC cycle",             // 27 waitReasonWaitForGCCycle
    "GC worker (idle)",              // 28 waitReasonGCWorkerIdle
    "GC worker (active)",            // 29 waitReasonGCWorkerActive
    "preempted",                     // 30 waitReasonPreempted
    "debug call",                    // 31 waitReasonDebugCall
    "GC mark termination",           // 32 waitReasonGCMarkTermination
    "stopping the world",            // 33 waitReasonStoppingTheWorld
    "flushing proc caches",          // 34 waitReasonFlushProcCaches
    "trace goroutine status",        // 35 waitReasonTraceGoroutineStatus
    "trace proc status",             // 36 waitReasonTraceProcStatus
    "page trace flush",              // 37 waitReasonPageTraceFlush
    "coroutine",                     // 38 waitReasonCoroutine
    "GC weak to strong wait",        // 39 waitReasonGCWeakToStrongWait
    "synctest.Run",                  // 40 waitReasonSynctestRun
    "synctest.Wait",                 // 41 waitReasonSynctestWait
    "chan receive (durable)",        // 42 waitReasonSynctestChanReceive
    "chan send (durable)",           // 43 waitReasonSynctestChanSend
    "select (durable)",              // 44 waitReasonSynctestSelect
    "sync.WaitGroup.Wait (durable)", // 45 waitReasonSynctestWaitGroupWait
    "cleanup wait",                  // 46 waitReasonCleanupWait
];

/// The wait reason table of `version`'s release family, in enum order (index = raw value).
pub fn table(version: &GoVersion) -> Option<&'static [&'static str]> {
    match version.family() {
        (1, 19) => Some(GO_1_19),
        (1, 20 | 21) => Some(GO_1_21),
        (1, 22) => Some(GO_1_22),
        (1, 23) => Some(GO_1_23),
        (1, 24) => Some(GO_1_24),
        (1, 25) => Some(GO_1_25),
        (1, 26 | 27) => Some(GO_1_26),
        _ => None,
    }
}

/// The name Go prints for wait reason `raw` in a binary built by `version`.
///
/// `None` for `waitReasonZero` (0: no reason), for a value past the release's table, or for a
/// release without a table.
pub fn name(version: &GoVersion, raw: u8) -> Option<&'static str> {
    table(version)?
        .get(usize::from(raw))
        .copied()
        .filter(|name| !name.is_empty())
}

/// The raw value of the wait reason Go prints as `name` in `version` (the inverse of [`name`]).
pub fn raw(version: &GoVersion, name: &str) -> Option<u8> {
    let index = table(version)?
        .iter()
        .position(|n| !n.is_empty() && *n == name)?;
    u8::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(minor: u32) -> GoVersion {
        GoVersion::new(1, minor, 0)
    }

    #[test]
    fn names_common_reasons_per_release() {
        // Values as in each release's runtime2.go.
        assert_eq!(name(&go(19), 14), Some("chan receive"));
        assert_eq!(name(&go(19), 19), Some("sleep"));
        assert_eq!(name(&go(21), 21), Some("sync.Mutex.Lock"));
        assert_eq!(name(&go(24), 2), Some("IO wait"));
        assert_eq!(name(&go(25), 9), Some("select"));
        // Go 1.26 moved the channel reasons together.
        assert_eq!(raw(&go(25), "chan receive"), Some(14));
        assert_eq!(raw(&go(26), "chan receive"), Some(19));
        assert_eq!(name(&go(27), 19), Some("chan receive"));
        assert_eq!(raw(&go(27), "select"), Some(18));
    }

    #[test]
    fn unknown_values_and_releases_have_no_name() {
        assert_eq!(name(&go(21), 0), None);
        assert_eq!(name(&go(19), 27), None);
        assert_eq!(name(&go(27), 255), None);
        assert_eq!(name(&go(18), 14), None);
        assert_eq!(name(&go(28), 14), None);
        assert_eq!(raw(&go(21), ""), None);
    }

    #[test]
    fn every_supported_release_has_a_table_with_the_basic_reasons() {
        for minor in 19..=27 {
            let t = table(&go(minor)).unwrap();
            assert_eq!(t[0], "", "1.{minor}");
            for reason in [
                "chan receive",
                "chan send",
                "select",
                "sleep",
                "IO wait",
                "semacquire",
            ] {
                assert!(raw(&go(minor), reason).is_some(), "1.{minor} {reason}");
            }
            // Names are unique within a release.
            let mut names: Vec<_> = t.to_vec();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.len(), "1.{minor}");
        }
    }
}
