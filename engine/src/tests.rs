//! Engine tests: known-answer vectors for the primitives, golden fixtures for
//! the formats, and negative tests for every way a blob can be refused.

use std::vec::Vec as StdVec;

use hakeys_proto::{
    self as proto, AttestRequest, BlobBytes, Request, Response, RetireRequest, RewrapRequest,
    SealRequest, Status, UnsealRequest,
};
use p256::SecretKey;

use super::*;

fn h(s: &str) -> StdVec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).expect("test hex")
}

/// Deterministic entropy for tests (xorshift64*), never for real keys.
pub(crate) struct TestEntropy(pub(crate) u64);

impl Entropy for TestEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), EntropyError> {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
        Ok(())
    }
}

/// In-memory storage that counts stores; `fail_next_store` simulates a
/// store that did not happen.
#[derive(Default, Clone)]
pub(crate) struct MemStorage {
    inner: MemoryStorage,
    fail_next_store: bool,
    stores: usize,
}

impl MemStorage {
    /// Every object's bytes.
    fn objects(&mut self) -> StdVec<Option<StdVec<u8>>> {
        ObjectId::ALL
            .iter()
            .map(|id| self.inner.object_mut(*id).map(|r| r.to_vec()))
            .collect()
    }
}

impl SecureStorage for MemStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        self.inner.read(id, buf)
    }
    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
        if std::mem::take(&mut self.fail_next_store) {
            return Err(StorageError::Io);
        }
        self.stores += 1;
        self.inner.write(id, data)
    }
}

type TestEngine = Engine<MemStorage, TestEntropy>;

fn engine(seed: u64) -> TestEngine {
    let mut e = Engine::new(MemStorage::default(), TestEntropy(seed));
    assert_eq!(
        call(&mut e, Request::Init),
        Ok(Response::Init(InitResponse {
            created: true,
            epoch: 1
        }))
    );
    e
}

/// Drive the engine through encoded messages, exactly as a backend does.
pub(crate) fn call<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    req: Request,
) -> Result<Response, Status> {
    let mut buf = [0u8; proto::MAX_MESSAGE_LEN];
    let n = proto::encode_request(&req, &mut buf).expect("encode");
    let mut out = [0u8; proto::MAX_MESSAGE_LEN];
    let m = e.handle(&buf[..n], &mut out);
    proto::decode_response(&out[..m], req.opcode()).expect("engine response decodes")
}

pub(crate) fn ns(s: &str) -> proto::Namespace {
    proto::Namespace::try_from(s).expect("namespace fits")
}

pub(crate) fn seal<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    namespace: &str,
    pt: &[u8],
) -> StdVec<u8> {
    let req = Request::Seal(SealRequest {
        namespace: ns(namespace),
        plaintext: pt.try_into().expect("fits"),
    });
    match call(e, req) {
        Ok(Response::Seal(b)) => b.blob.to_vec(),
        other => panic!("seal failed: {other:?}"),
    }
}

fn unseal_as<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    blob: &[u8],
    expected: Option<&str>,
) -> Result<StdVec<u8>, Status> {
    let req = Request::Unseal(UnsealRequest {
        blob: blob.try_into().map_err(|_| Status::TooLarge)?,
        namespace: expected.map(ns),
    });
    match call(e, req)? {
        Response::Unseal(r) => Ok(r.plaintext.to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

pub(crate) fn unseal<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    blob: &[u8],
) -> Result<StdVec<u8>, Status> {
    unseal_as(e, blob, None)
}

pub(crate) fn device_pubkey<S: SecureStorage>(e: &mut Engine<S, TestEntropy>) -> p256::PublicKey {
    match call(e, Request::Pubkey) {
        Ok(Response::Pubkey(p)) => p256::PublicKey::from_sec1_bytes(&p.sec1).expect("valid point"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- KATs

#[test]
fn kat_hmac_sha256_rfc4231() {
    // RFC 4231 test cases 1, 2 and 6 (a key longer than the block), and a
    // key of exactly one block (Python's `hmac`).
    let cases: [(&[u8], &[u8], &str); 4] = [
        (
            &[0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            &[0xaa; 64],
            b"x",
            "ce3c639dcb9d8baae5d44c3b8b5e233faab4d1860e07489af5c84f213998bd79",
        ),
    ];
    for (key, data, want) in cases {
        let mut out = [0u8; 32];
        crypto::hmac_sha256(key, |h| sha2::Digest::update(h, data), &mut out);
        assert_eq!(out.to_vec(), h(want));
    }
}

/// The primitives that hold key material wipe their own state when dropped
/// (issue 13, item 7): the AES-GCM key schedule and GHASH key (`aes-gcm`'s
/// `zeroize` feature, forwarded to `aes` and `ghash`), and the SHA-256
/// states that hold the root key while HKDF extracts from it (`sha2`'s
/// `zeroize` feature). Without those features this does not compile.
#[test]
fn key_holding_primitives_wipe_their_state_on_drop() {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<aes_gcm::Aes256Gcm>();
    wiped_on_drop::<sha2::Sha256>();
    wiped_on_drop::<p256::SecretKey>();
}

#[test]
fn kat_hkdf_sha256_rfc5869() {
    // RFC 5869 A.1 and A.3.
    let mut okm = [0u8; 42];
    crypto::hkdf_sha256(
        &h("000102030405060708090a0b0c"),
        &[0x0b; 22],
        &[&h("f0f1f2f3f4f5f6f7f8f9")],
        &mut okm,
    )
    .unwrap();
    assert_eq!(
        okm.to_vec(),
        h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    );
    // The same info given in two parts is the same expansion.
    let mut okm2 = [0u8; 42];
    crypto::hkdf_sha256(
        &h("000102030405060708090a0b0c"),
        &[0x0b; 22],
        &[&h("f0f1f2f3f4"), &h("f5f6f7f8f9")],
        &mut okm2,
    )
    .unwrap();
    assert_eq!(okm, okm2);
    crypto::hkdf_sha256(&[], &[0x0b; 22], &[], &mut okm).unwrap();
    assert_eq!(
        okm.to_vec(),
        h("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    );
}

fn kn(key: &str, nonce: &str) -> crypto::KeyNonce {
    let mut k = zeroize::Zeroizing::new([0u8; 44]);
    k[..32].copy_from_slice(&h(key));
    k[32..].copy_from_slice(&h(nonce));
    k
}

#[test]
fn kat_aes256_gcm_nist() {
    // The GCM specification's test cases 14 and 16 (AES-256).
    let k = kn(&"00".repeat(32), &"00".repeat(12));
    let mut buf = [0u8; 16];
    let tag = crypto::aes_gcm_seal(&k, &[], &mut buf).unwrap();
    assert_eq!(buf.to_vec(), h("cea7403d4d606b6e074ec5d3baf39d18"));
    assert_eq!(tag.to_vec(), h("d0d1c8a799996bf0265b98b5d48ab919"));

    let k = kn(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
    );
    let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    let ct = h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662");
    let want_tag = h("76fc6ece0f4e1768cddf8853bb2d551b");
    let mut buf = pt.clone();
    let tag = crypto::aes_gcm_seal(&k, &aad, &mut buf).unwrap();
    assert_eq!(buf, ct);
    assert_eq!(tag.to_vec(), want_tag);
    crypto::aes_gcm_open(&k, &aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, pt);
    // A wrong tag, a wrong AAD: refused.
    let mut buf = ct.clone();
    let mut bad = tag;
    bad[15] ^= 1;
    assert!(crypto::aes_gcm_open(&k, &aad, &mut buf, &bad).is_err());
    let mut buf = ct.clone();
    assert!(crypto::aes_gcm_open(&k, &aad[1..], &mut buf, &tag).is_err());
}

#[test]
fn kat_ecdsa_p256_rfc6979() {
    // RFC 6979 A.2.5, SHA-256, messages "sample" and "test".
    let sk = SecretKey::from_slice(&h(
        "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721",
    ))
    .unwrap();
    let pk = crypto::sec1_uncompressed(&sk.public_key());
    assert_eq!(
        pk.to_vec(),
        h("04 60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6 7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
    );
    use p256::ecdsa::signature::Signer;
    let signer = p256::ecdsa::SigningKey::from(&sk);
    let sig: p256::ecdsa::Signature = signer.sign(b"sample");
    assert_eq!(
        sig.to_bytes().to_vec(),
        h("EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716 F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8")
    );
    let sig: p256::ecdsa::Signature = signer.sign(b"test");
    assert_eq!(
        sig.to_bytes().to_vec(),
        h("F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367 019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083")
    );
}

#[test]
fn kat_ecdh_p256_nist_cavs() {
    // NIST CAVS ECC CDH primitive, P-256, COUNT = 0.
    let d = SecretKey::from_slice(&h(
        "7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534",
    ))
    .unwrap();
    let q = crypto::parse_public_key(&h(
        "04 700c48f77f56584c5cc632ca65640db91b6bacce3a4df6b42ce7cc838833d287 db71e509e3fd9b060ddb20ba5c51dcc5948d46fbf640dfe0441782cab85fa4ac",
    ))
    .unwrap();
    assert_eq!(
        crypto::ecdh(&d, &q).to_vec(),
        h("46fc62106420ff012e54a434fbdd2d25ccc5852060561e68040dd7778997bd7b")
    );
    // Points not on the curve and the identity are refused.
    let mut off = h("04 700c48f77f56584c5cc632ca65640db91b6bacce3a4df6b42ce7cc838833d287 db71e509e3fd9b060ddb20ba5c51dcc5948d46fbf640dfe0441782cab85fa4ac");
    off[64] ^= 1;
    assert!(crypto::parse_public_key(&off).is_err());
    assert!(crypto::parse_public_key(&[0]).is_err());
}

// ---------------------------------------------------------------- golden fixtures

/// Compare with a committed fixture; `HAKEYS_BLESS=1` rewrites it.
pub(crate) fn golden(name: &str, bytes: &[u8]) {
    let path = std::format!("{}/tests/golden/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::format!("{}\n", hex::encode(bytes));
    if std::env::var_os("HAKEYS_BLESS").is_some() {
        std::fs::write(&path, &text).expect("write fixture");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing fixture {path}"));
    assert_eq!(want, text, "{name} no longer matches its golden fixture");
}

pub(crate) const ROOT: [u8; 32] = [0x11; 32];
const SALT: [u8; 16] = [0x22; 16];
pub(crate) const DEVICE_SK: &str =
    "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";
const EPHEMERAL_SK: &str = "7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534";

#[test]
fn golden_device_blob() {
    let b = blob::seal_device(&ROOT, 3, "ha/core", b"hunter2", &SALT).unwrap();
    golden("blob_device_v1", &b);
    let p = blob::parse(&b).unwrap();
    assert_eq!(
        (p.kind, p.namespace, p.epoch),
        (blob::Kind::Device, "ha/core", 3)
    );
    let mut out = Secret::new();
    blob::open_device(&ROOT, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"hunter2");
    // The fixture from the committed file still opens (old format must load).
    let fixture = h(std::fs::read_to_string(std::format!(
        "{}/tests/golden/blob_device_v1.hex",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .trim());
    let p = blob::parse(&fixture).unwrap();
    blob::open_device(&ROOT, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"hunter2");
}

/// The to-device blob of the golden fixture: fixed ephemeral key and salt.
fn to_device_fixture(dev: &SecretKey) -> BlobBytes {
    let eph = SecretKey::from_slice(&h(EPHEMERAL_SK)).unwrap();
    blob::seal_to_device_with(
        &dev.public_key(),
        "addon/mqtt",
        b"mqtt-password",
        &eph,
        &SALT,
    )
    .unwrap()
}

#[test]
fn golden_to_device_blob() {
    let dev = SecretKey::from_slice(&h(DEVICE_SK)).unwrap();
    let b = to_device_fixture(&dev);
    golden("blob_to_device_v1", &b);
    let p = blob::parse(&b).unwrap();
    assert_eq!((p.kind, p.epoch), (blob::Kind::ToDevice, 0));
    let mut out = Secret::new();
    blob::open_to_device(&dev, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"mqtt-password");
    // Generation 3: the same blob format with the board's epoch in the epoch
    // field (authenticated as header; the key does not change).
    let eph = SecretKey::from_slice(&h(EPHEMERAL_SK)).unwrap();
    let b = blob::seal_to_device_with_in(
        &dev.public_key(),
        "addon/mqtt",
        b"mqtt-password",
        3,
        &eph,
        &SALT,
    )
    .unwrap();
    golden("blob_to_device_gen3_v1", &b);
    let p = blob::parse(&b).unwrap();
    assert_eq!((p.kind, p.epoch), (blob::Kind::ToDevice, 3));
    blob::open_to_device(&dev, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"mqtt-password");
    assert_eq!(
        reference(&["open-to-device", DEVICE_SK, &hex::encode(&b)]),
        hex::encode(b"mqtt-password")
    );
}

#[test]
fn golden_state_record() {
    let st = State {
        root_key: ROOT,
        device_key: h(DEVICE_SK).try_into().unwrap(),
        epoch: 7,
        min_epoch: 5,
        recovery: crate::state::NO_RECOVERY_KEY,
        unmarked_offline_retired: false,
    };
    let rec = st.encode();
    golden("state_v1", &rec);
    let back = State::decode(&rec).unwrap();
    assert_eq!((back.epoch, back.min_epoch, back.root_key), (7, 5, ROOT));
    // Impossible records are corrupt, not trusted.
    let mut bad = rec;
    bad[0] = 2;
    assert!(State::decode(&bad).is_err());
    let bad = State {
        min_epoch: 8,
        ..st.clone()
    }
    .encode();
    assert!(State::decode(&bad).is_err());
    let bad = State {
        device_key: [0; 32],
        ..st.clone()
    }
    .encode();
    assert!(State::decode(&bad).is_err());
    assert!(State::decode(&rec[..72]).is_err());
}

#[test]
fn golden_evidence() {
    // Version 1, as the first release made it (deterministic, by the device
    // key, engine 1.0.0): still verified with the device key.
    let dev = SecretKey::from_slice(&h(DEVICE_SK)).unwrap();
    let claims = attest::Claims {
        engine_version: 0x0001_0000,
        epoch: 2,
        min_epoch: 1,
    };
    let ev = attest::sign_v1(&dev, b"nonce-123", &claims).unwrap();
    golden("evidence_v1", &ev);
    assert_eq!(
        attest::verify(&dev.public_key(), b"nonce-123", &ev),
        Ok(attest::Verified::V1(claims))
    );
    // Version 2: by the attestation key of ROOT, hedged with 0x44 × 32.
    let ak = attest::attestation_key(&ROOT).unwrap();
    let v2 = evidence_v2_claims(&dev);
    let ev = attest::sign(&ak, b"nonce-123", &v2, &[0x44; 32]).unwrap();
    golden("evidence_v2", &ev);
    assert_eq!(&ev[..6], b"HKAT\x02\x09");
    assert_eq!(ev.len(), 6 + 9 + 12 + 1 + 4 + 1 + 65 + 64);
    assert_eq!(
        attest::verify(&ak.public_key(), b"nonce-123", &ev),
        Ok(attest::Verified::V2(v2))
    );
    // The device key signs nothing any more: evidence does not verify with it.
    assert_eq!(
        attest::verify(&dev.public_key(), b"nonce-123", &ev),
        Err(attest::AttestError::BadSignature)
    );
}

/// The claims of `tests/golden/evidence_v2.hex`.
fn evidence_v2_claims(dev: &SecretKey) -> attest::ClaimsV2 {
    attest::ClaimsV2 {
        claims: attest::Claims {
            engine_version: 0x0001_0100,
            epoch: 7,
            min_epoch: 5,
        },
        boot_phase_ended: true,
        unmarked_offline_retired: false,
        ta_version: 0x0001_0100,
        backend: attest::Backend::OpTee,
        sealing_key: crypto::sec1_uncompressed(&dev.public_key()),
    }
}

#[test]
fn the_attestation_key_is_derived_from_the_root_key() {
    let ak = attest::attestation_key(&ROOT).unwrap();
    // Deterministic, and another root key gives another key.
    assert_eq!(
        attest::attestation_key(&ROOT).unwrap().to_bytes(),
        ak.to_bytes()
    );
    assert_ne!(
        attest::attestation_key(&[0x12; 32]).unwrap().to_bytes(),
        ak.to_bytes()
    );
    // Not the device key of the same state.
    let mut e = engine(82);
    let device = device_pubkey(&mut e);
    let Ok(Response::AttestPubkey(a)) = call(&mut e, Request::AttestPubkey) else {
        panic!()
    };
    assert_ne!(&a.sec1[..], &crypto::sec1_uncompressed(&device)[..]);
    // The Python implementation derives the same key.
    let py = reference(&["attestation-key", &hex::encode(ROOT)]);
    assert_eq!(py, hex::encode(crypto::sec1_uncompressed(&ak.public_key())));
}

// ---------------------------------------------------------------- negative blob tests

fn assert_every_byte_change_rejected(e: &mut TestEngine, blob: &[u8], plaintext: &[u8]) {
    assert_eq!(unseal(e, blob).as_deref(), Ok(plaintext));
    for i in 0..blob.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut t = blob.to_vec();
            t[i] ^= mask;
            let r = unseal(e, &t);
            assert!(r.is_err(), "byte {i} ^ {mask:#x} was accepted");
            // Only a changed epoch may be reported as retired; all else is opaque.
            assert!(
                matches!(r, Err(Status::BlobRejected | Status::EpochRetired)),
                "byte {i}: {r:?}"
            );
        }
    }
    for len in 0..blob.len() {
        assert_eq!(
            unseal(e, &blob[..len]),
            Err(Status::BlobRejected),
            "truncated to {len}"
        );
    }
    let mut longer = blob.to_vec();
    longer.push(0);
    assert_eq!(unseal(e, &longer), Err(Status::BlobRejected));
}

#[test]
fn every_single_byte_change_to_a_device_blob_is_rejected() {
    let mut e = engine(1);
    let blob = seal(&mut e, "ha/core", b"the secret");
    assert_every_byte_change_rejected(&mut e, &blob, b"the secret");
}

#[test]
fn every_single_byte_change_to_a_to_device_blob_is_rejected() {
    let mut e = engine(2);
    let pk = device_pubkey(&mut e);
    let blob = blob::seal_to_device(&pk, "addon/x", b"offline", &mut TestEntropy(99)).unwrap();
    assert_every_byte_change_rejected(&mut e, &blob, b"offline");
}

#[test]
fn every_single_byte_change_to_a_marked_offline_blob_is_rejected() {
    let mut e = engine(4);
    call(&mut e, Request::Rotate).unwrap();
    let pk = device_pubkey(&mut e);
    let blob =
        blob::seal_to_device_in(&pk, "addon/x", b"offline", 2, &mut TestEntropy(98)).unwrap();
    assert_every_byte_change_rejected(&mut e, &blob, b"offline");
}

/// `open`: the blob's kind and epoch with the plaintext.
fn open_blob<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    blob: &[u8],
    accept_offline: bool,
) -> Result<(u8, u32, StdVec<u8>), Status> {
    let req = Request::Open(proto::OpenRequest {
        blob: blob.try_into().map_err(|_| Status::TooLarge)?,
        namespace: None,
        accept_offline,
    });
    match call(e, req)? {
        Response::Open(r) => Ok((r.kind, r.epoch, r.plaintext.to_vec())),
        other => panic!("unexpected {other:?}"),
    }
}

fn rewrap<S: SecureStorage>(
    e: &mut Engine<S, TestEntropy>,
    blob: &[u8],
) -> Result<StdVec<u8>, Status> {
    let req = Request::Rewrap(RewrapRequest {
        blob: blob.try_into().map_err(|_| Status::TooLarge)?,
    });
    match call(e, req)? {
        Response::Rewrap(b) => Ok(b.blob.to_vec()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Issue 13, item 1: anyone holding the public key can seal offline, so
/// `boot/` (the data partition's key) refuses such blobs; root imports one
/// deliberately with `rewrap`; `open` reports the kind, and lets a caller
/// refuse offline blobs where its policy says so.
#[test]
fn offline_blobs_are_refused_in_boot_namespaces_and_imported_deliberately() {
    let mut e = engine(30);
    let pk = device_pubkey(&mut e);
    for ns in ["boot/luks-data", "boot"] {
        let planted = blob::seal_to_device(&pk, ns, b"evil key", &mut TestEntropy(31)).unwrap();
        assert_eq!(
            unseal(&mut e, &planted),
            Err(Status::OfflineRefused),
            "{ns}"
        );
        assert_eq!(
            open_blob(&mut e, &planted, true),
            Err(Status::OfflineRefused)
        );
        let to = Request::Reseal(proto::ResealRequest {
            blob: planted.as_slice().try_into().unwrap(),
            to: crypto::sec1_uncompressed(&pk)[..].try_into().unwrap(),
            allow_boot: true,
        });
        assert_eq!(call(&mut e, to), Err(Status::OfflineRefused));
        // The deliberate import: a device blob of the current epoch.
        let imported = rewrap(&mut e, &planted).unwrap();
        let p = blob::parse(&imported).unwrap();
        assert_eq!((p.kind, p.namespace, p.epoch), (blob::Kind::Device, ns, 1));
        assert_eq!(unseal(&mut e, &imported).as_deref(), Ok(&b"evil key"[..]));
    }
    // Device blobs in boot/ open as before; the refusal did not end the
    // boot phase.
    let luks = seal(&mut e, "boot/luks-data", b"luks");
    assert_eq!(
        open_blob(&mut e, &luks, false),
        Ok((proto::BLOB_KIND_DEVICE, 1, b"luks".to_vec()))
    );
    assert!(!e.boot_locked());
    // Elsewhere offline blobs are accepted, and `open` says which kind it
    // opened; a caller may refuse them.
    let offline = blob::seal_to_device(&pk, "ha/core", b"pw", &mut TestEntropy(32)).unwrap();
    assert_eq!(unseal(&mut e, &offline).as_deref(), Ok(&b"pw"[..]));
    assert_eq!(
        open_blob(&mut e, &offline, true),
        Ok((proto::BLOB_KIND_OFFLINE, 0, b"pw".to_vec()))
    );
    assert_eq!(
        open_blob(&mut e, &offline, false),
        Err(Status::OfflineRefused)
    );
    let device = seal(&mut e, "ha/core", b"pw2");
    assert_eq!(
        open_blob(&mut e, &device, false),
        Ok((proto::BLOB_KIND_DEVICE, 1, b"pw2".to_vec()))
    );
}

/// Issue 13, item 2: an offline blob carries a generation (the epoch the
/// board published with its key) that `retire` ends; unmarked ones (every
/// offline blob sealed before) keep opening until the owner retires them.
#[test]
fn offline_blob_generations_are_retired() {
    let mut e = engine(40);
    let pk = device_pubkey(&mut e);
    let unmarked = blob::seal_to_device(&pk, "ha/core", b"old", &mut TestEntropy(41)).unwrap();
    let gen1 = blob::seal_to_device_in(&pk, "ha/core", b"one", 1, &mut TestEntropy(42)).unwrap();
    // A generation the board has not reached is not its own.
    let gen5 = blob::seal_to_device_in(&pk, "ha/core", b"five", 5, &mut TestEntropy(43)).unwrap();
    assert_eq!(unseal(&mut e, &gen5), Err(Status::BlobRejected));
    assert_eq!(
        open_blob(&mut e, &gen1, true),
        Ok((proto::BLOB_KIND_OFFLINE, 1, b"one".to_vec()))
    );
    call(&mut e, Request::Rotate).unwrap();
    call(&mut e, Request::Rotate).unwrap();
    let gen2 = blob::seal_to_device_in(&pk, "ha/core", b"two", 2, &mut TestEntropy(44)).unwrap();
    call(&mut e, Request::Retire(RetireRequest { below: 2 })).unwrap();
    assert_eq!(unseal(&mut e, &gen1), Err(Status::EpochRetired));
    assert_eq!(unseal(&mut e, &gen2).as_deref(), Ok(&b"two"[..]));
    // Retired offline blobs are not rewrapped either.
    assert_eq!(rewrap(&mut e, &gen1), Err(Status::EpochRetired));
    // Unmarked: open after rotate and retire, until retired on their own.
    assert_eq!(unseal(&mut e, &unmarked).as_deref(), Ok(&b"old"[..]));
    assert_eq!(
        call(&mut e, Request::RetireUnmarked),
        Ok(Response::RetireUnmarked)
    );
    assert_eq!(unseal(&mut e, &unmarked), Err(Status::EpochRetired));
    assert_eq!(rewrap(&mut e, &unmarked), Err(Status::EpochRetired));
    assert_eq!(unseal(&mut e, &gen2).as_deref(), Ok(&b"two"[..]));
    // It lasts: a fresh engine on the same storage, and again is a no-op.
    let stores = e.storage_mut().stores;
    assert_eq!(
        call(&mut e, Request::RetireUnmarked),
        Ok(Response::RetireUnmarked)
    );
    assert_eq!(e.storage_mut().stores, stores, "nothing to write");
    let mut again = Engine::new(e.storage_mut().clone(), TestEntropy(45));
    assert_eq!(unseal(&mut again, &unmarked), Err(Status::EpochRetired));
    assert_eq!(unseal(&mut again, &gen2).as_deref(), Ok(&b"two"[..]));
    // Not initialised: nothing to retire.
    let mut fresh = Engine::new(MemStorage::default(), TestEntropy(46));
    assert_eq!(
        call(&mut fresh, Request::RetireUnmarked),
        Err(Status::NotInitialised)
    );
}

#[test]
fn cross_namespace_is_rejected() {
    let mut e = engine(3);
    let blob = seal(&mut e, "addon/aaaa", b"s");
    assert_eq!(unseal_as(&mut e, &blob, Some("addon/aaaa")).unwrap(), b"s");
    assert_eq!(
        unseal_as(&mut e, &blob, Some("addon/bbbb")),
        Err(Status::NamespaceMismatch)
    );
    // Rewriting the namespace in the header (same length) breaks the tag.
    let mut t = blob.clone();
    let at = blob.windows(4).position(|w| w == b"aaaa").unwrap();
    t[at..at + 4].copy_from_slice(b"bbbb");
    assert_eq!(unseal(&mut e, &t), Err(Status::BlobRejected));
    assert_eq!(
        unseal_as(&mut e, &t, Some("addon/bbbb")),
        Err(Status::BlobRejected)
    );
}

#[test]
fn other_device_blobs_are_rejected() {
    let mut a = engine(10);
    let mut b = engine(11);
    let blob = seal(&mut a, "ha/core", b"for a");
    assert_eq!(unseal(&mut b, &blob), Err(Status::BlobRejected));
    let pk_a = device_pubkey(&mut a);
    let to_a = blob::seal_to_device(&pk_a, "ha/core", b"for a", &mut TestEntropy(5)).unwrap();
    assert_eq!(unseal(&mut b, &to_a), Err(Status::BlobRejected));
    assert_eq!(unseal(&mut a, &to_a).unwrap(), b"for a");
}

#[test]
fn rotate_rewrap_retire() {
    let mut e = engine(20);
    let old = seal(&mut e, "ha/core", b"v1");
    assert_eq!(
        call(&mut e, Request::Rotate),
        Ok(Response::Rotate(EpochResponse {
            epoch: 2,
            min_epoch: 1
        }))
    );
    // Old blobs still open until retired; rewrap moves them to epoch 2.
    assert_eq!(unseal(&mut e, &old).unwrap(), b"v1");
    let new = match call(
        &mut e,
        Request::Rewrap(RewrapRequest {
            blob: old.as_slice().try_into().unwrap(),
        }),
    ) {
        Ok(Response::Rewrap(b)) => b.blob.to_vec(),
        o => panic!("{o:?}"),
    };
    assert_eq!(blob::parse(&new).unwrap().epoch, 2);
    assert_eq!(
        call(&mut e, Request::Retire(RetireRequest { below: 2 })),
        Ok(Response::Retire(EpochResponse {
            epoch: 2,
            min_epoch: 2
        }))
    );
    assert_eq!(unseal(&mut e, &old), Err(Status::EpochRetired));
    assert_eq!(unseal(&mut e, &new).unwrap(), b"v1");
    // Rewrap of a retired blob is refused too.
    assert_eq!(
        call(
            &mut e,
            Request::Rewrap(RewrapRequest {
                blob: old.as_slice().try_into().unwrap()
            })
        ),
        Err(Status::EpochRetired)
    );
    // The floor never goes down, and the current epoch cannot be retired.
    assert_eq!(
        call(&mut e, Request::Retire(RetireRequest { below: 1 })),
        Err(Status::InvalidArgument)
    );
    assert_eq!(
        call(&mut e, Request::Retire(RetireRequest { below: 3 })),
        Err(Status::InvalidArgument)
    );
    // Retiring at the current floor is a no-op that succeeds.
    let stores = e.storage_mut().stores;
    assert!(call(&mut e, Request::Retire(RetireRequest { below: 2 })).is_ok());
    assert_eq!(e.storage_mut().stores, stores);
    // A blob claiming a future epoch is not ours.
    let future = blob::seal_device(&[0; 32], 9, "ha/core", b"x", &SALT).unwrap();
    assert_eq!(unseal(&mut e, &future), Err(Status::BlobRejected));
}

#[test]
fn to_device_blobs_rewrap_into_device_blobs() {
    let mut e = engine(21);
    let pk = device_pubkey(&mut e);
    let offline = blob::seal_to_device(&pk, "ha/core", b"pw", &mut TestEntropy(3)).unwrap();
    let req = Request::Rewrap(RewrapRequest {
        blob: offline.as_slice().try_into().unwrap(),
    });
    let Ok(Response::Rewrap(b)) = call(&mut e, req) else {
        panic!()
    };
    let p = blob::parse(&b.blob).unwrap();
    assert_eq!(
        (p.kind, p.epoch, p.namespace),
        (blob::Kind::Device, 1, "ha/core")
    );
    assert_eq!(unseal(&mut e, &b.blob).unwrap(), b"pw");
}

#[test]
fn boot_done_locks_boot_namespaces() {
    let mut e = engine(30);
    let luks = seal(&mut e, "boot/luks-data", b"luks key");
    let other = seal(&mut e, "ha/core", b"ha");
    assert_eq!(unseal(&mut e, &luks).unwrap(), b"luks key");
    assert_eq!(call(&mut e, Request::BootDone), Ok(Response::BootDone));
    assert_eq!(unseal(&mut e, &luks), Err(Status::BootLocked));
    assert_eq!(unseal(&mut e, &other).unwrap(), b"ha");
    let Ok(Response::Status(st)) = call(&mut e, Request::Status) else {
        panic!()
    };
    assert!(st.boot_locked);
    // Sealing new boot secrets stays possible (it reveals nothing).
    let again = seal(&mut e, "boot/luks-data", b"new");
    assert_eq!(unseal(&mut e, &again), Err(Status::BootLocked));
    // A new engine instance over the same storage is a new boot.
    let mut fresh = Engine::new(e.storage_mut().clone(), TestEntropy(31));
    assert_eq!(unseal(&mut fresh, &luks).unwrap(), b"luks key");
}

#[test]
fn the_first_unseal_outside_boot_ends_the_boot_phase() {
    let mut e = engine(32);
    let luks = seal(&mut e, "boot/luks-data", b"luks key");
    let bare = seal(&mut e, "boot", b"bare");
    let ha = seal(&mut e, "ha/core", b"ha");
    // Sealing anything, and unsealing boot secrets, keeps the phase open.
    assert_eq!(unseal(&mut e, &luks).unwrap(), b"luks key");
    assert_eq!(unseal(&mut e, &bare).unwrap(), b"bare");
    // Nobody ran boot-done; Home Assistant asks for its secret.
    assert_eq!(unseal(&mut e, &ha).unwrap(), b"ha");
    let Ok(Response::Status(st)) = call(&mut e, Request::Status) else {
        panic!()
    };
    assert!(st.boot_locked);
    assert_eq!(unseal(&mut e, &luks), Err(Status::BootLocked));
    // `boot` itself is a boot namespace, for the engine as for teed.
    assert_eq!(unseal(&mut e, &bare), Err(Status::BootLocked));
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn not_initialised_and_idempotent_init() {
    let mut e = Engine::new(MemStorage::default(), TestEntropy(40));
    let Ok(Response::Status(st)) = call(&mut e, Request::Status) else {
        panic!()
    };
    assert!(!st.initialised);
    for req in [
        Request::Rotate,
        Request::Pubkey,
        Request::Retire(RetireRequest { below: 1 }),
    ] {
        assert_eq!(call(&mut e, req), Err(Status::NotInitialised));
    }
    let seal_req = Request::Seal(SealRequest {
        namespace: ns("ha/core"),
        plaintext: (&b"x"[..]).try_into().unwrap(),
    });
    assert_eq!(call(&mut e, seal_req), Err(Status::NotInitialised));
    assert!(call(&mut e, Request::Init).is_ok());
    let blob = seal(&mut e, "ha/core", b"keep");
    let before = e.storage_mut().objects();
    assert_eq!(
        call(&mut e, Request::Init),
        Ok(Response::Init(InitResponse {
            created: false,
            epoch: 1
        }))
    );
    assert_eq!(
        e.storage_mut().objects(),
        before,
        "init on an initialised device changed the state"
    );
    assert_eq!(unseal(&mut e, &blob).unwrap(), b"keep");
}

#[test]
fn a_failed_store_changes_nothing() {
    let mut e = engine(50);
    let blob = seal(&mut e, "ha/core", b"v");
    e.storage_mut().fail_next_store = true;
    assert_eq!(call(&mut e, Request::Rotate), Err(Status::StorageFailure));
    let Ok(Response::Status(st)) = call(&mut e, Request::Status) else {
        panic!()
    };
    assert_eq!((st.epoch, st.min_epoch), (1, 1));
    assert_eq!(unseal(&mut e, &blob).unwrap(), b"v");

    let mut fresh = Engine::new(
        MemStorage {
            fail_next_store: true,
            ..Default::default()
        },
        TestEntropy(51),
    );
    assert_eq!(call(&mut fresh, Request::Init), Err(Status::StorageFailure));
    let Ok(Response::Status(st)) = call(&mut fresh, Request::Status) else {
        panic!()
    };
    assert!(!st.initialised);
}

#[test]
fn corrupt_storage_is_reported_not_trusted() {
    let mut e = engine(60);
    let mut storage = e.storage_mut().clone();
    // The only slot written so far, damaged: the marker says an init
    // completed, so this is lost state, not a new device.
    if let Some(r) = storage.inner.object_mut(ObjectId::SlotA) {
        r[20] ^= 1;
    }
    let before = storage.objects();
    let mut e2 = Engine::new(storage, TestEntropy(61));
    assert_eq!(call(&mut e2, Request::Status), Err(Status::StorageCorrupt));
    // And init does not paper over it by generating a new root key.
    assert_eq!(call(&mut e2, Request::Init), Err(Status::StorageCorrupt));
    assert_eq!(e2.storage_mut().objects(), before, "nothing was written");
}

#[test]
fn seal_input_validation() {
    let mut e = engine(70);
    let bad_ns = Request::Seal(SealRequest {
        namespace: ns("Bad NS"),
        plaintext: (&b"x"[..]).try_into().unwrap(),
    });
    assert_eq!(call(&mut e, bad_ns), Err(Status::InvalidNamespace));
    let empty = Request::Seal(SealRequest {
        namespace: ns("ha/core"),
        plaintext: Secret::new(),
    });
    assert_eq!(call(&mut e, empty), Err(Status::InvalidArgument));
    let max = [7u8; proto::MAX_SECRET_LEN];
    let blob = seal(&mut e, "ha/core", &max);
    assert!(blob.len() <= proto::MAX_BLOB_LEN);
    assert_eq!(unseal(&mut e, &blob).unwrap(), max.to_vec());
}

fn attest_pubkey<S: SecureStorage>(e: &mut Engine<S, TestEntropy>) -> p256::PublicKey {
    match call(e, Request::AttestPubkey) {
        Ok(Response::AttestPubkey(p)) => {
            p256::PublicKey::from_sec1_bytes(&p.sec1).expect("valid point")
        }
        other => panic!("{other:?}"),
    }
}

fn attest<S: SecureStorage>(e: &mut Engine<S, TestEntropy>, challenge: &[u8]) -> StdVec<u8> {
    let req = Request::Attest(AttestRequest {
        challenge: challenge.try_into().unwrap(),
    });
    match call(e, req) {
        Ok(Response::Attest(a)) => a.evidence.to_vec(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn attestation_round_trip_and_failures() {
    let mut e = engine(80);
    e.set_platform(Platform {
        backend: attest::Backend::Simulator,
        ta_version: 0,
    });
    let pk = attest_pubkey(&mut e);
    let sealing = device_pubkey(&mut e);
    let evidence = attest(&mut e, b"abc");
    let claims = attest::verify(&pk, b"abc", &evidence).unwrap();
    assert_eq!(
        claims,
        attest::Verified::V2(attest::ClaimsV2 {
            claims: attest::Claims {
                engine_version: ENGINE_VERSION,
                epoch: 1,
                min_epoch: 1
            },
            boot_phase_ended: false,
            unmarked_offline_retired: false,
            ta_version: 0,
            backend: attest::Backend::Simulator,
            sealing_key: crypto::sec1_uncompressed(&sealing),
        })
    );
    assert_eq!(
        attest::verify(&pk, b"abd", &evidence),
        Err(attest::AttestError::ChallengeMismatch)
    );
    let other = attest_pubkey(&mut engine(81));
    assert_eq!(
        attest::verify(&other, b"abc", &evidence),
        Err(attest::AttestError::BadSignature)
    );
    // The device key (the sealing key) does not sign evidence.
    assert_eq!(
        attest::verify(&sealing, b"abc", &evidence),
        Err(attest::AttestError::BadSignature)
    );
    for i in 0..evidence.len() {
        let mut t = evidence.clone();
        t[i] ^= 1;
        assert!(
            attest::verify(&pk, b"abc", &t).is_err(),
            "evidence byte {i}"
        );
    }
    let empty = Request::Attest(AttestRequest {
        challenge: heapless::Vec::new(),
    });
    assert_eq!(call(&mut e, empty), Err(Status::InvalidArgument));
    // The claims follow the state: boot phase, unmarked offline blobs retired.
    call(&mut e, Request::BootDone).unwrap();
    call(&mut e, Request::RetireUnmarked).unwrap();
    let Ok(attest::Verified::V2(c)) = attest::verify(&pk, b"abc", &attest(&mut e, b"abc")) else {
        panic!()
    };
    assert!(c.boot_phase_ended && c.unmarked_offline_retired);
}

#[test]
fn attestation_signatures_are_hedged() {
    // The same challenge from the same state twice: the signed bytes are
    // equal, the signatures are not (RFC 6979 with fresh added randomness),
    // and both verify.
    let mut e = engine(83);
    let pk = attest_pubkey(&mut e);
    let a = attest(&mut e, b"same");
    let b = attest(&mut e, b"same");
    let split = a.len() - attest::SIGNATURE_LEN;
    assert_eq!(a[..split], b[..split]);
    assert_ne!(a[split..], b[split..]);
    assert!(attest::verify(&pk, b"same", &a).is_ok());
    assert!(attest::verify(&pk, b"same", &b).is_ok());
    // No added randomness is plain RFC 6979, as p256's deterministic signer
    // makes it (whose RFC 6979 vectors `kat_ecdsa_p256_rfc6979` checks): the
    // signing path is the one `attest::sign` takes.
    let sk = SecretKey::from_slice(&h(DEVICE_SK)).unwrap();
    let plain = attest::sign_v1(
        &sk,
        b"c",
        &attest::Claims {
            engine_version: 0,
            epoch: 1,
            min_epoch: 1,
        },
    )
    .unwrap();
    use p256::ecdsa::signature::Signer;
    let want: p256::ecdsa::Signature =
        p256::ecdsa::SigningKey::from(&sk).sign(&plain[..plain.len() - 64]);
    assert_eq!(&plain[plain.len() - 64..], &want.to_bytes()[..]);
}

#[test]
fn old_verifiers_refuse_version_2_evidence() {
    // A verifier of the first release reads byte 4 and accepts only 1; the
    // version-1 rules of this verifier are that verifier's rules.
    let mut e = engine(84);
    let ev = attest(&mut e, b"abc");
    assert_eq!(ev[4], attest::EVIDENCE_VERSION);
    let mut as_v1 = ev.clone();
    as_v1[4] = attest::EVIDENCE_VERSION_1;
    assert_eq!(
        attest::verify(&attest_pubkey(&mut e), b"abc", &as_v1),
        Err(attest::AttestError::Malformed)
    );
    // Versions neither 1 nor 2 are refused.
    let mut v3 = ev;
    v3[4] = 3;
    assert_eq!(
        attest::verify(&attest_pubkey(&mut e), b"abc", &v3),
        Err(attest::AttestError::Malformed)
    );
}

#[test]
fn garbage_requests_get_error_responses() {
    let mut e = engine(90);
    let mut out = [0u8; proto::MAX_MESSAGE_LEN];
    let cases: [(&[u8], Status); 6] = [
        (b"", Status::BadMessage),
        (b"HKRQ\x01\x00", Status::BadMessage),
        (b"HKRQ\x02\x00\x01\x00", Status::UnsupportedVersion),
        (b"HKRQ\x01\x01\x01\x00", Status::BadMessage),
        (b"HKRQ\x01\x00\x99\x99", Status::UnknownOpcode),
        (b"HKRQ\x01\x00\x01\x00extra", Status::BadMessage),
    ];
    for (msg, want) in cases {
        let n = e.handle(msg, &mut out);
        assert_eq!(n, proto::RESPONSE_HEADER_LEN);
        assert_eq!(proto::response_status(&out[..n]), Ok(want), "{msg:?}");
    }
    let big = std::vec![0u8; proto::MAX_MESSAGE_LEN + 1];
    let n = e.handle(&big, &mut out);
    assert_eq!(proto::response_status(&out[..n]), Ok(Status::BadMessage));
    assert_eq!(n, proto::RESPONSE_HEADER_LEN);
    // The request's opcode field is echoed even when the header is bad, so
    // the caller can tell what the refusal answers.
    let n = e.handle(b"XXXX\x01\x00\x01\x02", &mut out);
    assert_eq!(
        proto::decode_response(&out[..n], proto::Opcode::Seal),
        Ok(Err(Status::BadMessage))
    );
}

#[test]
fn errors_display_and_chain() {
    use core::error::Error;
    fn shown<E: Error>(e: &E) -> std::string::String {
        std::format!("{e}")
    }
    let blob = EngineError::Blob(blob::BlobError::UnsupportedVersion(9));
    assert_eq!(shown(&blob), "blob rejected");
    assert_eq!(
        blob.source().map(|s| std::format!("{s}")).as_deref(),
        Some("unsupported blob format version 9")
    );
    let storage = EngineError::from(StorageError::Corrupt);
    assert_eq!(
        storage.source().map(|s| std::format!("{s}")),
        Some(shown(&StorageError::Corrupt))
    );
    assert!(EngineError::Internal.source().is_none());
    for s in [
        shown(&EntropyError),
        shown(&StorageError::Io),
        shown(&EngineError::NotInitialised),
        shown(&blob::BlobError::Unauthentic),
        shown(&attest::AttestError::BadChallenge),
        shown(&crypto::CryptoError),
        shown(&state::CorruptState),
    ] {
        assert!(!s.is_empty());
    }
}

// ---------------------------------------------------------------- second implementation

/// Run the independent Python implementation (engine/tests/reference_impl.py).
pub(crate) fn reference(args: &[&str]) -> std::string::String {
    let script = std::format!("{}/tests/reference_impl.py", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HAKEYS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 is required for the reference-implementation tests (cargo xtask deps installs it)");
    assert!(
        out.status.success(),
        "reference implementation failed: {}",
        std::string::String::from_utf8_lossy(&out.stderr)
    );
    std::string::String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .into()
}

#[test]
fn an_independent_implementation_reads_and_writes_the_formats() {
    let dev = SecretKey::from_slice(&h(DEVICE_SK)).unwrap();
    let dev_pub = hex::encode(crypto::sec1_uncompressed(&dev.public_key()));
    let b = blob::seal_device(&ROOT, 3, "ha/core", b"hunter2", &SALT).unwrap();
    assert_eq!(
        reference(&["open-device", &hex::encode(ROOT), &hex::encode(&b)]),
        hex::encode(b"hunter2")
    );

    let b = to_device_fixture(&dev);
    assert_eq!(
        reference(&["open-to-device", DEVICE_SK, &hex::encode(&b)]),
        hex::encode(b"mqtt-password")
    );

    // Python seals to our device key; the engine opens it.
    let sealed = h(&reference(&[
        "seal-to-device",
        &dev_pub,
        "ha/core",
        &hex::encode(b"from python"),
    ]));
    let p = blob::parse(&sealed).unwrap();
    let mut out = Secret::new();
    blob::open_to_device(&dev, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"from python");
    let sealed = h(&reference(&[
        "seal-to-device",
        &dev_pub,
        "ha/core",
        &hex::encode(b"generation 4"),
        "4",
    ]));
    let p = blob::parse(&sealed).unwrap();
    assert_eq!((p.kind, p.epoch), (blob::Kind::ToDevice, 4));
    blob::open_to_device(&dev, &p, &mut out).unwrap();
    assert_eq!(&out[..], b"generation 4");

    let claims = attest::Claims {
        engine_version: 0x0001_0000,
        epoch: 2,
        min_epoch: 1,
    };
    let ev = attest::sign_v1(&dev, b"nonce-123", &claims).unwrap();
    assert_eq!(
        reference(&[
            "verify-evidence",
            &dev_pub,
            &hex::encode(b"nonce-123"),
            &hex::encode(&ev)
        ]),
        std::format!("1 {} 2 1", 0x0001_0000)
    );
    // Version 2, by the attestation key, hedged: the reference verifies it
    // and reads every claim.
    let ak = attest::attestation_key(&ROOT).unwrap();
    let ev = attest::sign(&ak, b"nonce-123", &evidence_v2_claims(&dev), &[0x55; 32]).unwrap();
    assert_eq!(
        reference(&[
            "verify-evidence",
            &hex::encode(crypto::sec1_uncompressed(&ak.public_key())),
            &hex::encode(b"nonce-123"),
            &hex::encode(&ev)
        ]),
        std::format!("2 {} 7 5 1 0 {} 1 {dev_pub}", 0x0001_0100, 0x0001_0100)
    );
}

// ---------------------------------------------------------------- client identities

/// `call` as `caller`: the TA passes the session's login identity.
fn call_as(e: &mut TestEngine, caller: Caller, req: Request) -> Result<Response, Status> {
    let mut buf = [0u8; proto::MAX_MESSAGE_LEN];
    let n = proto::encode_request(&req, &mut buf).expect("encode");
    let mut out = [0u8; proto::MAX_MESSAGE_LEN];
    let m = e.handle_as(caller, &buf[..n], &mut out);
    proto::decode_response(&out[..m], req.opcode()).expect("engine response decodes")
}

#[test]
fn non_root_identities_get_only_what_the_daemon_needs() {
    let mut e = engine(41);
    let ha = seal(&mut e, "ha/core", b"pw");
    let boot = seal(&mut e, "boot/luks-data", b"disk key");
    let dev = crypto::sec1_uncompressed(&device_pubkey(&mut e));
    let blob = |b: &[u8]| BlobBytes::try_from(b).expect("fits");
    let key: heapless::Vec<u8, { proto::PUBKEY_LEN }> = heapless::Vec::from_slice(&dev).unwrap();
    // Every opcode, with (at least) one request a client is refused.
    let refused = [
        Request::Init,
        Request::Rotate,
        Request::Retire(RetireRequest { below: 1 }),
        Request::InitNewIdentity,
        Request::RetireUnmarked,
        Request::Rewrap(RewrapRequest { blob: blob(&ha) }),
        Request::Reseal(proto::ResealRequest {
            blob: blob(&ha),
            to: key.clone(),
            allow_boot: false,
        }),
        Request::Attest(AttestRequest {
            challenge: heapless::Vec::from_slice(b"n").unwrap(),
        }),
        Request::Escrow(proto::EscrowRequest {
            recovery_key: key,
            replace: false,
        }),
        Request::RecoveryStatus,
        // Unseal and open only with a namespace, and never in boot/.
        Request::Unseal(UnsealRequest {
            blob: blob(&ha),
            namespace: None,
        }),
        Request::Unseal(UnsealRequest {
            blob: blob(&boot),
            namespace: Some(ns("boot/luks-data")),
        }),
        Request::Open(proto::OpenRequest {
            blob: blob(&ha),
            namespace: None,
            accept_offline: false,
        }),
        Request::Open(proto::OpenRequest {
            blob: blob(&boot),
            namespace: Some(ns("boot/luks-data")),
            accept_offline: false,
        }),
        Request::Seal(SealRequest {
            namespace: ns("boot/luks-data"),
            plaintext: proto::Secret::from_slice(b"planted").unwrap(),
        }),
        Request::Seal(SealRequest {
            namespace: ns("boot"),
            plaintext: proto::Secret::from_slice(b"planted").unwrap(),
        }),
    ];
    let allowed = [
        Request::Ping,
        Request::Status,
        Request::Pubkey,
        Request::AttestPubkey,
        Request::Seal(SealRequest {
            namespace: ns("ha/core"),
            plaintext: proto::Secret::from_slice(b"pw2").unwrap(),
        }),
        Request::Unseal(UnsealRequest {
            blob: blob(&ha),
            namespace: Some(ns("ha/core")),
        }),
        Request::Open(proto::OpenRequest {
            blob: blob(&ha),
            namespace: Some(ns("ha/core")),
            accept_offline: true,
        }),
        Request::BootDone,
    ];
    let mut seen: StdVec<proto::Opcode> =
        refused.iter().chain(&allowed).map(|r| r.opcode()).collect();
    seen.sort_by_key(|o| *o as u16);
    seen.dedup();
    assert_eq!(
        seen,
        proto::Opcode::ALL.to_vec(),
        "every operation is decided"
    );

    let before = e.storage.objects();
    for req in refused {
        assert!(!permitted(Caller::Client, &req), "{req:?}");
        assert_eq!(
            call_as(&mut e, Caller::Client, req.clone()),
            Err(Status::IdentityRefused),
            "{req:?}"
        );
        // Nothing read or written, the boot phase still open.
        assert_eq!(e.storage.objects(), before);
        assert!(!e.boot_locked());
        // Root may ask (it may still be refused for another reason).
        assert!(permitted(Caller::Root, &req));
    }
    for req in allowed {
        assert!(permitted(Caller::Client, &req), "{req:?}");
        assert!(
            call_as(&mut e, Caller::Client, req.clone()).is_ok(),
            "{req:?}"
        );
    }
    // boot-done from a client closed the boot phase; root still unseals
    // the non-boot blob, and `handle` is root's.
    assert!(e.boot_locked());
    assert_eq!(unseal(&mut e, &ha).unwrap(), b"pw");
}
