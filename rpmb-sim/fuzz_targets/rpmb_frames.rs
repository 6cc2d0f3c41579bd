//! cargo-fuzz target: arbitrary bytes as RPMB frame transactions against an
//! in-memory rpmb-sim device (see `rpmb_sim::fuzzing::process_arbitrary`
//! for the input format and the properties checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rpmb_sim::fuzzing::process_arbitrary(data);
});
