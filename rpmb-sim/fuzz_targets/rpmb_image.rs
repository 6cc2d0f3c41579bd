//! cargo-fuzz target: crash recovery on an image whose superblock, state
//! slots and journal were patched with arbitrary bytes (see
//! `rpmb_sim::fuzzing::open_arbitrary_image`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rpmb_sim::fuzzing::open_arbitrary_image(data);
});
