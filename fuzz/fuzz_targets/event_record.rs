//! A ring-buffer record of the runtime-event probes, as user space decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::bpf::runtime_event::RuntimeEvent;

fuzz_target!(|data: &[u8]| {
    let _ = RuntimeEvent::decode(data);
});
