//! The daemon's request decoder (`teed`, protocol v1): never panics on any
//! line; whatever it accepts is within every bound the engine and the
//! policy rely on; whatever it refuses gets a one-line JSON answer.
#![no_main]

use hakeys_engine::{blob, namespace};
use libfuzzer_sys::fuzz_target;
use teed_protocol::{decode_request, encode_error, Request, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(Request::Seal(s)) => {
            assert!(data.len() < MAX_LINE);
            assert!(namespace::is_valid(&s.namespace));
            assert!(!s.plaintext.is_empty() && s.plaintext.len() <= hakeys_proto::MAX_SECRET_LEN);
        }
        Ok(Request::Unseal(u)) => {
            let parsed = blob::parse(&u.blob).expect("an accepted blob parses");
            assert_eq!(parsed.namespace, u.blob_namespace);
            assert!(namespace::is_valid(&u.blob_namespace));
            assert!(u.namespace.as_deref().is_none_or(namespace::is_valid));
        }
        Ok(Request::Pubkey | Request::Status) => {}
        Err(e) => {
            let line = encode_error(e.code, &e.message, None);
            assert!(line.ends_with(b"\n") && line.iter().filter(|b| **b == b'\n').count() == 1);
            assert!(line.len() < 512, "error answers stay short");
        }
    }
});
