//! The fuzz targets' seeds (`fuzz/seeds/<target>/`), made here and compared
//! with the committed files (`HAKEYS_BLESS=1` rewrites them): valid requests
//! of every opcode, request sequences that reach every engine operation with
//! real blobs, the golden blobs, evidence and escrow, state layouts of every
//! slot format, daemon request lines and RPMB frame transactions. Each seed
//! also runs through its target's harness here, and the engine sequences
//! must get the answers they were made for: a seed that stopped reaching
//! what it was made for fails this test.

use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use hakeys_proto::{
    self as proto, AttestRequest, EscrowRequest, OpenRequest, ResealRequest, RetireRequest,
    RewrapRequest, SealRequest, UnsealRequest,
};
use p256::SecretKey;

use super::*;
use crate::blob;

type Seeds = BTreeMap<(&'static str, String), Vec<u8>>;

/// Requests, each with the status it must get (`None`: any).
type Sequence = Vec<(Request, Option<Status>)>;

fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn golden(name: &str) -> Vec<u8> {
    let path = std::format!("{}/tests/golden/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    hex::decode(
        std::fs::read_to_string(path)
            .expect("golden fixture")
            .trim(),
    )
    .expect("hex")
}

fn encode(req: &Request) -> Vec<u8> {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let n = proto::encode_request(req, &mut buf).expect("encode");
    buf[..n].to_vec()
}

/// An `engine_handle` input: each message with its u16 LE length.
fn framed(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&u16::try_from(m.len()).unwrap().to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Run `reqs` on the harness's engine; the statuses they got.
fn replay(reqs: &[Request]) -> Vec<Result<Response, Status>> {
    let mut e = initialised_engine();
    reqs.iter().map(|r| call(&mut e, r)).collect()
}

fn ns(s: &str) -> proto::Namespace {
    s.try_into().unwrap()
}

fn bytes<const N: usize>(b: &[u8]) -> heapless::Vec<u8, N> {
    heapless::Vec::from_slice(b).unwrap()
}

fn seal_req(namespace: &str, pt: &[u8]) -> Request {
    Request::Seal(SealRequest {
        namespace: ns(namespace),
        plaintext: bytes(pt),
    })
}

fn blob_of(r: &Result<Response, Status>) -> Vec<u8> {
    match r {
        Ok(Response::Seal(b) | Response::Rewrap(b) | Response::Reseal(b)) => b.blob.to_vec(),
        other => panic!("no blob: {other:?}"),
    }
}

/// The harness engine's device public key.
fn device_key() -> p256::PublicKey {
    match replay(&[Request::Pubkey]).remove(0) {
        Ok(Response::Pubkey(p)) => p256::PublicKey::from_sec1_bytes(&p.sec1).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn unseal(blob: &[u8], namespace: Option<&str>) -> Request {
    Request::Unseal(UnsealRequest {
        blob: bytes(blob),
        namespace: namespace.map(ns),
    })
}

fn open(blob: &[u8], accept_offline: bool) -> Request {
    Request::Open(OpenRequest {
        blob: bytes(blob),
        namespace: None,
        accept_offline,
    })
}

fn rewrap(blob: &[u8]) -> Request {
    Request::Rewrap(RewrapRequest { blob: bytes(blob) })
}

fn sec1(pk: &p256::PublicKey) -> heapless::Vec<u8, 65> {
    bytes(&crypto::sec1_uncompressed(pk))
}

/// Sequences of requests for `engine_handle`, each with the statuses it
/// must get (`None`: any answer). A message's blob is one an earlier
/// message of the same sequence made, so the engine opens it.
fn engine_sequences() -> Vec<(&'static str, Sequence)> {
    let ok = Some(Status::Ok);
    let dev = device_key();
    let other = SecretKey::from_slice(&[9u8; 32]).unwrap().public_key();
    let recovery = SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
    let mut seqs = Vec::new();

    // Every opcode on its own, with a valid body.
    let simple: Vec<(&str, Request)> = std::vec![
        ("ping", Request::Ping),
        ("status", Request::Status),
        ("init", Request::Init),
        ("rotate", Request::Rotate),
        ("retire", Request::Retire(RetireRequest { below: 1 })),
        ("boot-done", Request::BootDone),
        ("init-new-identity", Request::InitNewIdentity),
        ("retire-unmarked", Request::RetireUnmarked),
        ("seal", seal_req("ha/core", b"hunter2")),
        ("pubkey", Request::Pubkey),
        (
            "attest",
            Request::Attest(AttestRequest {
                challenge: bytes(b"nonce-123"),
            }),
        ),
        ("attest-pubkey", Request::AttestPubkey),
        (
            "escrow",
            Request::Escrow(EscrowRequest {
                recovery_key: sec1(&recovery),
                replace: false,
            }),
        ),
        ("recovery-status", Request::RecoveryStatus),
    ];
    for (name, req) in simple {
        seqs.push((name, std::vec![(req, ok)]));
    }

    // Seal, then every way to open what was sealed.
    let sealed = replay(&[seal_req("ha/core", b"hunter2")]);
    let b = blob_of(&sealed[0]);
    seqs.push((
        "seal-then-open-every-way",
        std::vec![
            (seal_req("ha/core", b"hunter2"), ok),
            (unseal(&b, None), ok),
            (unseal(&b, Some("ha/core")), ok),
            (
                unseal(&b, Some("ha/other")),
                Some(Status::NamespaceMismatch)
            ),
            (open(&b, false), ok),
            (rewrap(&b), ok),
            (
                Request::Reseal(ResealRequest {
                    blob: bytes(&b),
                    to: sec1(&other),
                    allow_boot: false,
                }),
                ok
            ),
        ],
    ));
    // The boot lock.
    let sealed = replay(&[seal_req("boot/luks-data", b"luks key")]);
    let luks = blob_of(&sealed[0]);
    seqs.push((
        "boot-namespace-and-boot-done",
        std::vec![
            (seal_req("boot/luks-data", b"luks key"), ok),
            (unseal(&luks, None), ok),
            (
                Request::Reseal(ResealRequest {
                    blob: bytes(&luks),
                    to: sec1(&other),
                    allow_boot: true,
                }),
                ok
            ),
            (Request::BootDone, ok),
            (unseal(&luks, None), Some(Status::BootLocked)),
        ],
    ));
    // Epochs: rotate, rewrap, retire, a retired blob.
    let sealed = replay(&[seal_req("ha/core", b"epoch one")]);
    let e1 = blob_of(&sealed[0]);
    seqs.push((
        "rotate-rewrap-retire",
        std::vec![
            (seal_req("ha/core", b"epoch one"), ok),
            (Request::Rotate, ok),
            (rewrap(&e1), ok),
            (Request::Retire(RetireRequest { below: 2 }), ok),
            (unseal(&e1, None), Some(Status::EpochRetired)),
            (Request::Status, ok),
        ],
    ));
    // Offline blobs: unmarked and of a generation, outside and inside boot/.
    let unmarked =
        blob::seal_to_device(&dev, "addon/x", b"offline", &mut CounterEntropy(50)).unwrap();
    let gen1 =
        blob::seal_to_device_in(&dev, "addon/x", b"gen one", 1, &mut CounterEntropy(51)).unwrap();
    let planted =
        blob::seal_to_device(&dev, "boot/luks-data", b"planted", &mut CounterEntropy(52)).unwrap();
    seqs.push((
        "offline-blobs-and-generations",
        std::vec![
            (unseal(&unmarked, None), ok),
            (open(&unmarked, true), ok),
            (open(&gen1, true), ok),
            (open(&gen1, false), Some(Status::OfflineRefused)),
            (Request::Rotate, ok),
            (Request::Retire(RetireRequest { below: 2 }), ok),
            (unseal(&gen1, None), Some(Status::EpochRetired)),
            (Request::RetireUnmarked, ok),
            (unseal(&unmarked, None), Some(Status::EpochRetired)),
        ],
    ));
    seqs.push((
        "offline-blob-in-boot-imported",
        std::vec![
            (unseal(&planted, None), Some(Status::OfflineRefused)),
            (open(&planted, true), Some(Status::OfflineRefused)),
            (rewrap(&planted), ok),
        ],
    ));
    seqs.push((
        "escrow-then-replace",
        std::vec![
            (
                Request::Escrow(EscrowRequest {
                    recovery_key: sec1(&recovery),
                    replace: false,
                }),
                ok
            ),
            (Request::RecoveryStatus, ok),
            (
                Request::Escrow(EscrowRequest {
                    recovery_key: sec1(&other),
                    replace: false,
                }),
                Some(Status::RecoveryKeyMismatch)
            ),
            (
                Request::Escrow(EscrowRequest {
                    recovery_key: sec1(&other),
                    replace: true,
                }),
                ok
            ),
        ],
    ));
    seqs.push((
        "new-identity-forgets-blobs",
        std::vec![
            (seal_req("ha/core", b"hunter2"), ok),
            (Request::InitNewIdentity, ok),
            (unseal(&b, None), Some(Status::BlobRejected)),
            (Request::Status, ok),
        ],
    ));
    seqs
}

fn wire_requests() -> Vec<(String, Request)> {
    let mut out = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, seq) in engine_sequences() {
        for (req, _) in seq {
            let name = req.opcode().name();
            let n = counts.entry(name).or_insert(0);
            *n += 1;
            if *n <= 3 {
                out.push((std::format!("{name}-{n}"), req));
            }
        }
    }
    out
}

/// An `state_objects` input from the objects in [`STATE_OBJECTS`] order.
fn state_input(objects: [Option<&[u8]>; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for o in objects {
        match o {
            None => out.push(0),
            Some(b) => {
                out.push(u8::try_from(b.len() + 1).unwrap());
                out.extend_from_slice(b);
            }
        }
    }
    out
}

fn objects_of(mem: &mut MemoryStorage) -> [Option<Vec<u8>>; 4] {
    STATE_OBJECTS.map(|id| mem.object_mut(id).map(|o| o.to_vec()))
}

/// A 512-byte RPMB frame (JEDEC layout, rpmb-sim/SPEC.md): request type,
/// block count, address and data.
fn rpmb_frame(req: u16, count: u16, address: u16, data: u8) -> Vec<u8> {
    let mut f = std::vec![0u8; 512];
    f[228..484].fill(data);
    f[484..500].copy_from_slice(&[0x3c; 16]);
    f[504..506].copy_from_slice(&address.to_be_bytes());
    f[506..508].copy_from_slice(&count.to_be_bytes());
    f[510..512].copy_from_slice(&req.to_be_bytes());
    f
}

fn all_seeds() -> Seeds {
    let mut s = Seeds::new();
    let mut put = |t: &'static str, name: &str, b: Vec<u8>| {
        assert!(s.insert((t, name.to_string()), b).is_none(), "{t}/{name}");
    };

    for (name, req) in wire_requests() {
        put("wire_request", &name, encode(&req));
    }

    for (name, seq) in engine_sequences() {
        let msgs: Vec<Vec<u8>> = seq.iter().map(|(r, _)| encode(r)).collect();
        put("engine_handle", name, framed(&msgs));
    }
    put(
        "engine_handle",
        "undecodable-messages",
        framed(&[
            b"HKRQ\x02\x00\x01\x00".to_vec(),
            b"HKRQ\x01\x01\x01\x00".to_vec(),
            b"HKRQ\x01\x00\x77\x02".to_vec(),
            b"HKRQ\x01\x00\x01\x00\x00".to_vec(),
            b"HKRS\x01\x00\x01\x00".to_vec(),
            Vec::new(),
        ]),
    );

    for name in [
        "blob_device_v1",
        "blob_to_device_v1",
        "blob_to_device_gen3_v1",
    ] {
        put("blob_parse", name, golden(name));
    }

    let escrow = golden("escrow_v1");
    put("escrow_open", "escrow_v1", escrow.clone());
    // The same escrow made out to the target's recovery key: parsed, the
    // key agreed, the tag checked (and refused).
    let mut to_target = escrow;
    let r = crypto::sec1_uncompressed(&SecretKey::from_slice(&[7u8; 32]).unwrap().public_key());
    to_target[70..135].copy_from_slice(&r);
    put("escrow_open", "escrow_v1_to_the_target_key", to_target);

    for name in ["evidence_v1", "evidence_v2"] {
        put("evidence_verify", name, golden(name));
    }
    let ev = replay(&[Request::Attest(AttestRequest {
        challenge: bytes(b"from the engine"),
    })]);
    match &ev[0] {
        Ok(Response::Attest(a)) => put("evidence_verify", "engine_v2", a.evidence.to_vec()),
        other => panic!("{other:?}"),
    }

    let state = golden("state_v1");
    let (slot2, slot3, slot4, marker) = (
        golden("slot_v2"),
        golden("slot_v3"),
        golden("slot_v4"),
        golden("marker_v1"),
    );
    put("state_objects", "empty", state_input([None; 4]));
    put(
        "state_objects",
        "v1-record",
        state_input([Some(&state), None, None, None]),
    );
    put(
        "state_objects",
        "slot-v2-and-marker",
        state_input([None, Some(&slot2), None, Some(&marker)]),
    );
    put(
        "state_objects",
        "slot-v3-v4-and-marker",
        state_input([None, Some(&slot3), Some(&slot4), Some(&marker)]),
    );
    put(
        "state_objects",
        "slot-v4-no-marker",
        state_input([Some(&state), None, Some(&slot4), None]),
    );
    put(
        "state_objects",
        "marker-only",
        state_input([None, None, None, Some(&marker)]),
    );
    let mut e = initialised_engine();
    let [l, a, b, m] = objects_of(e.storage_mut());
    put(
        "state_objects",
        "initialised",
        state_input([l.as_deref(), a.as_deref(), b.as_deref(), m.as_deref()]),
    );
    let mut out = [0u8; MAX_MESSAGE_LEN];
    e.handle(&encode(&Request::Rotate), &mut out);
    e.handle(&encode(&Request::RetireUnmarked), &mut out);
    let [l, a, b, m] = objects_of(e.storage_mut());
    put(
        "state_objects",
        "rotated-and-flagged",
        state_input([l.as_deref(), a.as_deref(), b.as_deref(), m.as_deref()]),
    );

    let text = |b: &[u8]| {
        let mut t = String::from("hakeys:v1:");
        // Base64 by hand (no dependency for a test): standard alphabet.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    t.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    t.push('=');
                }
            }
        }
        t
    };
    let device = text(&golden("blob_device_v1"));
    let offline = text(&golden("blob_to_device_v1"));
    for (name, line) in [
        ("status", r#"{"v":1,"op":"status"}"#.to_string()),
        ("pubkey", r#"{"v":1,"op":"pubkey"}"#.to_string()),
        (
            "seal",
            r#"{"v":1,"op":"seal","namespace":"ha/core","plaintext":"aHVudGVyMg=="}"#.to_string(),
        ),
        (
            "unseal",
            std::format!(r#"{{"v":1,"op":"unseal","blob":"{device}"}}"#),
        ),
        (
            "unseal-namespace",
            std::format!(
                r#"{{"v":1,"op":"unseal","blob":"  {offline}","namespace":"addon/mqtt"}}"#
            ),
        ),
        ("admin-op", r#"{"v":1,"op":"rotate"}"#.to_string()),
        ("version-2", r#"{"v":2,"op":"status"}"#.to_string()),
    ] {
        put("daemon_request", name, line.into_bytes());
    }

    // rpmb_frames: byte 0 (bit 0: program the key; bits 4-5: reliable
    // write sector count - 1), then transactions: a control byte (frames -
    // 1; bit 3: current counter; bit 4: MAC the writes) and the frames.
    let tx = |ctl: u8, frames: &[Vec<u8>]| {
        let mut t = std::vec![ctl];
        for f in frames {
            t.extend_from_slice(f);
        }
        t
    };
    let write1 = tx(0x19, &[rpmb_frame(3, 1, 0, 0xab), rpmb_frame(5, 0, 0, 0)]);
    let counter = tx(0x00, &[rpmb_frame(2, 0, 0, 0)]);
    let read1 = tx(0x00, &[rpmb_frame(4, 1, 0, 0)]);
    let write2 = tx(
        0x1a,
        &[
            rpmb_frame(3, 2, 4, 0x11),
            rpmb_frame(3, 2, 4, 0x22),
            rpmb_frame(5, 0, 0, 0),
        ],
    );
    let read2 = tx(0x00, &[rpmb_frame(4, 2, 4, 0)]);
    put(
        "rpmb_frames",
        "write-read-counter",
        [
            std::vec![0x01],
            write1.clone(),
            counter.clone(),
            read1.clone(),
        ]
        .concat(),
    );
    put(
        "rpmb_frames",
        "two-block-write",
        [std::vec![0x11], write2, read2, counter.clone()].concat(),
    );
    let mut key = rpmb_frame(1, 0, 0, 0);
    key[196..228].fill(0x5a);
    put(
        "rpmb_frames",
        "program-key-then-write",
        [
            std::vec![0x00],
            tx(0x01, &[key, rpmb_frame(5, 0, 0, 0)]),
            write1,
            counter,
        ]
        .concat(),
    );
    put(
        "rpmb_frames",
        "unprogrammed-read",
        [std::vec![0x00], read1].concat(),
    );
    // rpmb_image: patches [offset/4 hi, lo, len, bytes] to a valid image
    // (rpmb-sim/SPEC.md §6: superblock at 0, state slots at 4096 and 8192,
    // the journal at 12288).
    put("rpmb_image", "unpatched", Vec::new());
    put("rpmb_image", "empty-patch", std::vec![0, 0, 0]);
    put("rpmb_image", "superblock-byte", std::vec![0, 0, 1, 0xff]);
    put(
        "rpmb_image",
        "state-slot-0-byte",
        std::vec![0x04, 0x00, 1, 0x7f],
    );
    put(
        "rpmb_image",
        "state-slot-1-bytes",
        std::vec![0x08, 0x00, 2, 0x01, 0x02],
    );
    put(
        "rpmb_image",
        "journal-header",
        std::vec![0x0c, 0x00, 4, 0, 0, 0, 1],
    );
    s
}

/// The committed seeds are the ones this test makes, and every target's
/// harness in this crate runs them; `HAKEYS_BLESS=1` rewrites the files.
#[test]
fn the_committed_fuzz_seeds_are_current() {
    let seeds = all_seeds();
    let root = fuzz_dir().join("seeds");
    if std::env::var_os("HAKEYS_BLESS").is_some() {
        for ((t, name), bytes) in &seeds {
            let dir = root.join(t);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut on_disk = BTreeMap::new();
    for t in std::fs::read_dir(&root).expect("fuzz/seeds") {
        let t = t.unwrap();
        for f in std::fs::read_dir(t.path()).unwrap() {
            let f = f.unwrap();
            on_disk.insert(
                (
                    t.file_name().into_string().unwrap(),
                    f.file_name().into_string().unwrap(),
                ),
                std::fs::read(f.path()).unwrap(),
            );
        }
    }
    let made: BTreeMap<(String, String), Vec<u8>> = seeds
        .iter()
        .map(|((t, n), b)| ((t.to_string(), n.clone()), b.clone()))
        .collect();
    for (key, bytes) in &made {
        assert_eq!(
            on_disk.get(key),
            Some(bytes),
            "fuzz/seeds/{}/{} is missing or stale (HAKEYS_BLESS=1 rewrites the seeds)",
            key.0,
            key.1
        );
    }
    for key in on_disk.keys() {
        assert!(
            made.contains_key(key),
            "fuzz/seeds/{}/{} is not made here",
            key.0,
            key.1
        );
    }
    // Small files, every target seeded.
    assert!(made.values().all(|b| b.len() <= 8192));
    for t in [
        "wire_request",
        "blob_parse",
        "engine_handle",
        "rpmb_frames",
        "rpmb_image",
        "daemon_request",
        "escrow_open",
        "evidence_verify",
        "state_objects",
    ] {
        assert!(made.keys().any(|(k, _)| k == t), "no seed for {t}");
    }
}

#[test]
fn the_seeds_reach_what_they_were_made_for() {
    // Every opcode has a valid request among the wire seeds.
    let ops: Vec<Opcode> = wire_requests().iter().map(|(_, r)| r.opcode()).collect();
    for op in Opcode::ALL {
        assert!(ops.contains(&op), "no wire seed for {op:?}");
    }
    for (_, req) in wire_requests() {
        assert_eq!(proto::decode_request(&encode(&req)), Ok(req));
    }
    // Each engine sequence gets the answers it was made for, through the
    // framing the target reads.
    for (name, seq) in engine_sequences() {
        let msgs: Vec<Vec<u8>> = seq.iter().map(|(r, _)| encode(r)).collect();
        let input = framed(&msgs);
        let split: Vec<&[u8]> = Messages(&input).collect();
        assert_eq!(split.len(), msgs.len(), "{name}");
        assert!(
            msgs.len() <= MAX_MESSAGES,
            "{name} is cut short by the target"
        );
        let reqs: Vec<Request> = seq.iter().map(|(r, _)| r.clone()).collect();
        for (i, (got, (_, want))) in replay(&reqs).iter().zip(&seq).enumerate() {
            let status = got.as_ref().err().copied().unwrap_or(Status::Ok);
            if let Some(want) = want {
                assert_eq!(status, *want, "{name}, message {i}");
            }
        }
        engine_handle(&input);
    }
    // The state layouts load as they should (and the oracle holds).
    let seeds = all_seeds();
    for ((t, name), bytes) in &seeds {
        match *t {
            "state_objects" => state_objects(bytes),
            "evidence_verify" => evidence_verify(bytes),
            _ => {}
        }
        let _ = name;
    }
    // The golden evidence verifies with the fixture keys the target uses.
    for (name, key) in [
        ("evidence_v1", FIXTURE_DEVICE_KEY),
        ("evidence_v2", FIXTURE_ATTESTATION_KEY),
    ] {
        let pk = crypto::parse_public_key(&key).unwrap();
        assert!(
            attest::verify(&pk, b"nonce-123", &golden(name)).is_ok(),
            "{name}"
        );
    }
    assert_eq!(
        crypto::sec1_uncompressed(&attest::attestation_key(&[0x11; 32]).unwrap().public_key()),
        FIXTURE_ATTESTATION_KEY
    );
}
