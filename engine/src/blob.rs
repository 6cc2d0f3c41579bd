//! The sealed blob format, version 1 (specified in `engine/SPEC.md`).
//!
//! ```text
//! magic "HKSB" | version 1 | kind | ns_len | namespace | epoch u32 BE | salt[16]
//!   [kind 2 only: ephemeral P-256 public key, 65 bytes uncompressed SEC1]
//! ciphertext | GCM tag[16]
//! ```
//!
//! Everything before the ciphertext is the header, and the whole header is
//! the AES-GCM associated data. Key and nonce come from HKDF-SHA256 with the
//! blob's salt, so every blob has its own key and nonce:
//! - kind 1 (device): IKM = root key, info binds the epoch and namespace;
//! - kind 2 (sealed to the device's public key offline): IKM = ECDH(ephemeral,
//!   device) x-coordinate, info binds both public keys and the namespace.
//!
//! A kind-2 blob's epoch field is its generation: the board's epoch the
//! sealer was given with the public key (so `retire` ends it like a device
//! blob of that epoch), or 0 for an unmarked blob (every kind-2 blob sealed
//! before generations existed, and any sealed to a bare public key), which
//! stays accepted until the owner retires unmarked blobs.

use hakeys_proto::{
    BlobBytes, Secret, MAX_BLOB_LEN, MAX_NAMESPACE_LEN, MAX_SECRET_LEN, PUBKEY_LEN,
};
use p256::{PublicKey, SecretKey};
use zeroize::Zeroize;

use crate::crypto::{self, CryptoError, TAG_LEN};
use crate::{namespace, EngineError, Entropy};

/// First four bytes of every sealed blob.
pub const BLOB_MAGIC: [u8; 4] = *b"HKSB";
/// The blob format version this engine writes and reads.
pub const BLOB_VERSION: u8 = 1;
/// Length of the per-blob HKDF salt.
pub const SALT_LEN: usize = 16;
/// Smallest possible blob: fixed header with a 1-byte namespace, 1 byte of
/// ciphertext, the tag.
pub const MIN_BLOB_LEN: usize = 7 + 1 + 4 + SALT_LEN + 1 + TAG_LEN;

const INFO_DEVICE: &[u8] = b"hakeys/v1/blob/device\0";
const INFO_TO_DEVICE: &[u8] = b"hakeys/v1/blob/to-device\0";

/// Who can open a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Sealed inside the engine under the root key of an epoch.
    Device = 1,
    /// Sealed offline to the device's public key; the epoch field is its
    /// generation (0: unmarked).
    ToDevice = 2,
}

impl Kind {
    /// The kind's number in the blob header and on the wire
    /// ([`hakeys_proto::BLOB_KIND_DEVICE`], [`hakeys_proto::BLOB_KIND_OFFLINE`]).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// A lower-case name for people and JSON: `device` or `offline`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::ToDevice => "offline",
        }
    }
}

/// Why a blob was refused. Callers outside the engine see only
/// "blob rejected"; the distinction is kept for tests and for the host's
/// local pre-checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// Not a blob: wrong magic, truncated, a bad field.
    Malformed,
    /// A blob of a format version this engine does not read.
    UnsupportedVersion(u8),
    /// The authentication tag did not verify: tampered, or another key.
    Unauthentic,
    /// The input is over a size limit.
    TooLarge,
    /// The caller's namespace label is invalid.
    InvalidNamespace,
    /// An empty secret.
    Empty,
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlobError::Malformed => f.write_str("not a valid sealed blob"),
            BlobError::UnsupportedVersion(v) => write!(f, "unsupported blob format version {v}"),
            BlobError::Unauthentic => f.write_str("the blob does not authenticate"),
            BlobError::TooLarge => f.write_str("blob or secret over its size limit"),
            BlobError::InvalidNamespace => f.write_str("invalid namespace"),
            BlobError::Empty => f.write_str("empty secret"),
        }
    }
}

impl core::error::Error for BlobError {}

impl From<CryptoError> for BlobError {
    fn from(_: CryptoError) -> Self {
        BlobError::Unauthentic
    }
}

/// A parsed blob, borrowing from its bytes.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub epoch: u32,
    pub salt: &'a [u8],
    /// The sender's ephemeral public key (kind 2 only).
    pub ephemeral: Option<&'a [u8]>,
    /// The header bytes, which are the associated data.
    pub aad: &'a [u8],
    pub ciphertext: &'a [u8],
    pub tag: &'a [u8],
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BlobError> {
        let end = self.pos.checked_add(n).ok_or(BlobError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(BlobError::Malformed)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlobError> {
        self.take(N)?.try_into().map_err(|_| BlobError::Malformed)
    }
    fn u8(&mut self) -> Result<u8, BlobError> {
        let [b] = self.array()?;
        Ok(b)
    }
}

/// Parse a blob strictly. Does not authenticate it.
pub fn parse(blob: &[u8]) -> Result<Parsed<'_>, BlobError> {
    if blob.len() > MAX_BLOB_LEN {
        return Err(BlobError::TooLarge);
    }
    let mut r = Reader { buf: blob, pos: 0 };
    if r.take(4)? != BLOB_MAGIC {
        return Err(BlobError::Malformed);
    }
    let version = r.u8()?;
    if version != BLOB_VERSION {
        return Err(BlobError::UnsupportedVersion(version));
    }
    let kind = match r.u8()? {
        1 => Kind::Device,
        2 => Kind::ToDevice,
        _ => return Err(BlobError::Malformed),
    };
    let ns_len = usize::from(r.u8()?);
    if ns_len == 0 || ns_len > MAX_NAMESPACE_LEN {
        return Err(BlobError::Malformed);
    }
    let namespace = core::str::from_utf8(r.take(ns_len)?).map_err(|_| BlobError::Malformed)?;
    if !namespace::is_valid(namespace) {
        return Err(BlobError::Malformed);
    }
    let epoch = u32::from_be_bytes(r.array()?);
    let salt = r.take(SALT_LEN)?;
    let ephemeral = match kind {
        Kind::Device if epoch == 0 => return Err(BlobError::Malformed),
        Kind::Device => None,
        // Any generation; 0 is an unmarked blob.
        Kind::ToDevice => Some(r.take(PUBKEY_LEN)?),
    };
    let (aad, rest) = blob.split_at_checked(r.pos).ok_or(BlobError::Malformed)?;
    let ct_len = rest
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(BlobError::Malformed)?;
    if ct_len == 0 {
        return Err(BlobError::Malformed);
    }
    if ct_len > MAX_SECRET_LEN {
        return Err(BlobError::TooLarge);
    }
    let (ciphertext, tag) = rest.split_at_checked(ct_len).ok_or(BlobError::Malformed)?;
    Ok(Parsed {
        kind,
        namespace,
        epoch,
        salt,
        ephemeral,
        aad,
        ciphertext,
        tag,
    })
}

fn check_input(ns: &str, plaintext: &[u8]) -> Result<(), BlobError> {
    if !namespace::is_valid(ns) {
        return Err(BlobError::InvalidNamespace);
    }
    if plaintext.is_empty() {
        return Err(BlobError::Empty);
    }
    if plaintext.len() > MAX_SECRET_LEN {
        return Err(BlobError::TooLarge);
    }
    Ok(())
}

fn header(
    kind: Kind,
    ns: &str,
    epoch: u32,
    salt: &[u8; SALT_LEN],
    eph: Option<&[u8; 65]>,
) -> Result<BlobBytes, BlobError> {
    let mut out = BlobBytes::new();
    let ns_len = u8::try_from(ns.len()).map_err(|_| BlobError::InvalidNamespace)?;
    let parts: [&[u8]; 6] = [
        &BLOB_MAGIC,
        &[BLOB_VERSION, kind as u8, ns_len],
        ns.as_bytes(),
        &epoch.to_be_bytes(),
        salt,
        eph.map(|e| &e[..]).unwrap_or(&[]),
    ];
    for p in parts {
        out.extend_from_slice(p).map_err(|_| BlobError::TooLarge)?;
    }
    Ok(out)
}

/// Append `plaintext` encrypted under `kn` (with the header so far as AAD)
/// and the tag.
fn encrypt_into(
    mut out: BlobBytes,
    kn: &crypto::KeyNonce,
    plaintext: &[u8],
) -> Result<BlobBytes, BlobError> {
    let hdr_len = out.len();
    out.extend_from_slice(plaintext)
        .map_err(|_| BlobError::TooLarge)?;
    let (aad, body) = out.split_at_mut(hdr_len);
    let tag = crypto::aes_gcm_seal(kn, aad, body)?;
    out.extend_from_slice(&tag)
        .map_err(|_| BlobError::TooLarge)?;
    Ok(out)
}

fn device_key_nonce(
    root_key: &[u8; 32],
    salt: &[u8],
    epoch: u32,
    ns: &str,
) -> Result<crypto::KeyNonce, CryptoError> {
    let ns_len = [ns.len() as u8];
    crypto::derive_key_nonce(
        salt,
        root_key,
        &[INFO_DEVICE, &epoch.to_be_bytes(), &ns_len, ns.as_bytes()],
    )
}

fn to_device_key_nonce(
    shared: &[u8; 32],
    salt: &[u8],
    eph: &[u8],
    device: &[u8; 65],
    ns: &str,
) -> Result<crypto::KeyNonce, CryptoError> {
    let ns_len = [ns.len() as u8];
    crypto::derive_key_nonce(
        salt,
        shared,
        &[INFO_TO_DEVICE, eph, device, &ns_len, ns.as_bytes()],
    )
}

/// Seal `plaintext` for `ns` under the root key of `epoch`, with `salt`.
pub fn seal_device(
    root_key: &[u8; 32],
    epoch: u32,
    ns: &str,
    plaintext: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<BlobBytes, BlobError> {
    check_input(ns, plaintext)?;
    if epoch == 0 {
        return Err(BlobError::Malformed);
    }
    let kn = device_key_nonce(root_key, salt, epoch, ns)?;
    encrypt_into(header(Kind::Device, ns, epoch, salt, None)?, &kn, plaintext)
}

/// Seal `plaintext` for `ns` to the device public key `device`, offline,
/// unmarked (generation 0). Draws a fresh ephemeral key and salt from
/// `entropy`.
pub fn seal_to_device<E: Entropy + ?Sized>(
    device: &PublicKey,
    ns: &str,
    plaintext: &[u8],
    entropy: &mut E,
) -> Result<BlobBytes, EngineError> {
    seal_to_device_in(device, ns, plaintext, 0, entropy)
}

/// Seal `plaintext` for `ns` to the device public key `device`, offline, in
/// generation `epoch` (the board's epoch published with its key; 0:
/// unmarked). Draws a fresh ephemeral key and salt from `entropy`.
pub fn seal_to_device_in<E: Entropy + ?Sized>(
    device: &PublicKey,
    ns: &str,
    plaintext: &[u8],
    epoch: u32,
    entropy: &mut E,
) -> Result<BlobBytes, EngineError> {
    let eph = crypto::generate_secret_key(entropy)?;
    let mut salt = [0u8; SALT_LEN];
    entropy.fill(&mut salt).map_err(|_| EngineError::Entropy)?;
    seal_to_device_with_in(device, ns, plaintext, epoch, &eph, &salt).map_err(EngineError::Blob)
}

/// [`seal_to_device`] with a caller-chosen ephemeral key and salt (for
/// known-answer tests; never reuse an ephemeral key).
pub fn seal_to_device_with(
    device: &PublicKey,
    ns: &str,
    plaintext: &[u8],
    eph: &SecretKey,
    salt: &[u8; SALT_LEN],
) -> Result<BlobBytes, BlobError> {
    seal_to_device_with_in(device, ns, plaintext, 0, eph, salt)
}

/// [`seal_to_device_in`] with a caller-chosen ephemeral key and salt (for
/// known-answer tests; never reuse an ephemeral key).
pub fn seal_to_device_with_in(
    device: &PublicKey,
    ns: &str,
    plaintext: &[u8],
    epoch: u32,
    eph: &SecretKey,
    salt: &[u8; SALT_LEN],
) -> Result<BlobBytes, BlobError> {
    check_input(ns, plaintext)?;
    let eph_pub = crypto::sec1_uncompressed(&eph.public_key());
    let dev_pub = crypto::sec1_uncompressed(device);
    let shared = crypto::ecdh(eph, device);
    let kn = to_device_key_nonce(&shared, salt, &eph_pub, &dev_pub, ns)?;
    encrypt_into(
        header(Kind::ToDevice, ns, epoch, salt, Some(&eph_pub))?,
        &kn,
        plaintext,
    )
}

fn decrypt(p: &Parsed<'_>, kn: &crypto::KeyNonce, out: &mut Secret) -> Result<(), BlobError> {
    out.clear();
    out.extend_from_slice(p.ciphertext)
        .map_err(|_| BlobError::TooLarge)?;
    if let Err(e) = crypto::aes_gcm_open(kn, p.aad, out, p.tag) {
        out.as_mut_slice().zeroize();
        out.clear();
        return Err(e.into());
    }
    Ok(())
}

/// Open a kind-1 blob with the root key. Epoch policy is the caller's.
pub fn open_device(root_key: &[u8; 32], p: &Parsed<'_>, out: &mut Secret) -> Result<(), BlobError> {
    if p.kind != Kind::Device {
        return Err(BlobError::Malformed);
    }
    let kn = device_key_nonce(root_key, p.salt, p.epoch, p.namespace)?;
    decrypt(p, &kn, out)
}

/// Open a kind-2 blob with the device's secret key.
pub fn open_to_device(
    device_key: &SecretKey,
    p: &Parsed<'_>,
    out: &mut Secret,
) -> Result<(), BlobError> {
    let dev_pub = crypto::sec1_uncompressed(&device_key.public_key());
    open_to_device_as(device_key, &dev_pub, p, out)
}

/// [`open_to_device`] with the device's public key already at hand
/// (`device_public` must be `device_key`'s: the engine computes it once per
/// state).
pub fn open_to_device_as(
    device_key: &SecretKey,
    device_public: &[u8; 65],
    p: &Parsed<'_>,
    out: &mut Secret,
) -> Result<(), BlobError> {
    let eph = match (p.kind, p.ephemeral) {
        (Kind::ToDevice, Some(e)) => e,
        _ => return Err(BlobError::Malformed),
    };
    let eph_pk = crypto::parse_public_key(eph).map_err(|_| BlobError::Unauthentic)?;
    let shared = crypto::ecdh(device_key, &eph_pk);
    let kn = to_device_key_nonce(&shared, p.salt, eph, device_public, p.namespace)?;
    decrypt(p, &kn, out)
}
