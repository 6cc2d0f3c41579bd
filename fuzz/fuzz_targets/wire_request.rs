//! The request decoder: never panics; whatever it accepts re-encodes to a
//! message that decodes to the same request.
#![no_main]

use hakeys_proto::{decode_request, encode_request, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let mut buf = [0u8; MAX_MESSAGE_LEN];
        let n = encode_request(&req, &mut buf).expect("a decoded request re-encodes");
        assert_eq!(decode_request(&buf[..n]).as_ref(), Ok(&req));
    }
});
