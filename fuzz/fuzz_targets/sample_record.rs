//! A ring-buffer record of the sampling program, as user space decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::sample::Sample;

fuzz_target!(|data: &[u8]| {
    if let Ok(sample) = Sample::decode(data) {
        let _ = sample.depth();
        let _ = sample.state();
        let _ = sample.switch_origin();
    }
});
