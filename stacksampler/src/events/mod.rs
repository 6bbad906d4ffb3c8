//! Runtime events as a stage: the decoded uprobe records ([`crate::bpf::runtime_event`], probed
//! where [`crate::bpf::sites`] says, attached by [`crate::bpf::uprobes`]) folded by the
//! [`Tracker`] into growth sequences per goroutine, live goroutines and their creation stacks,
//! fatal errors and `--stack-alert` crossings. [`crate::report::events`] turns a tracker into the
//! report (fatal error first), the `watch` verb ([`crate::watch`]) and a `record` run
//! (`crate::record`) each feed their own tracker. See `docs/runtime-events.md`.

pub mod tracker;

pub use tracker::Tracker;
