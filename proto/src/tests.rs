//! Wire-format tests: golden bytes for every message shape, round trips, and
//! strict rejection of everything else.

extern crate std;
use std::string::String as StdString;
use std::vec::Vec as StdVec;

use super::*;

fn enc_req(r: &Request) -> StdVec<u8> {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let n = encode_request(r, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn enc_resp(r: &Response) -> StdVec<u8> {
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    let n = encode_response(r, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn sample_requests() -> StdVec<Request> {
    std::vec![
        Request::Ping,
        Request::Status,
        Request::Init,
        Request::Rotate,
        Request::Retire(RetireRequest { below: 300 }),
        Request::BootDone,
        Request::Seal(SealRequest {
            namespace: "ha/core".try_into().unwrap(),
            plaintext: (&b"pw"[..]).try_into().unwrap()
        }),
        Request::Unseal(UnsealRequest {
            blob: (&[1u8, 2, 3][..]).try_into().unwrap(),
            namespace: None
        }),
        Request::Unseal(UnsealRequest {
            blob: (&[9u8][..]).try_into().unwrap(),
            namespace: Some("addon/x".try_into().unwrap())
        }),
        Request::Rewrap(RewrapRequest {
            blob: (&[4u8, 5][..]).try_into().unwrap()
        }),
        Request::Pubkey,
        Request::Attest(AttestRequest {
            challenge: (&[0xaa, 0xbb][..]).try_into().unwrap()
        }),
    ]
}

fn sample_responses() -> StdVec<Response> {
    std::vec![
        Response::Ping(PingResponse {
            protocol_version: 1,
            engine_version: 0x10000
        }),
        Response::Status(StatusResponse {
            engine_version: 0x10000,
            initialised: true,
            epoch: 2,
            min_epoch: 1,
            boot_locked: false
        }),
        Response::Init(InitResponse {
            created: true,
            epoch: 1
        }),
        Response::Rotate(EpochResponse {
            epoch: 2,
            min_epoch: 1
        }),
        Response::Retire(EpochResponse {
            epoch: 2,
            min_epoch: 2
        }),
        Response::BootDone,
        Response::Seal(BlobResponse {
            blob: (&[1u8, 2][..]).try_into().unwrap()
        }),
        Response::Unseal(UnsealResponse {
            namespace: "ha/core".try_into().unwrap(),
            plaintext: (&b"pw"[..]).try_into().unwrap()
        }),
        Response::Rewrap(BlobResponse {
            blob: (&[3u8][..]).try_into().unwrap()
        }),
        Response::Pubkey(PubkeyResponse {
            sec1: (&[4u8; 65][..]).try_into().unwrap()
        }),
        Response::Attest(AttestResponse {
            evidence: (&[5u8; 3][..]).try_into().unwrap()
        }),
    ]
}

/// Messages of operations added after `wire_v1.txt` was committed. Each
/// addition gets its own golden file, so the bytes of every earlier message
/// stay pinned by the untouched original.
fn later_samples() -> (StdVec<Request>, StdVec<Response>) {
    (
        std::vec![Request::InitNewIdentity],
        std::vec![Response::InitNewIdentity(InitResponse {
            created: true,
            epoch: 1
        })],
    )
}

/// Messages of the recovery operations (issue 10): `reseal`, `escrow`,
/// `recovery-status`, pinned by `tests/golden/wire_v1_recovery.txt`.
fn recovery_samples() -> (StdVec<Request>, StdVec<Response>) {
    let key: Vec<u8, PUBKEY_LEN> = (&[4u8; 65][..]).try_into().unwrap();
    (
        std::vec![
            Request::Reseal(ResealRequest {
                blob: (&[1u8, 2, 3][..]).try_into().unwrap(),
                to: key.clone(),
                allow_boot: false,
            }),
            Request::Reseal(ResealRequest {
                blob: (&[9u8][..]).try_into().unwrap(),
                to: key.clone(),
                allow_boot: true,
            }),
            Request::Escrow(EscrowRequest {
                recovery_key: key.clone(),
                replace: false,
            }),
            Request::Escrow(EscrowRequest {
                recovery_key: key,
                replace: true,
            }),
            Request::RecoveryStatus,
        ],
        std::vec![
            Response::Reseal(BlobResponse {
                blob: (&[7u8, 8][..]).try_into().unwrap()
            }),
            Response::Escrow(EscrowResponse {
                escrow: (&[0x48u8, 0x4b, 0x45, 0x53][..]).try_into().unwrap()
            }),
            Response::RecoveryStatus(RecoveryStatusResponse { enrolled: None }),
            Response::RecoveryStatus(RecoveryStatusResponse {
                enrolled: Some((&[0xabu8; 16][..]).try_into().unwrap())
            }),
        ],
    )
}

/// Messages added with engine 1.1.0 (issue 13): `retire-unmarked`, `open`,
/// `attest-pubkey`, pinned by `tests/golden/wire_v1_engine_1_1.txt`.
fn engine_1_1_samples() -> (StdVec<Request>, StdVec<Response>) {
    (
        std::vec![
            Request::RetireUnmarked,
            Request::Open(OpenRequest {
                blob: (&[1u8, 2, 3][..]).try_into().unwrap(),
                namespace: None,
                accept_offline: true,
            }),
            Request::Open(OpenRequest {
                blob: (&[9u8][..]).try_into().unwrap(),
                namespace: Some("boot/luks-data".try_into().unwrap()),
                accept_offline: false,
            }),
            Request::AttestPubkey,
        ],
        std::vec![
            Response::RetireUnmarked,
            Response::Open(OpenResponse {
                namespace: "ha/core".try_into().unwrap(),
                kind: BLOB_KIND_DEVICE,
                epoch: 3,
                plaintext: (&b"pw"[..]).try_into().unwrap(),
            }),
            Response::Open(OpenResponse {
                namespace: "addon/x".try_into().unwrap(),
                kind: BLOB_KIND_OFFLINE,
                epoch: 0,
                plaintext: (&b"x"[..]).try_into().unwrap(),
            }),
            Response::AttestPubkey(PubkeyResponse {
                sec1: (&[4u8; 65][..]).try_into().unwrap()
            }),
        ],
    )
}

/// `tests/golden/wire_v1_engine_1_1.txt` (`HAKEYS_BLESS=1` rewrites it),
/// and the error of the status added with them.
#[test]
fn golden_wire_bytes_of_engine_1_1_operations() {
    let (reqs, resps) = engine_1_1_samples();
    let mut text = golden_lines(&reqs, &resps);
    let mut buf = [0u8; 16];
    let n = encode_error(Opcode::Open as u16, Status::OfflineRefused, &mut buf).unwrap();
    text += &std::format!("error-open-offline-refused {}\n", hex::encode(&buf[..n]));
    check_golden("wire_v1_engine_1_1.txt", &text);
    // The layout as proto/SPEC.md states it: blob, namespace option, flag;
    // namespace, kind byte, epoch varint, plaintext.
    let b = enc_req(&reqs[1]);
    assert_eq!(&b[..8], b"HKRQ\x01\x00\x05\x02");
    assert_eq!(&b[8..], [3, 1, 2, 3, 0, 1]);
    let r = enc_resp(&resps[1]);
    assert_eq!(&r[..10], b"HKRS\x01\x00\x05\x02\x00\x00");
    assert_eq!(&r[10..], b"\x07ha/core\x01\x03\x02pw");
    assert_eq!(&buf[8..n], [18, 0]);
    assert_eq!(
        Status::from_name("offline_refused"),
        Some(Status::OfflineRefused)
    );
    // Body-less: a byte after the header is refused; the flag is 0 or 1.
    assert_eq!(
        decode_request(b"HKRQ\x01\x00\x06\x01\x00"),
        Err(WireError::TrailingBytes)
    );
    assert_eq!(
        decode_request(b"HKRQ\x01\x00\x03\x03\x00"),
        Err(WireError::TrailingBytes)
    );
    let mut bad = b.clone();
    *bad.last_mut().unwrap() = 2;
    assert_eq!(decode_request(&bad), Err(WireError::BadBody));
}

/// Render `reqs` and `resps` as `name hex` lines, checking that each
/// decodes back to itself.
fn golden_lines(reqs: &[Request], resps: &[Response]) -> StdString {
    let mut text = StdString::new();
    for r in reqs {
        text += &std::format!("req-{} {}\n", r.opcode().name(), hex::encode(enc_req(r)));
        assert_eq!(decode_request(&enc_req(r)), Ok(r.clone()));
    }
    for r in resps {
        text += &std::format!("resp-{} {}\n", r.opcode().name(), hex::encode(enc_resp(r)));
        assert_eq!(
            decode_response(&enc_resp(r), r.opcode()).unwrap(),
            Ok(r.clone())
        );
    }
    text
}

fn check_golden(file: &str, text: &str) {
    let path = std::format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("HAKEYS_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).expect("fixture"), text);
}

/// `tests/golden/wire_v1_recovery.txt`: the messages of opcodes 0x0204,
/// 0x0401 and 0x0402 (`HAKEYS_BLESS=1` rewrites it).
#[test]
fn golden_wire_bytes_of_recovery_operations() {
    let (reqs, resps) = recovery_samples();
    check_golden("wire_v1_recovery.txt", &golden_lines(&reqs, &resps));
    // The layout as proto/SPEC.md states it: blob, key, then the flag byte.
    let b = enc_req(&reqs[0]);
    assert_eq!(&b[..8], b"HKRQ\x01\x00\x04\x02");
    assert_eq!(&b[8..12], [3, 1, 2, 3]);
    assert_eq!(b[12], 65);
    assert_eq!(b[b.len() - 1], 0);
    // Body-less: a byte after the header is refused; a bool other than 0/1 too.
    assert_eq!(
        decode_request(b"HKRQ\x01\x00\x02\x04\x00"),
        Err(WireError::TrailingBytes)
    );
    let mut bad = enc_req(&reqs[2]);
    *bad.last_mut().unwrap() = 2;
    assert_eq!(decode_request(&bad), Err(WireError::BadBody));
    // A public key over 65 bytes, an escrow over its bound.
    let mut long = std::vec![b'H', b'K', b'R', b'Q', 1, 0, 0x01, 0x04, 66];
    long.extend([4u8; 66]);
    long.push(0);
    assert_eq!(decode_request(&long), Err(WireError::BadBody));
    let mut resp = std::vec![b'H', b'K', b'R', b'S', 1, 0, 0x01, 0x04, 0, 0];
    let n = MAX_ESCROW_LEN + 1;
    resp.extend([(n as u8 & 0x7f) | 0x80, (n >> 7) as u8]);
    resp.extend(std::vec![0u8; n]);
    assert_eq!(
        decode_response(&resp, Opcode::Escrow),
        Err(WireError::BadBody)
    );
}

/// `tests/golden/wire_v1_init_new_identity.txt`: the messages of opcode
/// 0x0105 (`HAKEYS_BLESS=1` rewrites it).
#[test]
fn golden_wire_bytes_of_later_operations() {
    let (reqs, resps) = later_samples();
    let mut text = StdString::new();
    for r in reqs {
        text += &std::format!("req-{} {}\n", r.opcode().name(), hex::encode(enc_req(&r)));
    }
    for r in &resps {
        text += &std::format!("resp-{} {}\n", r.opcode().name(), hex::encode(enc_resp(r)));
        assert_eq!(
            decode_response(&enc_resp(r), r.opcode()).unwrap(),
            Ok(r.clone())
        );
    }
    assert_eq!(
        decode_request(&enc_req(&Request::InitNewIdentity)),
        Ok(Request::InitNewIdentity)
    );
    // Body-less: a byte after the header is refused.
    assert_eq!(
        decode_request(b"HKRQ\x01\x00\x05\x01\x00"),
        Err(WireError::TrailingBytes)
    );
    let path = std::format!(
        "{}/tests/golden/wire_v1_init_new_identity.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("HAKEYS_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).expect("fixture"), text);
}

/// Every sample message's bytes, one `name hex` line each; compared with the
/// committed `tests/golden/wire_v1.txt` (`HAKEYS_BLESS=1` rewrites it).
#[test]
fn golden_wire_bytes() {
    let mut text = StdString::new();
    for r in sample_requests() {
        text += &std::format!("req-{} {}\n", r.opcode().name(), hex::encode(enc_req(&r)));
    }
    for r in sample_responses() {
        text += &std::format!("resp-{} {}\n", r.opcode().name(), hex::encode(enc_resp(&r)));
    }
    let mut buf = [0u8; 16];
    let n = encode_error(Opcode::Unseal as u16, Status::BlobRejected, &mut buf).unwrap();
    text += &std::format!("error-unseal-blob-rejected {}\n", hex::encode(&buf[..n]));
    let path = std::format!("{}/tests/golden/wire_v1.txt", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("HAKEYS_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).expect("fixture"), text);
}

#[test]
fn header_layout_is_as_specified() {
    let b = enc_req(&Request::Retire(RetireRequest { below: 300 }));
    // magic, version 1, reserved 0, opcode 0x0103 LE, postcard varint 300 = ac 02
    assert_eq!(b, [b'H', b'K', b'R', b'Q', 1, 0, 0x03, 0x01, 0xac, 0x02]);
    let mut buf = [0u8; 16];
    let n = encode_error(0x0202, Status::BlobRejected, &mut buf).unwrap();
    assert_eq!(&buf[..n], [b'H', b'K', b'R', b'S', 1, 0, 0x02, 0x02, 10, 0]);
}

#[test]
fn round_trips() {
    for r in sample_requests() {
        assert_eq!(decode_request(&enc_req(&r)).unwrap(), r);
    }
    for r in sample_responses() {
        assert_eq!(decode_response(&enc_resp(&r), r.opcode()).unwrap(), Ok(r));
    }
    for s in Status::ALL.iter().skip(1) {
        let mut buf = [0u8; 16];
        let n = encode_error(Opcode::Seal as u16, *s, &mut buf).unwrap();
        assert_eq!(decode_response(&buf[..n], Opcode::Seal).unwrap(), Err(*s));
    }
}

#[test]
fn strict_request_decoding() {
    let good = enc_req(&Request::Seal(SealRequest {
        namespace: "ha/core".try_into().unwrap(),
        plaintext: (&b"pw"[..]).try_into().unwrap(),
    }));
    // Every truncation fails.
    for len in 0..good.len() {
        assert!(decode_request(&good[..len]).is_err(), "truncated to {len}");
    }
    let mut t = good.clone();
    t.push(0);
    assert_eq!(decode_request(&t), Err(WireError::TrailingBytes));
    let mut t = good.clone();
    t[0] = b'X';
    assert_eq!(decode_request(&t), Err(WireError::BadMagic));
    let mut t = good.clone();
    t[4] = 2;
    assert_eq!(decode_request(&t), Err(WireError::UnsupportedVersion(2)));
    let mut t = good.clone();
    t[5] = 1;
    assert_eq!(decode_request(&t), Err(WireError::ReservedNotZero));
    let mut t = good.clone();
    t[6] = 0x77;
    assert_eq!(decode_request(&t), Err(WireError::UnknownOpcode(0x0277)));
    // Body-less opcodes take no body.
    assert_eq!(
        decode_request(b"HKRQ\x01\x00\x01\x00\x00"),
        Err(WireError::TrailingBytes)
    );
    // A response is not a request.
    assert_eq!(
        decode_request(&enc_resp(&Response::BootDone)),
        Err(WireError::BadMagic)
    );
    // Over-long messages are refused before parsing.
    assert_eq!(
        decode_request(&[0u8; MAX_MESSAGE_LEN + 1]),
        Err(WireError::TooLong)
    );
}

#[test]
fn fields_over_their_bound_are_refused() {
    // A namespace of 65 bytes, hand-encoded: varint 65 then the bytes.
    let mut m = std::vec![b'H', b'K', b'R', b'Q', 1, 0, 0x01, 0x02, 65];
    m.extend([b'a'; 65]);
    m.extend([1, b'x']);
    assert_eq!(decode_request(&m), Err(WireError::BadBody));
    // A secret of MAX_SECRET_LEN + 1 bytes.
    let mut m = std::vec![b'H', b'K', b'R', b'Q', 1, 0, 0x01, 0x02, 1, b'a'];
    let n = MAX_SECRET_LEN + 1;
    m.extend([(n as u8 & 0x7f) | 0x80, (n >> 7) as u8]);
    m.extend(std::vec![0u8; n]);
    assert_eq!(decode_request(&m), Err(WireError::BadBody));
    // A length prefix that claims more than is there.
    let m = [b'H', b'K', b'R', b'Q', 1, 0, 0x02, 0x02, 0xff, 0x0f, 1, 2];
    assert_eq!(decode_request(&m), Err(WireError::BadBody));
    // An Option tag other than 0/1.
    let m = [b'H', b'K', b'R', b'Q', 1, 0, 0x02, 0x02, 1, 7, 2];
    assert_eq!(decode_request(&m), Err(WireError::BadBody));
}

#[test]
fn strict_response_decoding() {
    let good = enc_resp(&Response::Init(InitResponse {
        created: true,
        epoch: 1,
    }));
    assert_eq!(
        decode_response(&good, Opcode::Rotate),
        Err(WireError::OpcodeMismatch)
    );
    let mut t = good.clone();
    t[8] = 200;
    assert_eq!(
        decode_response(&t, Opcode::Init),
        Err(WireError::UnknownStatus(200))
    );
    let mut t = good.clone();
    t.push(1);
    assert_eq!(
        decode_response(&t, Opcode::Init),
        Err(WireError::TrailingBytes)
    );
    // An error status with a body is malformed.
    let mut buf = [0u8; 16];
    let n = encode_error(Opcode::Init as u16, Status::Internal, &mut buf).unwrap();
    let mut t = buf[..n].to_vec();
    t.push(0);
    assert_eq!(
        decode_response(&t, Opcode::Init),
        Err(WireError::TrailingBytes)
    );
}

#[test]
fn uuid_and_opcodes() {
    assert_eq!(TA_UUID_STR.len(), 36);
    let hexed: StdString = TA_UUID_STR.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex::encode(TA_UUID), hexed);
    for op in Opcode::ALL {
        assert_eq!(Opcode::from_u16(op as u16), Some(op));
    }
    for (i, s) in Status::ALL.iter().enumerate() {
        assert_eq!(*s as u16, i as u16, "status codes are dense and stable");
    }
}

#[test]
fn opcode_table_is_ordered_and_named() {
    let names: StdVec<&str> = Opcode::ALL.iter().map(|op| op.name()).collect();
    assert_eq!(
        names,
        [
            "ping",
            "status",
            "init",
            "rotate",
            "retire",
            "boot-done",
            "init-new-identity",
            "retire-unmarked",
            "seal",
            "unseal",
            "rewrap",
            "reseal",
            "open",
            "pubkey",
            "attest",
            "attest-pubkey",
            "escrow",
            "recovery-status"
        ]
    );
    for pair in Opcode::ALL.windows(2) {
        assert!(
            (pair[0] as u16) < (pair[1] as u16),
            "{pair:?} not in numeric order"
        );
    }
    assert_eq!(Opcode::from_u16(0), None);
    assert_eq!(Opcode::from_u16(0x0304), None);
}

/// The snake_case status names are the daemon's public wire contract
/// (`docs/daemon.md`): they must never change.
#[test]
fn status_names_are_the_wire_contract() {
    let expected = [
        (Status::Ok, "ok"),
        (Status::BadMessage, "bad_message"),
        (Status::UnsupportedVersion, "unsupported_version"),
        (Status::UnknownOpcode, "unknown_opcode"),
        (Status::NotInitialised, "not_initialised"),
        (Status::InvalidNamespace, "invalid_namespace"),
        (Status::TooLarge, "too_large"),
        (Status::InvalidArgument, "invalid_argument"),
        (Status::BootLocked, "boot_locked"),
        (Status::EpochRetired, "epoch_retired"),
        (Status::BlobRejected, "blob_rejected"),
        (Status::NamespaceMismatch, "namespace_mismatch"),
        (Status::StorageFailure, "storage_failure"),
        (Status::StorageCorrupt, "storage_corrupt"),
        (Status::Internal, "internal"),
        (Status::Busy, "busy"),
        (Status::BootNotAllowed, "boot_not_allowed"),
        (Status::RecoveryKeyMismatch, "recovery_key_mismatch"),
        (Status::OfflineRefused, "offline_refused"),
        (Status::IdentityRefused, "identity_refused"),
    ];
    assert_eq!(Status::ALL.len(), expected.len());
    for (s, (want, name)) in Status::ALL.iter().zip(expected) {
        assert_eq!(*s, want);
        assert_eq!(s.name(), name);
        assert_eq!(Status::from_name(name), Some(*s));
        assert_eq!(Status::from_u16(*s as u16), Some(*s));
        assert!(!s.message().is_empty());
    }
    for bad in [
        "",
        "OK",
        "Ok",
        "bad-message",
        "BadMessage",
        "blob_rejected ",
        "unknown",
    ] {
        assert_eq!(Status::from_name(bad), None, "{bad:?}");
    }
    assert_eq!(Status::from_u16(20), None);
    assert_eq!(
        Status::NotInitialised.message(),
        "device not initialised (run `teectl init`)"
    );
}

/// Every request type's `Call::OPCODE` is the opcode of the request it
/// becomes, and every sample response is accepted by exactly its own
/// operation's `Call::from_response`.
#[test]
fn call_pairs_each_request_with_its_response() {
    fn check<C: Call + Clone>(c: C) -> StdVec<Opcode> {
        assert_eq!(c.clone().into_request().opcode(), C::OPCODE);
        sample_responses()
            .into_iter()
            .chain(later_samples().1)
            .chain(recovery_samples().1)
            .chain(engine_1_1_samples().1)
            .filter(|r| C::from_response(r.clone()).is_ok())
            .map(|r| r.opcode())
            .fold(StdVec::new(), |mut ops, op| {
                if !ops.contains(&op) {
                    ops.push(op);
                }
                ops
            })
    }
    let blob = BlobBytes::from_slice(&[1]).unwrap();
    let accepted = [
        check(PingRequest),
        check(StatusRequest),
        check(InitRequest),
        check(RotateRequest),
        check(RetireRequest { below: 2 }),
        check(BootDoneRequest),
        check(InitNewIdentityRequest),
        check(RetireUnmarkedRequest),
        check(SealRequest {
            namespace: "ha/core".try_into().unwrap(),
            plaintext: (&b"pw"[..]).try_into().unwrap(),
        }),
        check(UnsealRequest {
            blob: blob.clone(),
            namespace: None,
        }),
        check(RewrapRequest { blob: blob.clone() }),
        check(ResealRequest {
            blob: blob.clone(),
            to: (&[4u8; 65][..]).try_into().unwrap(),
            allow_boot: false,
        }),
        check(OpenRequest {
            blob,
            namespace: None,
            accept_offline: true,
        }),
        check(PubkeyRequest),
        check(AttestRequest {
            challenge: (&[1u8][..]).try_into().unwrap(),
        }),
        check(AttestPubkeyRequest),
        check(EscrowRequest {
            recovery_key: (&[4u8; 65][..]).try_into().unwrap(),
            replace: false,
        }),
        check(RecoveryStatusRequest),
    ];
    for (op, accepted) in Opcode::ALL.iter().zip(accepted) {
        assert_eq!(accepted, [*op], "{op:?} accepts only its own answer");
    }
    assert_eq!(PingRequest.into_request(), Request::Ping);
    assert_eq!(BootDoneRequest::from_response(Response::BootDone), Ok(()));
}

#[test]
fn mismatched_response_is_opcode_mismatch() {
    // Rotate and Retire answer with the same body type, Seal and Rewrap too:
    // the pairing is by operation, not by type.
    let epochs = EpochResponse {
        epoch: 2,
        min_epoch: 1,
    };
    assert_eq!(
        RetireRequest::from_response(Response::Rotate(epochs.clone())),
        Err(WireError::OpcodeMismatch)
    );
    assert_eq!(
        RotateRequest::from_response(Response::Rotate(epochs.clone())),
        Ok(epochs)
    );
    let blob = BlobResponse {
        blob: (&[1u8][..]).try_into().unwrap(),
    };
    assert_eq!(
        SealRequest::from_response(Response::Rewrap(blob)),
        Err(WireError::OpcodeMismatch)
    );
    assert_eq!(
        BootDoneRequest::from_response(Response::Ping(PingResponse {
            protocol_version: 1,
            engine_version: 1
        })),
        Err(WireError::OpcodeMismatch)
    );
    // Decoded bytes go the same way.
    let msg = enc_resp(&Response::BootDone);
    let decoded = decode_response(&msg, BootDoneRequest::OPCODE)
        .unwrap()
        .unwrap();
    assert_eq!(
        PingRequest::from_response(decoded),
        Err(WireError::OpcodeMismatch)
    );
}

#[test]
fn response_status_reads_the_header_only() {
    let ok = enc_resp(&Response::Init(InitResponse {
        created: true,
        epoch: 1,
    }));
    assert_eq!(response_status(&ok), Ok(Status::Ok));
    assert_eq!(
        response_status(&enc_resp(&Response::BootDone)),
        Ok(Status::Ok)
    );
    for s in Status::ALL {
        let mut buf = [0u8; 16];
        let n = encode_error(0x0999, s, &mut buf).unwrap();
        assert_eq!(response_status(&buf[..n]), Ok(s));
    }
    for len in 0..RESPONSE_HEADER_LEN {
        assert_eq!(response_status(&ok[..len]), Err(WireError::Truncated));
    }
    let mut t = ok.clone();
    t[3] = b'Q';
    assert_eq!(response_status(&t), Err(WireError::BadMagic));
    let mut t = ok.clone();
    t[4] = 9;
    assert_eq!(response_status(&t), Err(WireError::UnsupportedVersion(9)));
    let mut t = ok.clone();
    t[5] = 1;
    assert_eq!(response_status(&t), Err(WireError::ReservedNotZero));
    let mut t = ok.clone();
    t[8..10].copy_from_slice(&300u16.to_le_bytes());
    assert_eq!(response_status(&t), Err(WireError::UnknownStatus(300)));
    assert_eq!(
        response_status(&[0u8; MAX_MESSAGE_LEN + 1]),
        Err(WireError::TooLong)
    );
    // A request is not a response.
    assert_eq!(
        response_status(&enc_req(&Request::Ping)),
        Err(WireError::Truncated)
    );
    assert_eq!(
        response_status(&enc_req(&Request::Retire(RetireRequest { below: 300 }))),
        Err(WireError::BadMagic)
    );
}

#[test]
fn request_opcode_peeks() {
    let seal = enc_req(&Request::Seal(SealRequest {
        namespace: "ha/core".try_into().unwrap(),
        plaintext: (&b"pw"[..]).try_into().unwrap(),
    }));
    assert_eq!(request_opcode_raw(&seal), Some(0x0201));
    assert_eq!(peek_request_opcode(&seal), Some(Opcode::Seal));
    for len in 0..REQUEST_HEADER_LEN {
        assert_eq!(request_opcode_raw(&seal[..len]), None);
        assert_eq!(peek_request_opcode(&seal[..len]), None);
    }
    // The raw field is read whatever the rest says; the typed peek is not.
    let mut t = seal.clone();
    t[0] = b'X';
    assert_eq!(request_opcode_raw(&t), Some(0x0201));
    assert_eq!(peek_request_opcode(&t), None);
    let mut t = seal.clone();
    t[7] = 0x77;
    assert_eq!(request_opcode_raw(&t), Some(0x7701));
    assert_eq!(peek_request_opcode(&t), None);
}

#[test]
fn wire_error_is_an_error() {
    fn assert_error<E: core::error::Error>(_: &E) {}
    let e = WireError::UnknownOpcode(0x0277);
    assert_error(&e);
    assert_eq!(std::format!("{e}"), "unknown opcode 0x0277");
}
