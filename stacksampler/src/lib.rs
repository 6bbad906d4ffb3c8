//! stacksampler: an eBPF live stack sampler for running Go programs.
//!
//! Data flows one way: kernel sample ([`loader`], [`sampler`]) -> decode ([`sample`]) ->
//! filter ([`filter`]) -> aggregate ([`aggregate`]) -> symbolize unique addresses once
//! ([`symbolize`]) -> diagnose ([`diagnose`]) -> render ([`report`]). [`run`] wires the stages;
//! [`config`] is the command line; [`target`] and [`goruntime`] describe the process sampled.

pub mod aggregate;
pub mod config;
pub mod diagnose;
pub mod dump;
pub mod events;
pub mod filter;
pub mod goruntime;
pub mod images;
pub mod labels;
pub mod loader;
pub mod report;
pub mod run;
pub mod sample;
pub mod sampler;
pub mod symbolize;
pub mod target;
pub mod unwind;
