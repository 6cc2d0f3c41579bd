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
//!
//! The status codes and the operations (number, name, request body, response
//! body) are each declared once, in the two tables below; the enums, their
//! name and number look-ups, the codec and the [`Call`] pairing of every
//! request with its response are generated from them.
#![no_std]
// Lints: `Cargo.toml` [lints] (no unsafe; no unwrap, expect, indexing or
// panic outside tests: a panic in the TA kills the service).

#[macro_use]
mod declare;

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
/// Largest recovery escrow, in bytes (`engine/SPEC.md`, "Recovery escrow").
pub const MAX_ESCROW_LEN: usize = 512;
/// Length of a recovery key's fingerprint: the first 16 bytes of SHA-256
/// over its uncompressed SEC1 public key.
pub const RECOVERY_FINGERPRINT_LEN: usize = 16;
/// Largest encoded message in either direction. Anything longer is refused
/// before it is parsed; buffers of this size always suffice.
pub const MAX_MESSAGE_LEN: usize = 8192;

/// A namespace label as carried on the wire (validated by the engine).
pub type Namespace = String<MAX_NAMESPACE_LEN>;
/// A secret's bytes.
pub type Secret = Vec<u8, MAX_SECRET_LEN>;
/// A sealed blob's bytes.
pub type BlobBytes = Vec<u8, MAX_BLOB_LEN>;

// The status codes: variant = number, then the stable snake_case name
// (`Status::name`, part of the daemon's public wire contract, see
// `docs/daemon.md`), then the message for a person. Numbers never change
// meaning; new codes are only ever appended.
status_table! {
    /// Success.
    Ok = 0, "ok", "ok";
    /// The message could not be decoded: bad magic, reserved byte not zero,
    /// truncated, trailing bytes, over the size limit, a field over its bound.
    BadMessage = 1, "bad_message", "malformed message";
    /// The header names a protocol version this side does not speak.
    UnsupportedVersion = 2, "unsupported_version", "unsupported protocol version";
    /// The header names an opcode this side does not know.
    UnknownOpcode = 3, "unknown_opcode", "unknown operation";
    /// The device holds no root key yet (`init` has not been run).
    NotInitialised = 4, "not_initialised", "device not initialised (run `teectl init`)";
    /// The namespace label is not valid (length or character set).
    InvalidNamespace = 5, "invalid_namespace",
        "invalid namespace (1-64 chars of a-z 0-9 . _ -, segments separated by /)";
    /// A secret or other field is longer than allowed.
    TooLarge = 6, "too_large", "input too large";
    /// A well-formed request whose values make no sense (e.g. an empty
    /// secret, retiring above the current epoch).
    InvalidArgument = 7, "invalid_argument", "invalid argument";
    /// The namespace is under `boot/` and the boot phase is over.
    BootLocked = 8, "boot_locked", "refused: boot/ namespaces are locked until the next boot";
    /// The blob's epoch is below the oldest epoch still accepted.
    EpochRetired = 9, "epoch_retired", "refused: the blob's key epoch has been retired";
    /// The blob cannot be opened: malformed, tampered, sealed by another
    /// device or under another key. Deliberately says no more.
    BlobRejected = 10, "blob_rejected",
        "blob rejected: tampered, corrupted, or sealed for another device or key";
    /// The blob's namespace is not the one the caller was allowed to open.
    NamespaceMismatch = 11, "namespace_mismatch", "refused: the blob belongs to another namespace";
    /// Secure storage could not be read or written.
    StorageFailure = 12, "storage_failure", "secure storage failure";
    /// Secure storage holds state that fails its integrity check.
    StorageCorrupt = 13, "storage_corrupt", "secure storage failed its integrity check";
    /// The engine failed in a way that is not the caller's fault.
    Internal = 14, "internal", "internal error in the key engine";
    /// The engine is busy; the request may be retried.
    Busy = 15, "busy", "key engine busy, try again";
    /// `reseal` of a `boot/` namespace without `allow_boot`.
    BootNotAllowed = 16, "boot_not_allowed",
        "refused: boot/ secrets are resealed only when explicitly allowed (teectl reseal --allow-boot)";
    /// `escrow` to another recovery key than the one this device enrolled,
    /// and no replacement allowed (only during the boot phase).
    RecoveryKeyMismatch = 17, "recovery_key_mismatch",
        "refused: this device exports escrow only to the recovery key it enrolled first";
    /// A blob sealed offline to the device's public key (kind 2) in a
    /// namespace that does not accept them (`boot/`), or where the caller
    /// asked for device blobs only.
    OfflineRefused = 18, "offline_refused",
        "refused: a blob sealed offline is not accepted in this namespace (import it deliberately with teectl rewrap --import-offline)";
    /// The TEE reports a client identity that may not ask for this: every
    /// operation but ping, status, pubkey, attest-pubkey, boot-done, seal
    /// and unseal/open with a required namespace outside `boot/` needs
    /// root's login identity (`engine::Caller`).
    IdentityRefused = 19, "identity_refused",
        "refused: the key engine allows this only to root's TEE login identity (lifecycle, recovery, boot/ and unseal without a namespace)";
}

// The operations, in numeric order. `(T)` is a body carried by the enum
// variant and postcard-encoded on the wire; a bare request name is a unit
// struct (no body; the variant has none either); `()` is an empty response.
// Numbers are never reused; `proto/SPEC.md` describes each operation.
operation_table! {
    // 0x00: service
    /// Liveness and versions.
    Ping = 0x0001, "ping" => PingRequest -> (PingResponse);
    /// Engine version, epochs, boot lock; works before `init`.
    Status = 0x0002, "status" => StatusRequest -> (StatusResponse);
    // 0x01: lifecycle
    /// Create the root key, device key and first epoch, once.
    Init = 0x0101, "init" => InitRequest -> (InitResponse);
    /// Make `epoch + 1` the current epoch.
    Rotate = 0x0102, "rotate" => RotateRequest -> (EpochResponse);
    /// Raise the oldest accepted epoch.
    Retire = 0x0103, "retire" => (RetireRequest) -> (EpochResponse);
    /// End the boot phase: `boot/` namespaces lock until the next boot.
    BootDone = 0x0104, "boot-done" => BootDoneRequest -> ();
    /// Replace the root key and device key with new ones, whatever the
    /// storage holds: every blob sealed so far becomes unopenable. The only
    /// way to leave a device whose state is lost (`StorageCorrupt`).
    InitNewIdentity = 0x0105, "init-new-identity" => InitNewIdentityRequest -> (InitResponse);
    /// Refuse unmarked blobs sealed offline (generation 0) from now on.
    RetireUnmarked = 0x0106, "retire-unmarked" => RetireUnmarkedRequest -> ();
    // 0x02: sealing
    /// Encrypt a secret for a namespace.
    Seal = 0x0201, "seal" => (SealRequest) -> (BlobResponse);
    /// Open a blob.
    Unseal = 0x0202, "unseal" => (UnsealRequest) -> (UnsealResponse);
    /// Re-seal a blob under the current epoch inside the engine.
    Rewrap = 0x0203, "rewrap" => (RewrapRequest) -> (BlobResponse);
    /// Open a blob inside the engine and seal it to another device's
    /// public key (a kind-2 blob, same namespace).
    Reseal = 0x0204, "reseal" => (ResealRequest) -> (BlobResponse);
    /// Open a blob, answering its kind and epoch with the plaintext
    /// (`unseal` plus what the caller needs to judge where it came from).
    Open = 0x0205, "open" => (OpenRequest) -> (OpenResponse);
    // 0x03: device identity
    /// The device public key: offline blobs are sealed to it (ECDH only).
    Pubkey = 0x0301, "pubkey" => PubkeyRequest -> (PubkeyResponse);
    /// Sign a challenge with the attestation key (evidence version 2).
    Attest = 0x0302, "attest" => (AttestRequest) -> (AttestResponse);
    /// The attestation public key, which signs evidence (and nothing else).
    AttestPubkey = 0x0303, "attest-pubkey" => AttestPubkeyRequest -> (PubkeyResponse);
    // 0x04: recovery
    /// Export the root key and device key sealed to a recovery public key;
    /// the first escrow enrols that key.
    Escrow = 0x0401, "escrow" => (EscrowRequest) -> (EscrowResponse);
    /// Which recovery key, if any, this device has enrolled.
    RecoveryStatus = 0x0402, "recovery-status" => RecoveryStatusRequest -> (RecoveryStatusResponse);
}

/// One operation, typed end to end: a request that knows its opcode and the
/// type of the body that answers it.
///
/// Implemented, from the operation table, for exactly one request type per
/// opcode: the body structs ([`SealRequest`], [`RetireRequest`], ...) and,
/// for operations whose request has no body, the unit structs
/// [`PingRequest`], [`StatusRequest`], [`InitRequest`], [`RotateRequest`],
/// [`BootDoneRequest`], [`InitNewIdentityRequest`],
/// [`RetireUnmarkedRequest`], [`PubkeyRequest`], [`AttestPubkeyRequest`] and
/// [`RecoveryStatusRequest`]. `BootDone`'s and `RetireUnmarked`'s responses
/// have no body: their `Response` is `()`. A client written against this trait cannot
/// take the answer to one operation for the answer to another:
///
/// ```
/// use hakeys_proto::*;
///
/// fn answer<C: Call>(msg: &[u8]) -> Result<Result<C::Response, Status>, WireError> {
///     Ok(match decode_response(msg, C::OPCODE)? {
///         Ok(r) => Ok(C::from_response(r)?),
///         Err(status) => Err(status),
///     })
/// }
///
/// let mut buf = [0u8; MAX_MESSAGE_LEN];
/// let resp = Response::Retire(EpochResponse { epoch: 3, min_epoch: 2 });
/// let n = encode_response(&resp, &mut buf).unwrap();
/// let epochs = answer::<RetireRequest>(&buf[..n]).unwrap().unwrap();
/// assert_eq!(epochs.min_epoch, 2);
/// // The same bytes do not answer a `rotate`, although its body has the same type.
/// assert_eq!(answer::<RotateRequest>(&buf[..n]), Err(WireError::OpcodeMismatch));
/// ```
pub trait Call {
    /// The operation this request asks for.
    const OPCODE: Opcode;
    /// The body of a successful answer.
    type Response;
    /// This request as a [`Request`], ready for [`encode_request`].
    fn into_request(self) -> Request;
    /// The body of `r` if it answers this operation, otherwise
    /// [`WireError::OpcodeMismatch`].
    fn from_response(r: Response) -> Result<Self::Response, WireError>;
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

/// `Open`: open `blob` as `Unseal` does, and answer its kind and epoch.
/// When `namespace` is set, the blob must belong to exactly that namespace;
/// when `accept_offline` is false, a blob sealed offline (kind 2) is refused
/// in every namespace (it always is in `boot/`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    pub blob: BlobBytes,
    pub namespace: Option<Namespace>,
    pub accept_offline: bool,
}

/// `Rewrap`: re-seal `blob` under the current epoch without releasing the
/// plaintext. Also turns a blob sealed to the device's public key into an
/// ordinary device blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapRequest {
    pub blob: BlobBytes,
}

/// `Reseal`: open `blob` and seal its plaintext to the device public key
/// `to` (uncompressed SEC1), in the same namespace, without releasing the
/// plaintext. A `boot/` namespace needs `allow_boot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealRequest {
    pub blob: BlobBytes,
    pub to: Vec<u8, PUBKEY_LEN>,
    pub allow_boot: bool,
}

/// `Escrow`: export what opens this device's blobs, sealed to the recovery
/// public key `recovery_key` (uncompressed SEC1). `replace` allows a key
/// other than the enrolled one to replace it, during the boot phase only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowRequest {
    pub recovery_key: Vec<u8, PUBKEY_LEN>,
    pub replace: bool,
}

/// `Attest`: sign `challenge` with the attestation key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestRequest {
    pub challenge: Vec<u8, MAX_CHALLENGE_LEN>,
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

/// `Init` and `InitNewIdentity` reply: `created` is false when the device
/// was already initialised (and nothing was changed); `InitNewIdentity`
/// always answers `created: true`.
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

/// Blob kind 1: sealed inside the engine under the root key of an epoch.
pub const BLOB_KIND_DEVICE: u8 = 1;
/// Blob kind 2: sealed offline to the device's public key, by anyone who
/// holds it.
pub const BLOB_KIND_OFFLINE: u8 = 2;

/// `Open` reply: what `Unseal` answers, and the blob's authenticated kind
/// ([`BLOB_KIND_DEVICE`] or [`BLOB_KIND_OFFLINE`]) and epoch (a device
/// blob's epoch; an offline blob's generation, 0 if unmarked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenResponse {
    pub namespace: Namespace,
    pub kind: u8,
    pub epoch: u32,
    pub plaintext: Secret,
}

/// `Pubkey` reply: the device key, uncompressed SEC1 (65 bytes).
/// `AttestPubkey` reply: the attestation key, in the same form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubkeyResponse {
    pub sec1: Vec<u8, PUBKEY_LEN>,
}

/// `Attest` reply: the signed evidence (format in `engine/SPEC.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestResponse {
    pub evidence: Vec<u8, MAX_EVIDENCE_LEN>,
}

/// `Escrow` reply: the escrow (format in `engine/SPEC.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowResponse {
    pub escrow: Vec<u8, MAX_ESCROW_LEN>,
}

/// `RecoveryStatus` reply: the fingerprint of the enrolled recovery key
/// ([`RECOVERY_FINGERPRINT_LEN`] bytes), or none if no escrow was ever
/// exported by this identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatusResponse {
    pub enrolled: Option<Vec<u8, RECOVERY_FINGERPRINT_LEN>>,
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

impl core::error::Error for WireError {}

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
    let (hdr, body) = split_header(out)?;
    *hdr = request_header(req.opcode() as u16);
    let n = req.put_body(body)?;
    finish(REQUEST_HEADER_LEN + n)
}

/// The raw opcode field of a request (bytes 6 and 7, little-endian), however
/// the rest of its header reads; `None` if the message is shorter than a
/// request header. This is what an error response echoes (0 for `None`), so
/// that even an answer to an undecodable request names what was asked.
pub fn request_opcode_raw(msg: &[u8]) -> Option<u16> {
    let [_, _, _, _, _, _, o0, o1] = *msg.first_chunk::<REQUEST_HEADER_LEN>()?;
    Some(u16::from_le_bytes([o0, o1]))
}

/// The opcode of a request, read from its header alone, for logging when the
/// body fails to decode. `None` if the header itself is not valid.
pub fn peek_request_opcode(msg: &[u8]) -> Option<Opcode> {
    let [m0, m1, m2, m3, _, _, o0, o1] = *msg.first_chunk::<REQUEST_HEADER_LEN>()?;
    if [m0, m1, m2, m3] != REQUEST_MAGIC {
        return None;
    }
    Opcode::from_u16(u16::from_le_bytes([o0, o1]))
}

/// Decode a request strictly.
pub fn decode_request(msg: &[u8]) -> Result<Request, WireError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong);
    }
    let (hdr, body) = msg
        .split_first_chunk::<REQUEST_HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    let [m0, m1, m2, m3, version, reserved, o0, o1] = *hdr;
    check_common_header([m0, m1, m2, m3], version, reserved, REQUEST_MAGIC)?;
    let raw_op = u16::from_le_bytes([o0, o1]);
    let op = Opcode::from_u16(raw_op).ok_or(WireError::UnknownOpcode(raw_op))?;
    Request::take_body(op, body)
}

/// Encode a successful response into `out`.
pub fn encode_response(resp: &Response, out: &mut [u8]) -> Result<usize, WireError> {
    let (hdr, body) = split_header(out)?;
    *hdr = response_header(resp.opcode() as u16, Status::Ok);
    let n = resp.put_body(body)?;
    finish(RESPONSE_HEADER_LEN + n)
}

/// Encode an error response (header only). `opcode` is the raw number from
/// the request, echoed even when it was not understood (0 when the request
/// header itself was unreadable).
pub fn encode_error(opcode: u16, status: Status, out: &mut [u8]) -> Result<usize, WireError> {
    let (hdr, _) = split_header(out)?;
    *hdr = response_header(opcode, status);
    Ok(RESPONSE_HEADER_LEN)
}

/// The status of a response, read from its header alone (the body is not
/// looked at). The length, magic, version and reserved byte are checked as
/// [`decode_response`] checks them, and an unknown status number is an
/// error. The one place outside the codec that needs a response's status
/// reads it here, never from header bytes of its own.
pub fn response_status(msg: &[u8]) -> Result<Status, WireError> {
    split_response(msg).map(|(_, status, _)| status)
}

/// Decode the response to a request with opcode `expected`. A non-Ok status
/// comes back as `Ok(Err(status))`; a malformed response as `Err`.
pub fn decode_response(
    msg: &[u8],
    expected: Opcode,
) -> Result<Result<Response, Status>, WireError> {
    let (raw_op, status, body) = split_response(msg)?;
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
    Response::take_body(expected, body).map(Ok)
}

/// A response's raw opcode, its status and its body, after the checks every
/// response passes: bounded length, magic, version, reserved byte, a known
/// status.
fn split_response(msg: &[u8]) -> Result<(u16, Status, &[u8]), WireError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong);
    }
    let (hdr, body) = msg
        .split_first_chunk::<RESPONSE_HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    let [m0, m1, m2, m3, version, reserved, o0, o1, s0, s1] = *hdr;
    check_common_header([m0, m1, m2, m3], version, reserved, RESPONSE_MAGIC)?;
    let raw_status = u16::from_le_bytes([s0, s1]);
    let status = Status::from_u16(raw_status).ok_or(WireError::UnknownStatus(raw_status))?;
    Ok((u16::from_le_bytes([o0, o1]), status, body))
}

/// The first `N` bytes of `out` (a header) and the rest, up to
/// [`MAX_MESSAGE_LEN`] in all.
fn split_header<const N: usize>(out: &mut [u8]) -> Result<(&mut [u8; N], &mut [u8]), WireError> {
    let cap = out.len().min(MAX_MESSAGE_LEN);
    out.get_mut(..cap)
        .and_then(|out| out.split_first_chunk_mut::<N>())
        .ok_or(WireError::TooLong)
}

fn request_header(opcode: u16) -> [u8; REQUEST_HEADER_LEN] {
    let [m0, m1, m2, m3] = REQUEST_MAGIC;
    let [o0, o1] = opcode.to_le_bytes();
    [m0, m1, m2, m3, PROTOCOL_VERSION, 0, o0, o1]
}

fn response_header(opcode: u16, status: Status) -> [u8; RESPONSE_HEADER_LEN] {
    let [m0, m1, m2, m3] = RESPONSE_MAGIC;
    let [o0, o1] = opcode.to_le_bytes();
    let [s0, s1] = (status as u16).to_le_bytes();
    [m0, m1, m2, m3, PROTOCOL_VERSION, 0, o0, o1, s0, s1]
}

fn check_common_header(
    magic: [u8; 4],
    version: u8,
    reserved: u8,
    expected_magic: [u8; 4],
) -> Result<(), WireError> {
    if magic != expected_magic {
        return Err(WireError::BadMagic);
    }
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    if reserved != 0 {
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

// reason: const evaluation only (`TA_UUID` is a const): a bad `uuid.txt`
// fails the build, it can never panic in the TA or the host at run time.
#[allow(clippy::panic)]
const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("uuid.txt: not a hex digit"),
    }
}

/// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` at compile time.
// reason: const evaluation only (`TA_UUID` is a const): a bad `uuid.txt`
// fails the build, it can never panic in the TA or the host at run time.
#[allow(clippy::panic, clippy::indexing_slicing)]
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
