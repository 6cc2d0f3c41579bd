//! The blob parser and opener: never panics, and nothing opens under a key
//! it was not sealed with (the fuzzer cannot forge a GCM tag).
#![no_main]

use hakeys_engine::blob;
use hakeys_proto::Secret;
use libfuzzer_sys::fuzz_target;

const ROOT: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = blob::parse(data) {
        assert!(p.aad.len() + p.ciphertext.len() + p.tag.len() == data.len());
        let mut out = Secret::new();
        let device = p256::SecretKey::from_slice(&[7u8; 32]).expect("valid scalar");
        match p.kind {
            blob::Kind::Device => assert!(blob::open_device(&ROOT, &p, &mut out).is_err()),
            blob::Kind::ToDevice => assert!(blob::open_to_device(&device, &p, &mut out).is_err()),
        }
        assert!(out.is_empty(), "a failed open leaves no plaintext");
    }
});
