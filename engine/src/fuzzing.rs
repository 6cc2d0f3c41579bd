//! Entry points and oracles of the cargo-fuzz targets that drive the engine
//! (`fuzz/fuzz_targets/`), built only with the `fuzzing` feature (never in
//! the TA) and with the crate's tests. They live here, like rpmb-sim's, so
//! that the targets and the tests that write their seeds (`fuzz/seeds/`,
//! `fuzzing/tests.rs`) share one harness: a seed that opens a blob opens it
//! in the fuzzer too.
//!
//! Unlike the rest of the crate they panic on purpose: an `assert!` here is
//! the fuzz oracle (a property that failed).

use hakeys_proto::{
    self as proto, decode_response, request_opcode_raw, response_status, Opcode, Request, Response,
    Status, MAX_MESSAGE_LEN, RESPONSE_HEADER_LEN,
};

use crate::{
    attest, crypto, permitted, Caller, Engine, Entropy, EntropyError, MemoryStorage, ObjectId,
    SecureStorage,
};

/// Deterministic "entropy" (SplitMix64 from a seed): every run of a target
/// draws the same bytes, so the blobs its seeds carry are the ones its
/// engine seals, and a new identity differs from the first. Never for keys.
#[derive(Debug, Clone)]
pub struct CounterEntropy(pub u64);

impl Entropy for CounterEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            for (b, v) in chunk.iter_mut().zip(z.to_be_bytes()) {
                *b = v;
            }
        }
        Ok(())
    }
}

/// The engine every `engine_handle` run starts from: in memory, entropy
/// [`CounterEntropy`]`(1)`, initialised (so every stateful path is
/// reachable from the first message).
pub fn initialised_engine() -> Engine<MemoryStorage, CounterEntropy> {
    let mut e = Engine::new(MemoryStorage::default(), CounterEntropy(1));
    let mut out = [0u8; MAX_MESSAGE_LEN];
    e.handle(b"HKRQ\x01\x00\x01\x01", &mut out);
    e
}

/// Most requests `engine_handle` sends from one input. Every operation is
/// reached within a few (the longest seed has 9); a bound keeps libFuzzer
/// from favouring inputs that only repeat an expensive operation (P-256
/// arithmetic under coverage instrumentation costs about a millisecond), so
/// that ten million runs take hours, not days.
pub const MAX_MESSAGES: usize = 10;

/// The messages of an `engine_handle` input: each is a `u16` LE length and
/// that many bytes (fewer if the input ends first).
#[derive(Debug, Clone)]
pub struct Messages<'a>(pub &'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (msg, rest) = rest.split_at_checked(n)?;
        self.0 = rest;
        Some(msg)
    }
}

/// [`engine_handle_on`] a fresh [`initialised_engine`].
pub fn engine_handle(data: &[u8]) {
    engine_handle_on(&initialised_engine(), data);
}

/// The dispatcher, as the TA's entry point sees it: any bytes in, always a
/// well-formed response out, never a panic; a response to a known opcode
/// decodes as that opcode's response. The first [`MAX_MESSAGES`] messages
/// of the input are sent. Runs on a copy of `engine` (the
/// target keeps one [`initialised_engine`]: making the identity costs more,
/// instrumented, than most inputs).
pub fn engine_handle_on(engine: &Engine<MemoryStorage, CounterEntropy>, data: &[u8]) {
    let mut e = engine.clone();
    let mut out = [0u8; MAX_MESSAGE_LEN];
    for msg in Messages(data).take(MAX_MESSAGES) {
        // A request the TEE's non-root identities may not make is refused
        // for them, and the refusal reads and changes nothing.
        if let Ok(req) = proto::decode_request(msg) {
            if !permitted(Caller::Client, &req) {
                let (before, locked) = (e.storage.clone(), e.boot_locked);
                let n = e.handle_as(Caller::Client, msg, &mut out);
                let resp = out.get(..n).unwrap_or_default();
                assert_eq!(response_status(resp), Ok(Status::IdentityRefused));
                assert!(e.storage == before && e.boot_locked == locked);
            }
        }
        let n = e.handle(msg, &mut out);
        assert!((RESPONSE_HEADER_LEN..=MAX_MESSAGE_LEN).contains(&n));
        let resp = out.get(..n).unwrap_or_default();
        assert!(response_status(resp).is_ok(), "a valid response header");
        if let Some(op) = request_opcode_raw(msg).and_then(Opcode::from_u16) {
            assert!(decode_response(resp, op).is_ok(), "a response that decodes");
        }
    }
}

/// One request through the encoder and the engine's `handle`, as a backend
/// sends it; the response must decode.
fn call<S: SecureStorage, E: Entropy>(
    e: &mut Engine<S, E>,
    req: &Request,
) -> Result<Response, Status> {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let mut out = [0u8; MAX_MESSAGE_LEN];
    let n = proto::encode_request(req, &mut buf).unwrap_or(0);
    let m = e.handle(buf.get(..n).unwrap_or_default(), &mut out);
    let decoded = decode_response(out.get(..m).unwrap_or_default(), req.opcode());
    assert!(decoded.is_ok(), "the engine's response decodes");
    decoded.unwrap_or(Err(Status::Internal))
}

/// The order in which a `state_objects` input fills the objects.
pub const STATE_OBJECTS: [ObjectId; 4] = [
    ObjectId::LegacyState,
    ObjectId::SlotA,
    ObjectId::SlotB,
    ObjectId::Marker,
];

/// What a fresh engine says about the state: initialised?, epochs, device
/// key (read from its loaded state: no scalar multiplication, which the
/// coverage instrumentation makes slow).
fn observe(mem: &MemoryStorage) -> Result<Option<(u32, u32, [u8; 32])>, Status> {
    let mut e = Engine::new(mem.clone(), CounterEntropy(9));
    let Response::Status(st) = call(&mut e, &Request::Status)? else {
        return Err(Status::Internal);
    };
    if !st.initialised {
        return Ok(None);
    }
    let device = e.cached.as_ref().map(|l| l.state.device_key);
    Ok(device.map(|d| (st.epoch, st.min_epoch, d)))
}

/// The state decoders (v1 state record, slot formats 2 to 4, the marker)
/// and the load rules, on storage holding arbitrary objects: for
/// [`STATE_OBJECTS`] in order, one byte `n` (0: the object is missing) and
/// `n - 1` bytes of content.
///
/// Properties: a load answers a state, "not initialised" or
/// `StorageCorrupt`, nothing else; a loaded state survives a commit (a
/// fresh engine then sees the next epoch, the same floor and the same
/// identity, and the unmarked-offline flag); `init` never makes a key over
/// corrupt state.
pub fn state_objects(data: &[u8]) {
    let mut mem = MemoryStorage::default();
    let mut rest = data;
    for id in STATE_OBJECTS {
        let Some((&n, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(n).saturating_sub(1).min(tail.len());
        let (object, tail) = tail.split_at(len);
        rest = tail;
        if n != 0 {
            assert!(mem.write(id, object).is_ok());
        }
    }
    // Sequence numbers run out at u64::MAX (after 2^64 writes, or in a
    // forged slot): then a commit fails as corrupt, and may.
    let exhausted = [ObjectId::SlotA, ObjectId::SlotB].iter().any(|id| {
        mem.object_mut(*id)
            .and_then(|o| o.get(5..13))
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .is_some_and(|s| u64::from_be_bytes(s) == u64::MAX)
    });
    let mut e = Engine::new(mem, CounterEntropy(3));
    let before = match call(&mut e, &Request::Status) {
        Ok(Response::Status(st)) => st,
        r => {
            assert!(
                r == Err(Status::StorageCorrupt),
                "a load fails only as corrupt: {r:?}"
            );
            assert!(call(&mut e, &Request::Init) == Err(Status::StorageCorrupt));
            return;
        }
    };
    let Some(device) = e.cached.as_ref().map(|l| l.state.device_key) else {
        assert!(!before.initialised);
        return;
    };
    assert!(before.initialised);
    let (epoch, min_epoch) = (before.epoch, before.min_epoch);
    let r = call(&mut e, &Request::Rotate);
    match r {
        Ok(_) => {
            let r = call(&mut e, &Request::RetireUnmarked);
            assert!(r.is_ok(), "retire-unmarked: {r:?}");
            let after = observe(e.storage_mut());
            assert!(
                after == Ok(Some((epoch + 1, min_epoch, device))),
                "commit kept"
            );
            assert!(matches!(&e.cached, Some(l) if l.state.unmarked_offline_retired));
        }
        Err(Status::InvalidArgument) => assert!(epoch == u32::MAX),
        Err(s) => assert!(exhausted && s == Status::StorageCorrupt, "rotate: {s:?}"),
    }
}

/// The attestation key of the golden fixtures' root key (`0x11` × 32), the
/// key of `engine/tests/golden/evidence_v2.hex`.
pub const FIXTURE_ATTESTATION_KEY: [u8; 65] = hex65(
    b"04709604219654c4f64477eb76eecb79f604a61936c8ae9113971cf3dbbb6645389deeaf0d32fd915891470939b2efd68fc2e8335dc68da1a8eabebda050b34cea",
);
/// The device key of the golden fixtures (RFC 6979 A.2.5's), the key of
/// `engine/tests/golden/evidence_v1.hex`.
pub const FIXTURE_DEVICE_KEY: [u8; 65] = hex65(
    b"0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299",
);

// reason: const evaluation only; a bad literal fails the build.
#[allow(clippy::indexing_slicing, clippy::panic)]
const fn hex65(s: &[u8; 130]) -> [u8; 65] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let mut out = [0u8; 65];
    let mut i = 0;
    while i < 65 {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// The evidence verifier (`teectl verify` reads evidence from anyone), with
/// the challenge the evidence itself names when it is a valid one (so the
/// signature check is reached), against the fixtures' attestation key and
/// device key.
///
/// Properties: never panics; what verifies has exactly its version's length
/// and claims that re-encode to the signed bytes.
pub fn evidence_verify(data: &[u8]) {
    let named = data
        .get(5)
        .and_then(|n| data.get(6..6 + usize::from(*n)))
        .filter(|c| !c.is_empty() && c.len() <= proto::MAX_CHALLENGE_LEN);
    let challenge = named.unwrap_or(b"nonce-123");
    // Version 2 is signed by the attestation key, version 1 by the device
    // key: the other would only fail the signature (at twice the cost).
    let key = if data.get(4) == Some(&attest::EVIDENCE_VERSION_1) {
        FIXTURE_DEVICE_KEY
    } else {
        FIXTURE_ATTESTATION_KEY
    };
    {
        let Ok(pk) = crypto::parse_public_key(&key) else {
            return;
        };
        let Ok(v) = attest::verify(&pk, challenge, data) else {
            return;
        };
        let c = v.claims();
        let mut fixed = [0u8; 12];
        fixed
            .iter_mut()
            .zip(
                c.engine_version
                    .to_be_bytes()
                    .into_iter()
                    .chain(c.epoch.to_be_bytes())
                    .chain(c.min_epoch.to_be_bytes()),
            )
            .for_each(|(d, s)| *d = s);
        let after = 6 + challenge.len();
        assert!(
            data.get(after..after + 12) == Some(&fixed[..]),
            "claims re-encode"
        );
        let tail = match &v {
            attest::Verified::V1(_) => 0,
            attest::Verified::V2(v2) => {
                assert!(data.get(after + 12 + 6..after + 12 + 6 + 65) == Some(&v2.sealing_key[..]));
                6 + 65
            }
        };
        assert!(
            data.len() == after + 12 + tail + attest::SIGNATURE_LEN,
            "exact length"
        );
    }
}

#[cfg(test)]
mod tests;
