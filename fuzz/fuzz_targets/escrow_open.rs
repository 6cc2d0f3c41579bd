//! The escrow parser and opener (`teectl recover` reads escrows from files):
//! never panics, and nothing opens that was not sealed to the recovery key
//! (the fuzzer cannot forge a GCM tag).
#![no_main]

use hakeys_engine::escrow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = escrow::header(data);
    let recovery = p256::SecretKey::from_slice(&[7u8; 32]).expect("valid scalar");
    assert!(escrow::open(&recovery, data).is_err());
});
