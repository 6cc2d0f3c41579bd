//! The engine's dispatcher, as the TA's entry point sees it: any bytes in,
//! always a well-formed response out, never a panic.
#![no_main]

use hakeys_engine::{Engine, Entropy, EntropyError, MemoryStorage};
use hakeys_proto::{
    decode_response, request_opcode_raw, response_status, Opcode, MAX_MESSAGE_LEN,
    RESPONSE_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), EntropyError> {
        for b in out {
            self.0 = self.0.wrapping_mul(31).wrapping_add(17);
            *b = self.0;
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut e = Engine::new(MemoryStorage::default(), Counter(1));
    let mut out = [0u8; MAX_MESSAGE_LEN];
    // Initialise first so that the stateful paths are reachable.
    let init = [b'H', b'K', b'R', b'Q', 1, 0, 0x01, 0x01];
    e.handle(&init, &mut out);
    // Several requests per input, split on a separator byte pattern.
    for msg in data.split(|b| *b == 0xF7) {
        let n = e.handle(msg, &mut out);
        assert!(n >= RESPONSE_HEADER_LEN && n <= MAX_MESSAGE_LEN);
        response_status(&out[..n]).expect("the engine's response header is valid");
        // The response echoes the request's opcode; a known one decodes.
        if let Some(op) = request_opcode_raw(msg).and_then(Opcode::from_u16) {
            decode_response(&out[..n], op).expect("the engine's responses decode");
        }
    }
});
