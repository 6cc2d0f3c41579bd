//! Request lines: what a client sends ([`RequestLine`]) and the strict,
//! pure decoder that turns one into a validated [`Request`].

use hakeys_client::armor;
use hakeys_engine::namespace;
use hakeys_proto::{Status, MAX_SECRET_LEN};
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{to_line, Code, Op, MAX_LINE, ROOT_ONLY_OPS, VERSION};

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
    /// The blob's kind from its header: `device` (sealed on this board) or
    /// `offline` (sealed to its public key by anyone who has it). The header
    /// is authenticated when the blob opens, so after a successful unseal
    /// this is the blob's true kind.
    pub blob_kind: &'static str,
    /// The blob's epoch (a device blob) or generation (an offline blob)
    /// from its header, authenticated the same way.
    pub blob_epoch: u32,
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

/// A field that, when present, must be a string (not `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A request line exactly as it may appear on the wire: what a client
/// serialises and what [`decode_request`] parses first (then validates into
/// a [`Request`]). The plaintext is wiped when the line is dropped.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    /// The protocol version, [`VERSION`].
    pub v: u64,
    /// The operation's name ([`Op::name`]).
    pub op: String,
    /// `unseal`: the blob's `hakeys:v1:` text form.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub blob: Option<String>,
    /// `seal`: the namespace to seal in; `unseal`: the namespace the blob
    /// must belong to (optional).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub namespace: Option<String>,
    /// `seal`: the secret, base64 (standard alphabet, padded).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub plaintext: Option<Zeroizing<String>>,
}

impl RequestLine {
    /// A request for `op` with no other fields.
    pub fn new(op: Op) -> RequestLine {
        RequestLine {
            v: VERSION,
            op: op.name().into(),
            blob: None,
            namespace: None,
            plaintext: None,
        }
    }

    /// The line to send, with its `\n`. Built in one buffer of
    /// [`MAX_LINE`] bytes, never reallocated, wiped on drop.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        to_line(self)
    }
}

impl std::fmt::Debug for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLine")
            .field("v", &self.v)
            .field("op", &self.op)
            .field("blob", &self.blob.as_ref().map(|b| b.len()))
            .field("namespace", &self.namespace)
            .field("plaintext", &self.plaintext.as_ref().map(|p| p.len()))
            .finish()
    }
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

/// What [`classify`] keeps of one value of a refused line: its JSON type,
/// the number for `v` and the operation for `op`. Never the text of a
/// string: a refused line may carry a plaintext, and nothing of it may stay
/// behind in freed memory (strings are only ever borrowed from the line).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str(Option<Op>),
    Number(Option<u64>),
    Other,
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
                Ok(Kind::Str(Op::from_name(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
                Ok(Kind::Number(Some(v)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
                Ok(Kind::Number(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
                Ok(Kind::Number(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_unit<E>(self) -> Result<Kind, E> {
                Ok(Kind::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Kind, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Kind::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Kind, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Kind::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The shape of a refused line that is a JSON object: each field's name
/// (wiped on drop) and [`Kind`], in order; a repeated name is kept twice.
struct Shape(Vec<(Zeroizing<String>, Kind)>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Shape, A::Error> {
                let mut fields = Vec::new();
                while let Some(k) = m.next_key::<Zeroizing<String>>()? {
                    let kind = m.next_value::<Kind>()?;
                    fields.push((k, kind));
                }
                Ok(Shape(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl Shape {
    /// The value of field `name` (the last one, as JSON parsers take it).
    fn get(&self, name: &str) -> Option<Kind> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| *v)
    }
}

/// Explain why a line that the strict decoder refused was refused.
fn classify(line: &[u8]) -> DecodeError {
    if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
        return bad(
            None,
            "not valid JSON: a request is one JSON object on one line",
        );
    }
    let Ok(map) = serde_json::from_slice::<Shape>(line) else {
        return bad(None, "a request is one JSON object on one line");
    };
    match map.get("v") {
        None => return bad(None, "missing field `v` (the protocol version, 1)"),
        Some(Kind::Number(Some(VERSION))) => {}
        Some(_) => {
            return refuse(
                None,
                Code::Engine(Status::UnsupportedVersion),
                "unsupported protocol version: this daemon speaks version 1",
            )
        }
    }
    if let Some((k, _)) = map.0.iter().find(|(k, _)| !FIELDS.contains(&k.as_str())) {
        return bad(None, format!("unknown field {}", sanitise(k)));
    }
    let op = match map.get("op") {
        None => return bad(None, "missing field `op`"),
        Some(Kind::Str(op)) => op,
        Some(_) => None,
    };
    if let Some(k) = FIELDS[1..]
        .iter()
        .find(|k| map.get(k).is_some_and(|v| !matches!(v, Kind::Str(_))))
    {
        return bad(op, format!("field `{k}` must be a string"));
    }
    // Everything else the strict decoder can refuse: a repeated field.
    bad(op, "a field appears more than once")
}

/// Refuse fields the operation does not use.
fn only(op: Op, w: &RequestLine, allowed: &[&str]) -> Result<(), DecodeError> {
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
    let mut w: RequestLine = serde_json::from_slice(line).map_err(|_| classify(line))?;
    // Wiped when dropped, whatever happens next.
    let plaintext_text = w.plaintext.take();
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
    w.plaintext = has_plaintext.then(|| Zeroizing::new(String::new()));
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
            let (blob_namespace, blob_kind, blob_epoch) = hakeys_engine::blob::parse(&blob)
                .map(|p| (p.namespace.to_string(), p.kind.name(), p.epoch))
                .map_err(|_| rejected(Status::BlobRejected.message().into()))?;
            Ok(Request::Unseal(UnsealRequest {
                blob,
                blob_namespace,
                namespace,
                blob_kind,
                blob_epoch,
            }))
        }
    }
}
