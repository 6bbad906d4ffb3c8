//! A ring-buffer record of the sampling program, as user space decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::{native::NativeUnwinder, sample::Sample, symbolize::ProcessSymbolizer};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut sample) = Sample::decode(data) {
        let _ = sample.depth();
        let _ = sample.state();
        // The switch index comes from the record: cutting the system side at any frame before
        // it, then inserting the morestack caller, must stay in bounds.
        if let Some(at) = sample.switch_index
            && sample.end_system_side_at(at / 2)
        {
            sample.complete_morestack_switch();
        }
        sample.complete_frameless_leaf();
        // A native part (trailer and stack copy) is spliced in whatever its fields say.
        NativeUnwinder::default().complete(&mut sample, &ProcessSymbolizer::empty(0));
        let _ = sample.depth();
    }
});
