//! A ring-buffer record of the sampling program, as user space decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::{native::NativeUnwinder, sample::Sample, symbolize::ProcessSymbolizer};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut sample) = Sample::decode(data) {
        let _ = sample.depth();
        let _ = sample.state();
        let _ = sample.switch_origin();
        // A native part (trailer and stack copy) is spliced in whatever its fields say.
        NativeUnwinder::default().complete(&mut sample, &ProcessSymbolizer::empty(0));
        let _ = sample.depth();
    }
});
