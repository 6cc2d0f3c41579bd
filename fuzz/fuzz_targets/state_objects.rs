//! The engine's state decoders (v1 state record, slot formats 2 to 4, the
//! initialisation marker) and load rules, on storage holding arbitrary
//! objects: a load answers a state, "not initialised" or corrupt; a loaded
//! state survives a commit; init never makes a key over lost state
//! (`hakeys_engine::fuzzing::state_objects`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hakeys_engine::fuzzing::state_objects(data);
});
