//! What stacksampler knows about the Go runtime of a target binary: its version, the layout of
//! `runtime.g`/`runtime.m`/`runtime.gobuf`, goroutine states and wait reasons.

pub mod state;
