//! The daemon's socket protocol, version 1 (specified in `docs/daemon.md`).
//!
//! One request per line, one response line per request, in order, any
//! number of requests per connection. A line is one JSON object of at most
//! [`MAX_LINE`] bytes including its `\n`. Requests carry `"v": 1` and an
//! `"op"`; responses carry `"v": 1` and a `"status"` name.
//!
//! [`decode_request`] is a pure function over the bytes of one line (without
//! its newline), strict and total: unknown fields, unknown operations, other
//! versions, missing or mistyped fields, a damaged blob or a bad namespace are
//! errors with a status and a fixed message, never a panic (fuzzed:
//! `fuzz/fuzz_targets/daemon_request.rs`). Error messages never contain the
//! request's data, except a short, sanitised unknown field name.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hakeys_engine::namespace;
use hakeys_proto::{Status, MAX_SECRET_LEN};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::armor;

/// The protocol version this daemon speaks.
pub const VERSION: u64 = 1;
/// The longest request or response line, including its `\n`.
pub const MAX_LINE: usize = 16 * 1024;

/// An operation the daemon offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Unseal,
    Seal,
    Pubkey,
    Status,
}

impl Op {
    /// Every operation the daemon offers.
    pub const ALL: [Op; 4] = [Op::Unseal, Op::Seal, Op::Pubkey, Op::Status];

    /// The name on the wire and in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Op::Unseal => "unseal",
            Op::Seal => "seal",
            Op::Pubkey => "pubkey",
            Op::Status => "status",
        }
    }

    /// The operation with this name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// Engine operations the daemon recognises and refuses (`denied`): they
/// rotate, retire or otherwise administer keys and stay with `teectl` run as
/// root.
pub const ROOT_ONLY_OPS: [&str; 7] = [
    "init",
    "rotate",
    "retire",
    "rewrap",
    "attest",
    "boot-done",
    "boot_done",
];

/// The outcome of a request: an engine status (including `ok`) or one of
/// the daemon's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A status of the key engine's protocol (`proto::Status`), `ok` included.
    Engine(Status),
    /// The policy does not grant this caller this operation on this namespace.
    Denied,
    /// Too many requests, connections or failed unseals: retry after
    /// `retry_after_ms`.
    RateLimited,
    /// The key engine is reconnecting (the TA or supplicant restarted): retry.
    Retry,
    /// The request did not arrive in full within the request timeout.
    Timeout,
}

/// Every daemon-specific code with its name (engine statuses are named by
/// [`status_name`]).
const DAEMON_CODES: [(Code, &str); 4] = [
    (Code::Denied, "denied"),
    (Code::RateLimited, "rate_limited"),
    (Code::Retry, "retry"),
    (Code::Timeout, "timeout"),
];

/// The wire name of an engine status: `proto::Status` in snake case.
pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::BadMessage => "bad_message",
        Status::UnsupportedVersion => "unsupported_version",
        Status::UnknownOpcode => "unknown_opcode",
        Status::NotInitialised => "not_initialised",
        Status::InvalidNamespace => "invalid_namespace",
        Status::TooLarge => "too_large",
        Status::InvalidArgument => "invalid_argument",
        Status::BootLocked => "boot_locked",
        Status::EpochRetired => "epoch_retired",
        Status::BlobRejected => "blob_rejected",
        Status::NamespaceMismatch => "namespace_mismatch",
        Status::StorageFailure => "storage_failure",
        Status::StorageCorrupt => "storage_corrupt",
        Status::Internal => "internal",
        Status::Busy => "busy",
    }
}

impl Code {
    /// Success.
    pub const OK: Code = Code::Engine(Status::Ok);

    /// The name on the wire and in audit lines.
    pub fn name(self) -> &'static str {
        match self {
            Code::Engine(s) => status_name(s),
            other => DAEMON_CODES
                .iter()
                .find(|(c, _)| *c == other)
                .map(|(_, n)| *n)
                .unwrap_or("internal"),
        }
    }

    /// The code with this wire name.
    pub fn from_name(name: &str) -> Option<Code> {
        Status::ALL
            .iter()
            .find(|s| status_name(**s) == name)
            .map(|s| Code::Engine(*s))
            .or_else(|| {
                DAEMON_CODES
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(c, _)| *c)
            })
    }

    /// Whether the same request may succeed later without change.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Code::RateLimited | Code::Retry | Code::Engine(Status::Busy)
        )
    }

    /// The `teectl` exit code for this outcome (README, "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            Code::Engine(s) => crate::exit::for_status(s),
            Code::Denied => crate::exit::REFUSED,
            Code::RateLimited | Code::Retry | Code::Timeout => crate::exit::UNAVAILABLE,
        }
    }
}

/// A decoded, validated `unseal` request.
#[derive(Debug)]
pub struct UnsealRequest {
    /// The binary blob (its header parsed and valid; not authenticated).
    pub blob: Vec<u8>,
    /// The namespace named in the blob's header: the one policy decides on
    /// and the engine is told to require.
    pub blob_namespace: String,
    /// The namespace the caller asked for, if any (refused if it differs).
    pub namespace: Option<String>,
}

/// A decoded, validated `seal` request.
pub struct SealRequest {
    pub namespace: String,
    /// 1 to 4096 bytes; wiped on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SealRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealRequest")
            .field("namespace", &self.namespace)
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .finish()
    }
}

/// A decoded request.
#[derive(Debug)]
pub enum Request {
    Unseal(UnsealRequest),
    Seal(SealRequest),
    Pubkey,
    Status,
}

impl Request {
    /// Its operation.
    pub fn op(&self) -> Op {
        match self {
            Request::Unseal(_) => Op::Unseal,
            Request::Seal(_) => Op::Seal,
            Request::Pubkey => Op::Pubkey,
            Request::Status => Op::Status,
        }
    }

    /// The namespace the policy decides on: the blob header's for `unseal`,
    /// the requested one for `seal`, none for the others.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Request::Unseal(u) => Some(&u.blob_namespace),
            Request::Seal(s) => Some(&s.namespace),
            Request::Pubkey | Request::Status => None,
        }
    }
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The operation, when the line got far enough to name a known one.
    pub op: Option<Op>,
    pub code: Code,
    /// One line for the caller; never contains request data other than a
    /// sanitised field name.
    pub message: String,
}

fn refuse(op: Option<Op>, code: Code, message: impl Into<String>) -> DecodeError {
    DecodeError {
        op,
        code,
        message: message.into(),
    }
}

fn bad(op: Option<Op>, message: impl Into<String>) -> DecodeError {
    refuse(op, Code::Engine(Status::BadMessage), message)
}

/// A JSON string field that, when present, must be a string (not `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// The request object exactly as it may appear on the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u64,
    op: String,
    #[serde(default, deserialize_with = "present")]
    blob: Option<String>,
    #[serde(default, deserialize_with = "present")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "present")]
    plaintext: Option<String>,
}

const FIELDS: [&str; 5] = ["v", "op", "blob", "namespace", "plaintext"];

/// A field name fit to repeat in an error message.
fn sanitise(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        format!("`{name}`")
    } else {
        "(unprintable name)".into()
    }
}

/// Explain why a line that the strict decoder refused was refused.
fn classify(line: &[u8]) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(_) => {
            return bad(
                None,
                "not valid JSON: a request is one JSON object on one line",
            )
        }
    };
    let serde_json::Value::Object(map) = value else {
        return bad(None, "a request is one JSON object on one line");
    };
    match map.get("v") {
        None => return bad(None, "missing field `v` (the protocol version, 1)"),
        Some(v) if v.as_u64() != Some(VERSION) => {
            return refuse(
                None,
                Code::Engine(Status::UnsupportedVersion),
                "unsupported protocol version: this daemon speaks version 1",
            )
        }
        Some(_) => {}
    }
    if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return bad(None, format!("unknown field {}", sanitise(k)));
    }
    let op = map
        .get("op")
        .and_then(|o| o.as_str())
        .and_then(Op::from_name);
    if !map.contains_key("op") {
        return bad(None, "missing field `op`");
    }
    if let Some(k) = FIELDS[1..]
        .iter()
        .find(|k| map.get(**k).is_some_and(|v| !v.is_string()))
    {
        return bad(op, format!("field `{k}` must be a string"));
    }
    // Everything else the strict decoder can refuse: a repeated field.
    bad(op, "a field appears more than once")
}

/// Refuse fields the operation does not use.
fn only(op: Op, w: &Wire, allowed: &[&str]) -> Result<(), DecodeError> {
    for (name, present) in [
        ("blob", w.blob.is_some()),
        ("namespace", w.namespace.is_some()),
        ("plaintext", w.plaintext.is_some()),
    ] {
        if present && !allowed.contains(&name) {
            return Err(bad(
                Some(op),
                format!("field `{name}` is not used by `{}`", op.name()),
            ));
        }
    }
    Ok(())
}

fn valid_namespace(op: Op, ns: String) -> Result<String, DecodeError> {
    if namespace::is_valid(&ns) {
        Ok(ns)
    } else {
        Err(refuse(
            Some(op),
            Code::Engine(Status::InvalidNamespace),
            Status::InvalidNamespace.message(),
        ))
    }
}

/// Decode one request line (without its `\n`; a trailing `\r` or other
/// JSON whitespace is allowed). Pure, strict, never panics.
pub fn decode_request(line: &[u8]) -> Result<Request, DecodeError> {
    if line.len() >= MAX_LINE {
        return Err(refuse(
            None,
            Code::Engine(Status::TooLarge),
            "request line longer than 16384 bytes",
        ));
    }
    let mut w: Wire = serde_json::from_slice(line).map_err(|_| classify(line))?;
    // Whatever happens next, the plaintext field is wiped when dropped.
    let plaintext_text = w.plaintext.take().map(Zeroizing::new);
    let has_plaintext = plaintext_text.is_some();
    if w.v != VERSION {
        return Err(refuse(
            None,
            Code::Engine(Status::UnsupportedVersion),
            "unsupported protocol version: this daemon speaks version 1",
        ));
    }
    let Some(op) = Op::from_name(&w.op) else {
        if ROOT_ONLY_OPS.contains(&w.op.as_str()) {
            return Err(refuse(
                None,
                Code::Denied,
                "this operation is not offered by the daemon: it stays with `teectl` run as root",
            ));
        }
        return Err(refuse(
            None,
            Code::Engine(Status::UnknownOpcode),
            "unknown operation: the daemon offers unseal, seal, pubkey and status",
        ));
    };
    // `only` looks at presence; put a marker back for the plaintext check.
    w.plaintext = has_plaintext.then(String::new);
    match op {
        Op::Status => {
            only(op, &w, &[])?;
            Ok(Request::Status)
        }
        Op::Pubkey => {
            only(op, &w, &[])?;
            Ok(Request::Pubkey)
        }
        Op::Seal => {
            only(op, &w, &["namespace", "plaintext"])?;
            let ns = w
                .namespace
                .take()
                .ok_or_else(|| bad(Some(op), "missing field `namespace`"))?;
            let ns = valid_namespace(op, ns)?;
            let text = plaintext_text
                .ok_or_else(|| bad(Some(op), "missing field `plaintext` (base64)"))?;
            if text.len() > MAX_SECRET_LEN.div_ceil(3) * 4 {
                return Err(refuse(
                    Some(op),
                    Code::Engine(Status::TooLarge),
                    "the secret is longer than 4096 bytes",
                ));
            }
            let mut plaintext = Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN));
            STANDARD
                .decode_vec(text.as_bytes(), &mut plaintext)
                .map_err(|_| {
                    bad(
                        Some(op),
                        "field `plaintext` is not valid base64 (standard alphabet, padded)",
                    )
                })?;
            if plaintext.is_empty() {
                return Err(refuse(
                    Some(op),
                    Code::Engine(Status::InvalidArgument),
                    "the secret is empty",
                ));
            }
            if plaintext.len() > MAX_SECRET_LEN {
                return Err(refuse(
                    Some(op),
                    Code::Engine(Status::TooLarge),
                    "the secret is longer than 4096 bytes",
                ));
            }
            Ok(Request::Seal(SealRequest {
                namespace: ns,
                plaintext,
            }))
        }
        Op::Unseal => {
            only(op, &w, &["blob", "namespace"])?;
            let namespace = w
                .namespace
                .take()
                .map(|ns| valid_namespace(op, ns))
                .transpose()?;
            let text = w.blob.take().ok_or_else(|| {
                bad(
                    Some(op),
                    "missing field `blob` (the `hakeys:v1:` text form)",
                )
            })?;
            let rejected = |m: String| refuse(Some(op), Code::Engine(Status::BlobRejected), m);
            // Only the text form: the binary form has no place in JSON.
            if !text.trim_start().starts_with(armor::BLOB_PREFIX) {
                return Err(rejected(
                    armor::ArmorError::NoPrefix(armor::BLOB_PREFIX).to_string(),
                ));
            }
            let blob =
                armor::blob_from_input(text.as_bytes()).map_err(|e| rejected(e.to_string()))?;
            let blob_namespace = hakeys_engine::blob::parse(&blob)
                .map(|p| p.namespace.to_string())
                .map_err(|_| rejected(Status::BlobRejected.message().into()))?;
            Ok(Request::Unseal(UnsealRequest {
                blob,
                blob_namespace,
                namespace,
            }))
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    /// `sim` or `tee`.
    pub backend: String,
    pub initialised: bool,
    pub epoch: u32,
    pub min_epoch: u32,
    pub boot_locked: bool,
    /// `major.minor.patch`.
    pub engine_version: String,
}

fn json_str(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// An error response line (with its `\n`).
pub fn encode_error(code: Code, message: &str, retry_after_ms: Option<u64>) -> Zeroizing<String> {
    let retry = retry_after_ms
        .map(|ms| format!(",\"retry_after_ms\":{ms}"))
        .unwrap_or_default();
    Zeroizing::new(format!(
        "{{\"v\":1,\"status\":\"{}\",\"message\":{}{retry}}}\n",
        code.name(),
        json_str(message)
    ))
}

/// The response to a successful `unseal` (with its `\n`). Built in one
/// allocation of the right size, so no copy of the plaintext is left behind
/// by a reallocation; wiped on drop.
pub fn encode_unseal(namespace: &str, plaintext: &[u8]) -> Zeroizing<String> {
    let ns = json_str(namespace);
    let head = format!("{{\"v\":1,\"status\":\"ok\",\"namespace\":{ns},\"plaintext\":\"");
    let b64_len = plaintext.len().div_ceil(3) * 4;
    let mut out = Zeroizing::new(String::with_capacity(head.len() + b64_len + 3));
    out.push_str(&head);
    STANDARD.encode_string(plaintext, &mut out);
    out.push_str("\"}\n");
    out
}

/// The response to a successful `seal`.
pub fn encode_seal(blob: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{{\"v\":1,\"status\":\"ok\",\"blob\":\"{}\"}}\n",
        armor::blob_to_text(blob)
    ))
}

/// The response to a successful `pubkey`.
pub fn encode_pubkey(pem: &str) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{{\"v\":1,\"status\":\"ok\",\"pem\":{}}}\n",
        json_str(pem)
    ))
}

/// The response to a successful `status`.
pub fn encode_status(s: &StatusInfo) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{{\"v\":1,\"status\":\"ok\",\"backend\":{},\"initialised\":{},\"epoch\":{},\"min_epoch\":{},\"boot_locked\":{},\"engine_version\":{}}}\n",
        json_str(&s.backend),
        s.initialised,
        s.epoch,
        s.min_epoch,
        s.boot_locked,
        json_str(&s.engine_version)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            encode_unseal("ha/core", b"\x00\xffsecret"),
            encode_seal(b"HKSB"),
            encode_pubkey("-----BEGIN PUBLIC KEY-----\nAA\n-----END PUBLIC KEY-----\n"),
            encode_status(&StatusInfo {
                backend: "sim".into(),
                initialised: true,
                epoch: 2,
                min_epoch: 1,
                boot_locked: false,
                engine_version: "1.0.0".into(),
            }),
        ];
        for l in lines.iter() {
            assert!(
                l.ends_with('\n') && l.matches('\n').count() == 1,
                "{}",
                l.as_str()
            );
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["v"], 1);
        }
        let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            STANDARD.decode(v["plaintext"].as_str().unwrap()).unwrap(),
            b"\x00\xffsecret"
        );
    }
}
