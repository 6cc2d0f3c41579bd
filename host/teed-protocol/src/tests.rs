//! The protocol's decoder and encoders, against the exact bytes.
use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hakeys_client::armor;

fn blob_text() -> String {
    // A syntactically valid device blob (not authentic): magic, version 1,
    // kind 1, namespace, epoch 1, 16-byte salt, 1-byte ciphertext, tag.
    let mut b = b"HKSB\x01\x01".to_vec();
    b.push(7);
    b.extend_from_slice(b"ha/core");
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&[0u8; 16]);
    b.push(0x55);
    b.extend_from_slice(&[0u8; 16]);
    armor::blob_to_text(&b)
}

fn code(line: &str) -> Code {
    match decode_request(line.as_bytes()) {
        Ok(r) => panic!("accepted {line}: {r:?}"),
        Err(e) => e.code,
    }
}

const BAD: Code = Code::Engine(Status::BadMessage);

#[test]
fn decodes_every_operation() {
    assert!(matches!(
        decode_request(br#"{"v":1,"op":"status"}"#),
        Ok(Request::Status)
    ));
    assert!(matches!(
        decode_request(b"{\"op\":\"pubkey\", \"v\":1}\r"),
        Ok(Request::Pubkey)
    ));
    match decode_request(br#"{"v":1,"op":"seal","namespace":"addon/x","plaintext":"AAEC"}"#) {
        Ok(Request::Seal(s)) => {
            assert_eq!(s.namespace, "addon/x");
            assert_eq!(s.plaintext.as_slice(), &[0, 1, 2]);
        }
        other => panic!("{other:?}"),
    }
    let line = format!(r#"{{"v":1,"op":"unseal","blob":"{}"}}"#, blob_text());
    match decode_request(line.as_bytes()) {
        Ok(Request::Unseal(u)) => {
            assert_eq!(u.blob_namespace, "ha/core");
            assert_eq!(u.namespace, None);
        }
        other => panic!("{other:?}"),
    }
    let line = format!(
        r#"{{"v":1,"op":"unseal","blob":"{}","namespace":"ha/other"}}"#,
        blob_text()
    );
    match decode_request(line.as_bytes()) {
        Ok(Request::Unseal(u)) => assert_eq!(u.namespace.as_deref(), Some("ha/other")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_strictly() {
    assert_eq!(code(""), BAD);
    assert_eq!(code("nonsense"), BAD);
    assert_eq!(code("[1]"), BAD);
    assert_eq!(code(r#"{"op":"status"}"#), BAD);
    assert_eq!(code(r#"{"v":1}"#), BAD);
    assert_eq!(
        code(r#"{"v":2,"op":"status"}"#),
        Code::Engine(Status::UnsupportedVersion)
    );
    assert_eq!(
        code(r#"{"v":2,"op":"status","future":1}"#),
        Code::Engine(Status::UnsupportedVersion)
    );
    assert_eq!(
        code(r#"{"v":"1","op":"status"}"#),
        Code::Engine(Status::UnsupportedVersion)
    );
    assert_eq!(code(r#"{"v":1,"op":"status","x":1}"#), BAD);
    assert_eq!(code(r#"{"v":1,"op":"status","v":1}"#), BAD);
    assert_eq!(code(r#"{"v":1,"op":"status"} {}"#), BAD);
    assert_eq!(code(r#"{"v":1,"op":"status","namespace":"ha/x"}"#), BAD);
    assert_eq!(code(r#"{"v":1,"op":"status","blob":null}"#), BAD);
    assert_eq!(code(r#"{"v":1,"op":7}"#), BAD);
    assert_eq!(
        code(r#"{"v":1,"op":"frobnicate"}"#),
        Code::Engine(Status::UnknownOpcode)
    );
    assert_eq!(code(r#"{"v":1,"op":"rotate"}"#), Code::Denied);
    assert_eq!(code(r#"{"v":1,"op":"seal","namespace":"ha/x"}"#), BAD);
    assert_eq!(
        code(r#"{"v":1,"op":"seal","namespace":"Ha","plaintext":"AA=="}"#),
        Code::Engine(Status::InvalidNamespace)
    );
    assert_eq!(
        code(r#"{"v":1,"op":"seal","namespace":"ha/x","plaintext":""}"#),
        Code::Engine(Status::InvalidArgument)
    );
    assert_eq!(
        code(r#"{"v":1,"op":"seal","namespace":"ha/x","plaintext":"A"}"#),
        BAD
    );
    let big = STANDARD.encode([1u8; 4097]);
    assert_eq!(
        code(&format!(
            r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":"{big}"}}"#
        )),
        Code::Engine(Status::TooLarge)
    );
    let max = STANDARD.encode([1u8; 4096]);
    assert!(decode_request(
        format!(r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":"{max}"}}"#).as_bytes()
    )
    .is_ok());
    let rejected = Code::Engine(Status::BlobRejected);
    assert_eq!(code(r#"{"v":1,"op":"unseal","blob":"hello"}"#), rejected);
    assert_eq!(code(r#"{"v":1,"op":"unseal","blob":"HKSB"}"#), rejected);
    assert_eq!(
        code(r#"{"v":1,"op":"unseal","blob":"hakeys:v1:!!"}"#),
        rejected
    );
    assert_eq!(
        code(r#"{"v":1,"op":"unseal","blob":"hakeys:v1:AAAA"}"#),
        rejected
    );
    assert_eq!(code(r#"{"v":1,"op":"unseal"}"#), BAD);
    let long = format!(r#"{{"v":1,"op":"status","x":"{}"}}"#, "a".repeat(MAX_LINE));
    assert_eq!(code(&long), Code::Engine(Status::TooLarge));
}

#[test]
fn errors_never_echo_values() {
    let secret = "c2VjcmV0LXZhbHVlLTEyMzQ";
    for line in [
        format!(r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":"{secret}!"}}"#),
        format!(r#"{{"v":1,"op":"seal","namespace":"ha/x","plaintext":["{secret}"]}}"#),
        format!(r#"{{"v":1,"op":"unseal","blob":"{secret}"}}"#),
        format!(r#"{{"v":"{secret}","op":"status"}}"#),
        format!(r#"{{"v":1,"op":"{secret}"}}"#),
        format!(r#"{{"v":1,"op":"status","{secret}={secret}":1}}"#),
    ] {
        let e = decode_request(line.as_bytes()).unwrap_err();
        assert!(!e.message.contains(secret), "{e:?}");
    }
}

#[test]
fn code_names_round_trip_and_responses_are_json_lines() {
    for s in Status::ALL {
        assert_eq!(
            Code::from_name(Code::Engine(s).name()),
            Some(Code::Engine(s))
        );
    }
    for (c, n) in DAEMON_CODES {
        assert_eq!(c.name(), n);
        assert_eq!(Code::from_name(n), Some(c));
    }
    let lines = [
        encode_error(Code::RateLimited, "slow \"down\"\n", Some(250)),
        encode_unseal("ha/core", "device", 2, b"\x00\xffsecret"),
        encode_seal(b"HKSB"),
        encode_pubkey("-----BEGIN PUBLIC KEY-----\nAA\n-----END PUBLIC KEY-----\n"),
        encode_status(&StatusAnswer {
            backend: "sim".into(),
            initialised: true,
            epoch: 2,
            min_epoch: 1,
            boot_locked: false,
            engine_version: "1.0.0".into(),
        }),
    ];
    for l in lines.iter() {
        let text = std::str::from_utf8(l).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["v"], 1);
    }
    let v: serde_json::Value = serde_json::from_slice(&lines[1]).unwrap();
    assert_eq!(
        STANDARD.decode(v["plaintext"].as_str().unwrap()).unwrap(),
        b"\x00\xffsecret"
    );
    // The exact bytes of an answer are part of the protocol.
    assert_eq!(
        &lines[0][..],
        &b"{\"v\":1,\"status\":\"rate_limited\",\"message\":\"slow \\\"down\\\"\\n\",\"retry_after_ms\":250}\n"[..]
    );
    assert_eq!(
        &encode_error(Code::Denied, "no", None)[..],
        &b"{\"v\":1,\"status\":\"denied\",\"message\":\"no\"}\n"[..]
    );
}

#[test]
fn request_lines_round_trip() {
    let mut line = RequestLine::new(Op::Seal);
    line.namespace = Some("addon/x".into());
    line.plaintext = Some(Zeroizing::new("AAEC".into()));
    let bytes = line.encode();
    assert_eq!(
        &bytes[..],
        &b"{\"v\":1,\"op\":\"seal\",\"namespace\":\"addon/x\",\"plaintext\":\"AAEC\"}\n"[..]
    );
    match decode_request(bytes.strip_suffix(b"\n").unwrap()) {
        Ok(Request::Seal(s)) => assert_eq!(s.plaintext.as_slice(), &[0, 1, 2]),
        other => panic!("{other:?}"),
    }
}
