//! stacksampler: an eBPF live stack sampler for running Go programs.
//!
//! Data flows one way: kernel sample ([`bpf`]) -> decode ([`sample`]) -> complete from the
//! target's memory and filter ([`deep_stack`], [`record`]: `labels`, `filter`) -> aggregate
//! ([`aggregate`]) -> symbolize unique addresses once ([`symbolize`]) -> diagnose ([`diagnose`])
//! -> render ([`report`]); runtime events go from [`bpf`] through [`events`] to
//! [`report::events`]. [`record`] wires the stages of a `record` run, [`watch`] the `watch`
//! verb, [`inspect`] the `inspect` verb, [`agent`] the `agent` verb (continuous profiling, one
//! record run per process cut into intervals), [`session`] their stop conditions; [`target`] and
//! [`goruntime`] describe the process sampled. The library takes typed options and never
//! prints: the command line and the terminal are the binary's (`main.rs`, `cli.rs`,
//! `status.rs`).

pub mod agent;
pub mod aggregate;
pub mod bpf;
pub mod deep_stack;
pub mod diagnose;
pub mod dump;
pub mod events;
pub mod goruntime;
pub mod images;
pub mod inspect;
pub mod markers;
pub mod native;
pub mod otlp;
pub mod record;
pub mod report;
pub mod sample;
pub mod session;
pub mod snapshots;
pub mod symbolize;
pub mod target;
pub mod top;
pub mod units;
pub mod warning;
pub mod watch;

#[cfg(test)]
mod import_graph;
