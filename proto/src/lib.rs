//! The wire protocol between the normal world and the key engine.
//!
//! This crate is the only definition of what crosses the TEE boundary: the TA
//! UUID, the opcodes, the request and response bodies, the size limits and the
//! status codes. The trusted application, the simulator backend, `teectl` and
//! the daemon all encode and decode through it. The format is specified in
//! `proto/SPEC.md`.
//!
//! Every message is an 8-byte header followed by a postcard-encoded body:
//!
//! ```text
//! request : magic "HKRQ" | version u8 | reserved u8 (0) | opcode u16 LE | body
//! response: magic "HKRS" | version u8 | reserved u8 (0) | opcode u16 LE | status u16 LE | body
//! ```
//!
//! Decoding is strict: the length is bounded before anything is parsed, the
//! magic, version and reserved byte must match exactly, unknown opcodes are
//! rejected, and a body must be consumed to its last byte.
#![no_std]
#![forbid(unsafe_code)]

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// The trusted application's UUID, as text. `uuid.txt` is the single source.
pub const TA_UUID_STR: &str = include_str!("../uuid.txt").trim_ascii();

/// The trusted application's UUID in the RFC 4122 byte order.
pub const TA_UUID: [u8; 16] = parse_uuid(TA_UUID_STR);

/// The TA's one command: parameter 0 is a MEMREF_INPUT holding an encoded
/// request, parameter 1 a MEMREF_OUTPUT of at least [`MAX_MESSAGE_LEN`]
/// bytes that receives the encoded response (its size is updated to the
/// response length); parameters 2 and 3 are NONE.
pub const TA_CMD_REQUEST: u32 = 0;

/// Protocol version carried in every header. A peer speaking another
/// version is refused with [`Status::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u8 = 1;

/// Magic of a request header.
pub const REQUEST_MAGIC: [u8; 4] = *b"HKRQ";
/// Magic of a response header.
pub const RESPONSE_MAGIC: [u8; 4] = *b"HKRS";
/// Length of a request header.
pub const REQUEST_HEADER_LEN: usize = 8;
/// Length of a response header.
pub const RESPONSE_HEADER_LEN: usize = 10;

/// Longest namespace label, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Largest secret that can be sealed, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;
/// Largest sealed blob, in bytes (secret plus the largest header and tag).
pub const MAX_BLOB_LEN: usize = MAX_SECRET_LEN + 256;
/// Longest attestation challenge, in bytes.
pub const MAX_CHALLENGE_LEN: usize = 64;
/// Largest attestation evidence, in bytes.
pub const MAX_EVIDENCE_LEN: usize = 256;
/// Length of an uncompressed SEC1 P-256 public key.
pub const PUBKEY_LEN: usize = 65;
/// Largest encoded message in either direction. Anything longer is refused
/// before it is parsed; buffers of this size always suffice.
pub const MAX_MESSAGE_LEN: usize = 8192;

/// A namespace label as carried on the wire (validated by the engine).
pub type Namespace = String<MAX_NAMESPACE_LEN>;
/// A secret's bytes.
pub type Secret = Vec<u8, MAX_SECRET_LEN>;
/// A sealed blob's bytes.
pub type BlobBytes = Vec<u8, MAX_BLOB_LEN>;

/// Operation numbers, grouped by subsystem in the high byte:
/// `0x00` service, `0x01` lifecycle, `0x02` sealing, `0x03` device identity.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Ping = 0x0001,
    Status = 0x0002,
    Init = 0x0101,
    Rotate = 0x0102,
    Retire = 0x0103,
    BootDone = 0x0104,
    Seal = 0x0201,
    Unseal = 0x0202,
    Rewrap = 0x0203,
    Pubkey = 0x0301,
    Attest = 0x0302,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 11] = [
        Opcode::Ping,
        Opcode::Status,
        Opcode::Init,
        Opcode::Rotate,
        Opcode::Retire,
        Opcode::BootDone,
        Opcode::Seal,
        Opcode::Unseal,
        Opcode::Rewrap,
        Opcode::Pubkey,
        Opcode::Attest,
    ];

    /// The opcode with this number, if there is one.
    pub fn from_u16(v: u16) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|op| *op as u16 == v)
    }

    /// A stable lower-case name, for logs and audit lines.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Ping => "ping",
            Opcode::Status => "status",
            Opcode::Init => "init",
            Opcode::Rotate => "rotate",
            Opcode::Retire => "retire",
            Opcode::BootDone => "boot-done",
            Opcode::Seal => "seal",
            Opcode::Unseal => "unseal",
            Opcode::Rewrap => "rewrap",
            Opcode::Pubkey => "pubkey",
            Opcode::Attest => "attest",
        }
    }
}

/// Stable status codes carried in every response. Numbers never change
/// meaning; new codes are only ever appended.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// The message could not be decoded: bad magic, reserved byte not zero,
    /// truncated, trailing bytes, over the size limit, a field over its bound.
    BadMessage = 1,
    /// The header names a protocol version this side does not speak.
    UnsupportedVersion = 2,
    /// The header names an opcode this side does not know.
    UnknownOpcode = 3,
    /// The device holds no root key yet (`init` has not been run).
    NotInitialised = 4,
    /// The namespace label is not valid (length or character set).
    InvalidNamespace = 5,
    /// A secret or other field is longer than allowed.
    TooLarge = 6,
    /// A well-formed request whose values make no sense (e.g. an empty
    /// secret, retiring above the current epoch).
    InvalidArgument = 7,
    /// The namespace is under `boot/` and the boot phase is over.
    BootLocked = 8,
    /// The blob's epoch is below the oldest epoch still accepted.
    EpochRetired = 9,
    /// The blob cannot be opened: malformed, tampered, sealed by another
    /// device or under another key. Deliberately says no more.
    BlobRejected = 10,
    /// The blob's namespace is not the one the caller was allowed to open.
    NamespaceMismatch = 11,
    /// Secure storage could not be read or written.
    StorageFailure = 12,
    /// Secure storage holds state that fails its integrity check.
    StorageCorrupt = 13,
    /// The engine failed in a way that is not the caller's fault.
    Internal = 14,
    /// The engine is busy; the request may be retried.
    Busy = 15,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 16] = [
        Status::Ok,
        Status::BadMessage,
        Status::UnsupportedVersion,
        Status::UnknownOpcode,
        Status::NotInitialised,
        Status::InvalidNamespace,
        Status::TooLarge,
        Status::InvalidArgument,
        Status::BootLocked,
        Status::EpochRetired,
        Status::BlobRejected,
        Status::NamespaceMismatch,
        Status::StorageFailure,
        Status::StorageCorrupt,
        Status::Internal,
        Status::Busy,
    ];

    /// The status with this number, if there is one.
    pub fn from_u16(v: u16) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as u16 == v)
    }

    /// One line for a person; never contains request data.
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadMessage => "malformed message",
            Status::UnsupportedVersion => "unsupported protocol version",
            Status::UnknownOpcode => "unknown operation",
            Status::NotInitialised => "device not initialised (run `teectl init`)",
            Status::InvalidNamespace => {
                "invalid namespace (1-64 chars of a-z 0-9 . _ -, segments separated by /)"
            }
            Status::TooLarge => "input too large",
            Status::InvalidArgument => "invalid argument",
            Status::BootLocked => "refused: boot/ namespaces are locked until the next boot",
            Status::EpochRetired => "refused: the blob's key epoch has been retired",
            Status::BlobRejected => {
                "blob rejected: tampered, corrupted, or sealed for another device or key"
            }
            Status::NamespaceMismatch => "refused: the blob belongs to another namespace",
            Status::StorageFailure => "secure storage failure",
            Status::StorageCorrupt => "secure storage failed its integrity check",
            Status::Internal => "internal error in the key engine",
            Status::Busy => "key engine busy, try again",
        }
    }
}

/// `Retire`: make `below` the oldest epoch still accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireRequest {
    pub below: u32,
}

/// `Seal`: encrypt `plaintext` under the current epoch's key for `namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealRequest {
    pub namespace: Namespace,
    pub plaintext: Secret,
}

/// `Unseal`: open `blob`. When `namespace` is set, the blob must belong to
/// exactly that namespace (the daemon sets it to the namespace its policy
/// allowed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealRequest {
    pub blob: BlobBytes,
    pub namespace: Option<Namespace>,
}

/// `Rewrap`: re-seal `blob` under the current epoch without releasing the
/// plaintext. Also turns a blob sealed to the device's public key into an
/// ordinary device blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapRequest {
    pub blob: BlobBytes,
}

/// `Attest`: sign `challenge` with the device key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestRequest {
    pub challenge: Vec<u8, MAX_CHALLENGE_LEN>,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Ping,
    Status,
    Init,
    Rotate,
    Retire(RetireRequest),
    BootDone,
    Seal(SealRequest),
    Unseal(UnsealRequest),
    Rewrap(RewrapRequest),
    Pubkey,
    Attest(AttestRequest),
}

impl Request {
    /// The opcode of this request.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Ping => Opcode::Ping,
            Request::Status => Opcode::Status,
            Request::Init => Opcode::Init,
            Request::Rotate => Opcode::Rotate,
            Request::Retire(_) => Opcode::Retire,
            Request::BootDone => Opcode::BootDone,
            Request::Seal(_) => Opcode::Seal,
            Request::Unseal(_) => Opcode::Unseal,
            Request::Rewrap(_) => Opcode::Rewrap,
            Request::Pubkey => Opcode::Pubkey,
            Request::Attest(_) => Opcode::Attest,
        }
    }
}

/// `Ping` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    pub protocol_version: u8,
    pub engine_version: u32,
}

/// `Status` reply. Epoch fields are 0 when not initialised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub engine_version: u32,
    pub initialised: bool,
    pub epoch: u32,
    pub min_epoch: u32,
    pub boot_locked: bool,
}

/// `Init` reply: `created` is false when the device was already initialised
/// (and nothing was changed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResponse {
    pub created: bool,
    pub epoch: u32,
}

/// `Rotate` and `Retire` reply: the epochs now in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochResponse {
    pub epoch: u32,
    pub min_epoch: u32,
}

/// `Seal` and `Rewrap` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobResponse {
    pub blob: BlobBytes,
}

/// `Unseal` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealResponse {
    pub namespace: Namespace,
    pub plaintext: Secret,
}

/// `Pubkey` reply: the device key, uncompressed SEC1 (65 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubkeyResponse {
    pub sec1: Vec<u8, PUBKEY_LEN>,
}

/// `Attest` reply: the signed evidence (format in `engine/SPEC.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    pub evidence: Vec<u8, MAX_EVIDENCE_LEN>,
}

/// A decoded successful response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Ping(PingResponse),
    Status(StatusResponse),
    Init(InitResponse),
    Rotate(EpochResponse),
    Retire(EpochResponse),
    BootDone,
    Seal(BlobResponse),
    Unseal(UnsealResponse),
    Rewrap(BlobResponse),
    Pubkey(PubkeyResponse),
    Attest(AttestResponse),
}

impl Response {
    /// The opcode this response answers.
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Ping(_) => Opcode::Ping,
            Response::Status(_) => Opcode::Status,
            Response::Init(_) => Opcode::Init,
            Response::Rotate(_) => Opcode::Rotate,
            Response::Retire(_) => Opcode::Retire,
            Response::BootDone => Opcode::BootDone,
            Response::Seal(_) => Opcode::Seal,
            Response::Unseal(_) => Opcode::Unseal,
            Response::Rewrap(_) => Opcode::Rewrap,
            Response::Pubkey(_) => Opcode::Pubkey,
            Response::Attest(_) => Opcode::Attest,
        }
    }
}

/// Why a message could not be encoded or decoded. Each maps onto a wire
/// [`Status`] through [`WireError::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Longer than [`MAX_MESSAGE_LEN`], or the output buffer is too small.
    TooLong,
    /// Shorter than a header.
    Truncated,
    BadMagic,
    UnsupportedVersion(u8),
    ReservedNotZero,
    UnknownOpcode(u16),
    UnknownStatus(u16),
    /// The response answers another opcode than the request asked.
    OpcodeMismatch,
    /// The body does not decode, or a field exceeds its bound.
    BadBody,
    /// The body decoded but bytes were left over.
    TrailingBytes,
}

impl WireError {
    /// The status a peer reports for this decoding failure.
    pub fn status(self) -> Status {
        match self {
            WireError::UnsupportedVersion(_) => Status::UnsupportedVersion,
            WireError::UnknownOpcode(_) => Status::UnknownOpcode,
            _ => Status::BadMessage,
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::TooLong => write!(f, "message longer than {MAX_MESSAGE_LEN} bytes"),
            WireError::Truncated => f.write_str("message shorter than its header"),
            WireError::BadMagic => f.write_str("bad magic"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            WireError::ReservedNotZero => f.write_str("reserved header byte is not zero"),
            WireError::UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:04x}"),
            WireError::UnknownStatus(s) => write!(f, "unknown status {s}"),
            WireError::OpcodeMismatch => f.write_str("response answers another operation"),
            WireError::BadBody => f.write_str("message body does not decode"),
            WireError::TrailingBytes => f.write_str("trailing bytes after the message body"),
        }
    }
}

/// Encode a request into `out`; returns the number of bytes written.
pub fn encode_request(req: &Request, out: &mut [u8]) -> Result<usize, WireError> {
    let op = req.opcode();
    let (hdr, body) = split_header(out, REQUEST_HEADER_LEN)?;
    hdr[..4].copy_from_slice(&REQUEST_MAGIC);
    hdr[4] = PROTOCOL_VERSION;
    hdr[5] = 0;
    hdr[6..8].copy_from_slice(&(op as u16).to_le_bytes());
    let n = match req {
        Request::Ping
        | Request::Status
        | Request::Init
        | Request::Rotate
        | Request::BootDone
        | Request::Pubkey => 0,
        Request::Retire(b) => put(b, body)?,
        Request::Seal(b) => put(b, body)?,
        Request::Unseal(b) => put(b, body)?,
        Request::Rewrap(b) => put(b, body)?,
        Request::Attest(b) => put(b, body)?,
    };
    finish(REQUEST_HEADER_LEN + n)
}

/// The opcode of a request, read from its header alone, for logging when the
/// body fails to decode. `None` if the header itself is not valid.
pub fn peek_request_opcode(msg: &[u8]) -> Option<Opcode> {
    match (msg.get(..4), msg.get(6..8)) {
        (Some(m), Some(op)) if m == REQUEST_MAGIC => {
            Opcode::from_u16(u16::from_le_bytes([op[0], op[1]]))
        }
        _ => None,
    }
}

/// Decode a request strictly.
pub fn decode_request(msg: &[u8]) -> Result<Request, WireError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong);
    }
    let (hdr, body) = msg
        .split_at_checked(REQUEST_HEADER_LEN)
        .ok_or(WireError::Truncated)?;
    check_common_header(hdr, &REQUEST_MAGIC)?;
    let raw_op = u16::from_le_bytes([hdr[6], hdr[7]]);
    let op = Opcode::from_u16(raw_op).ok_or(WireError::UnknownOpcode(raw_op))?;
    Ok(match op {
        Opcode::Ping => empty(body, Request::Ping)?,
        Opcode::Status => empty(body, Request::Status)?,
        Opcode::Init => empty(body, Request::Init)?,
        Opcode::Rotate => empty(body, Request::Rotate)?,
        Opcode::BootDone => empty(body, Request::BootDone)?,
        Opcode::Pubkey => empty(body, Request::Pubkey)?,
        Opcode::Retire => Request::Retire(take(body)?),
        Opcode::Seal => Request::Seal(take(body)?),
        Opcode::Unseal => Request::Unseal(take(body)?),
        Opcode::Rewrap => Request::Rewrap(take(body)?),
        Opcode::Attest => Request::Attest(take(body)?),
    })
}

/// Encode a successful response into `out`.
pub fn encode_response(resp: &Response, out: &mut [u8]) -> Result<usize, WireError> {
    let (hdr, body) = split_header(out, RESPONSE_HEADER_LEN)?;
    write_response_header(hdr, resp.opcode() as u16, Status::Ok);
    let n = match resp {
        Response::BootDone => 0,
        Response::Ping(b) => put(b, body)?,
        Response::Status(b) => put(b, body)?,
        Response::Init(b) => put(b, body)?,
        Response::Rotate(b) | Response::Retire(b) => put(b, body)?,
        Response::Seal(b) | Response::Rewrap(b) => put(b, body)?,
        Response::Unseal(b) => put(b, body)?,
        Response::Pubkey(b) => put(b, body)?,
        Response::Attest(b) => put(b, body)?,
    };
    finish(RESPONSE_HEADER_LEN + n)
}

/// Encode an error response (header only). `opcode` is the raw number from
/// the request, echoed even when it was not understood (0 when the request
/// header itself was unreadable).
pub fn encode_error(opcode: u16, status: Status, out: &mut [u8]) -> Result<usize, WireError> {
    let (hdr, _) = split_header(out, RESPONSE_HEADER_LEN)?;
    write_response_header(hdr, opcode, status);
    Ok(RESPONSE_HEADER_LEN)
}

/// Decode the response to a request with opcode `expected`. A non-Ok status
/// comes back as `Ok(Err(status))`; a malformed response as `Err`.
pub fn decode_response(
    msg: &[u8],
    expected: Opcode,
) -> Result<Result<Response, Status>, WireError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong);
    }
    let (hdr, body) = msg
        .split_at_checked(RESPONSE_HEADER_LEN)
        .ok_or(WireError::Truncated)?;
    check_common_header(hdr, &RESPONSE_MAGIC)?;
    let raw_op = u16::from_le_bytes([hdr[6], hdr[7]]);
    let raw_status = u16::from_le_bytes([hdr[8], hdr[9]]);
    let status = Status::from_u16(raw_status).ok_or(WireError::UnknownStatus(raw_status))?;
    if raw_op != expected as u16 {
        return Err(WireError::OpcodeMismatch);
    }
    if status != Status::Ok {
        return if body.is_empty() {
            Ok(Err(status))
        } else {
            Err(WireError::TrailingBytes)
        };
    }
    Ok(Ok(match expected {
        Opcode::BootDone => empty(body, Response::BootDone)?,
        Opcode::Ping => Response::Ping(take(body)?),
        Opcode::Status => Response::Status(take(body)?),
        Opcode::Init => Response::Init(take(body)?),
        Opcode::Rotate => Response::Rotate(take(body)?),
        Opcode::Retire => Response::Retire(take(body)?),
        Opcode::Seal => Response::Seal(take(body)?),
        Opcode::Unseal => Response::Unseal(take(body)?),
        Opcode::Rewrap => Response::Rewrap(take(body)?),
        Opcode::Pubkey => Response::Pubkey(take(body)?),
        Opcode::Attest => Response::Attest(take(body)?),
    }))
}

fn split_header(out: &mut [u8], len: usize) -> Result<(&mut [u8], &mut [u8]), WireError> {
    let cap = out.len().min(MAX_MESSAGE_LEN);
    let out = &mut out[..cap];
    out.split_at_mut_checked(len).ok_or(WireError::TooLong)
}

fn write_response_header(hdr: &mut [u8], opcode: u16, status: Status) {
    hdr[..4].copy_from_slice(&RESPONSE_MAGIC);
    hdr[4] = PROTOCOL_VERSION;
    hdr[5] = 0;
    hdr[6..8].copy_from_slice(&opcode.to_le_bytes());
    hdr[8..10].copy_from_slice(&(status as u16).to_le_bytes());
}

fn check_common_header(hdr: &[u8], magic: &[u8; 4]) -> Result<(), WireError> {
    if hdr[..4] != magic[..] {
        return Err(WireError::BadMagic);
    }
    if hdr[4] != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(hdr[4]));
    }
    if hdr[5] != 0 {
        return Err(WireError::ReservedNotZero);
    }
    Ok(())
}

fn finish(n: usize) -> Result<usize, WireError> {
    if n > MAX_MESSAGE_LEN {
        Err(WireError::TooLong)
    } else {
        Ok(n)
    }
}

fn put<T: Serialize>(value: &T, body: &mut [u8]) -> Result<usize, WireError> {
    postcard::to_slice(value, body)
        .map(|used| used.len())
        .map_err(|_| WireError::TooLong)
}

fn take<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(body).map_err(|_| WireError::BadBody)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(WireError::TrailingBytes)
    }
}

fn empty<T>(body: &[u8], value: T) -> Result<T, WireError> {
    if body.is_empty() {
        Ok(value)
    } else {
        Err(WireError::TrailingBytes)
    }
}

const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("uuid.txt: not a hex digit"),
    }
}

/// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` at compile time.
const fn parse_uuid(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    assert!(b.len() == 36, "uuid.txt: a UUID has 36 characters");
    let mut out = [0u8; 16];
    let mut i = 0;
    let mut o = 0;
    while i < 36 {
        if i == 8 || i == 13 || i == 18 || i == 23 {
            assert!(b[i] == b'-', "uuid.txt: dashes expected at 8, 13, 18, 23");
            i += 1;
            continue;
        }
        out[o] = (hex_val(b[i]) << 4) | hex_val(b[i + 1]);
        o += 1;
        i += 2;
    }
    out
}

#[cfg(test)]
mod tests;
