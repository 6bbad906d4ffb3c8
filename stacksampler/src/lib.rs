//! stacksampler: an eBPF live stack sampler for running Go programs.
//!
//! Data flows one way: kernel sample ([`bpf`]) -> decode ([`sample`]) ->
//! filter ([`filter`]) -> aggregate ([`aggregate`]) -> symbolize unique addresses once
//! ([`symbolize`]) -> diagnose ([`diagnose`]) -> render ([`report`]). [`run`] wires the stages
//! of a `record` run, [`events`] the `watch` verb, [`inspect`] the `inspect` verb; [`target`] and
//! [`goruntime`] describe the process sampled. The library takes typed options: the command
//! line is the binary's (`main.rs`, `cli.rs`).

pub mod aggregate;
pub mod bpf;
pub mod diagnose;
pub mod events;
pub mod filter;
pub mod goruntime;
pub mod images;
pub mod inspect;
pub mod labels;
pub mod report;
pub mod run;
pub mod sample;
pub mod symbolize;
pub mod target;
pub mod unwind;
