//! The attestation evidence verifier (`teectl verify` reads evidence from
//! anyone), versions 1 and 2: never panics, and what verifies has exactly
//! its version's length and claims (`hakeys_engine::fuzzing::evidence_verify`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hakeys_engine::fuzzing::evidence_verify(data);
});
