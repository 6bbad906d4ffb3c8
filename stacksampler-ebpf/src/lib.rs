//! This library target exists so that `stacksampler` can name this crate as a build-dependency
//! (cargo then rebuilds it when the eBPF sources change); the program is the `stacksampler` binary.
#![no_std]
