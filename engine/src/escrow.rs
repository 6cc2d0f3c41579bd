//! The recovery escrow, version 1 (specified in `engine/SPEC.md`, "Recovery
//! escrow").
//!
//! ```text
//! header  = "HKES" | version 1 | device public key[65] | recovery public key[65]
//!           | ephemeral public key[65] | salt[16]
//! escrow  = header | AES-256-GCM(payload, aad = header) | tag[16]
//! payload = root key[32] | device key[32] | epoch u32 BE | min_epoch u32 BE
//! ```
//!
//! The engine exports its root key and device key sealed to a recovery
//! public key (ephemeral-static ECDH on P-256, HKDF-SHA256, AES-256-GCM), so
//! that whoever holds the recovery private key can open every blob the
//! device could, off the device. Every epoch derives from the root key, so
//! one escrow opens blobs of epochs sealed after it too. The opening side
//! ([`open`], [`Escrowed::open_blob`]) is used by `teectl recover` on any
//! machine; it is `no_std` like the rest of the engine.

use hakeys_proto::{Namespace, Secret, MAX_ESCROW_LEN, PUBKEY_LEN, RECOVERY_FINGERPRINT_LEN};
use heapless::Vec;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::blob::{self, Kind, SALT_LEN};
use crate::crypto::{self, TAG_LEN};
use crate::state::State;
use crate::{EngineError, Entropy};

/// First four bytes of every escrow.
pub const ESCROW_MAGIC: [u8; 4] = *b"HKES";
/// The escrow format version this engine writes and reads.
pub const ESCROW_VERSION: u8 = 1;
/// Length of the header (the AES-GCM associated data).
pub const HEADER_LEN: usize = 4 + 1 + 3 * PUBKEY_LEN + SALT_LEN;
/// Length of the sealed payload.
pub const PAYLOAD_LEN: usize = 32 + 32 + 4 + 4;
/// Length of every version-1 escrow.
pub const ESCROW_LEN: usize = HEADER_LEN + PAYLOAD_LEN + TAG_LEN;

const INFO_ESCROW: &[u8] = b"hakeys/v1/escrow\0";

const _: () = assert!(ESCROW_LEN <= MAX_ESCROW_LEN);

/// An encoded escrow.
pub type EscrowBytes = Vec<u8, MAX_ESCROW_LEN>;

/// A recovery key's fingerprint: the first 16 bytes of SHA-256 over its
/// uncompressed SEC1 public key. The engine records it when it enrols a
/// recovery key; `teectl` shows it.
pub type Fingerprint = [u8; RECOVERY_FINGERPRINT_LEN];

/// The fingerprint of a recovery public key.
pub fn fingerprint(pk: &PublicKey) -> Fingerprint {
    let digest = Sha256::digest(crypto::sec1_uncompressed(pk));
    let mut fp = [0u8; RECOVERY_FINGERPRINT_LEN];
    if let Some(head) = digest.get(..RECOVERY_FINGERPRINT_LEN) {
        fp.copy_from_slice(head);
    }
    fp
}

/// Why an escrow does not open. Says nothing about the keys inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowError {
    /// Not an escrow: wrong magic or length, a public key that is not a
    /// point of the curve.
    Malformed,
    /// An escrow of a format version this engine does not read.
    UnsupportedVersion(u8),
    /// The escrow was made for another recovery key than the one given.
    WrongRecoveryKey,
    /// The tag does not verify or the contents are inconsistent: tampered
    /// or damaged.
    Unauthentic,
}

impl core::fmt::Display for EscrowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EscrowError::Malformed => f.write_str("not a valid recovery escrow"),
            EscrowError::UnsupportedVersion(v) => {
                write!(f, "unsupported recovery escrow format version {v}")
            }
            EscrowError::WrongRecoveryKey => {
                f.write_str("the escrow was made for another recovery key")
            }
            EscrowError::Unauthentic => {
                f.write_str("the escrow does not authenticate: it is tampered or damaged")
            }
        }
    }
}

impl core::error::Error for EscrowError {}

/// The public part of an escrow, readable without the recovery key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The device public key of the board the escrow comes from.
    pub device: [u8; PUBKEY_LEN],
    /// The recovery public key it is sealed to.
    pub recovery: [u8; PUBKEY_LEN],
    ephemeral: [u8; PUBKEY_LEN],
    salt: [u8; SALT_LEN],
}

fn point(bytes: &[u8]) -> Result<(PublicKey, [u8; PUBKEY_LEN]), EscrowError> {
    let raw: [u8; PUBKEY_LEN] = bytes.try_into().map_err(|_| EscrowError::Malformed)?;
    let pk = crypto::parse_public_key(&raw).map_err(|_| EscrowError::Malformed)?;
    // Only the uncompressed form: the bytes are bound into the key derivation.
    if crypto::sec1_uncompressed(&pk) != raw {
        return Err(EscrowError::Malformed);
    }
    Ok((pk, raw))
}

/// Parse an escrow's header strictly (length, magic, version, three valid
/// uncompressed points). Does not authenticate anything.
pub fn header(escrow: &[u8]) -> Result<Header, EscrowError> {
    let (magic, rest) = escrow
        .split_first_chunk::<4>()
        .ok_or(EscrowError::Malformed)?;
    if *magic != ESCROW_MAGIC {
        return Err(EscrowError::Malformed);
    }
    let (version, rest) = rest.split_first().ok_or(EscrowError::Malformed)?;
    if *version != ESCROW_VERSION {
        return Err(EscrowError::UnsupportedVersion(*version));
    }
    if escrow.len() != ESCROW_LEN {
        return Err(EscrowError::Malformed);
    }
    let (device, rest) = rest
        .split_first_chunk::<PUBKEY_LEN>()
        .ok_or(EscrowError::Malformed)?;
    let (recovery, rest) = rest
        .split_first_chunk::<PUBKEY_LEN>()
        .ok_or(EscrowError::Malformed)?;
    let (ephemeral, rest) = rest
        .split_first_chunk::<PUBKEY_LEN>()
        .ok_or(EscrowError::Malformed)?;
    let (salt, _) = rest
        .split_first_chunk::<SALT_LEN>()
        .ok_or(EscrowError::Malformed)?;
    Ok(Header {
        device: point(device)?.1,
        recovery: point(recovery)?.1,
        ephemeral: point(ephemeral)?.1,
        salt: *salt,
    })
}

fn key_nonce(
    shared: &[u8; 32],
    salt: &[u8],
    ephemeral: &[u8],
    recovery: &[u8],
    device: &[u8],
) -> Result<Zeroizing<[u8; 44]>, crypto::CryptoError> {
    crypto::derive_key_nonce(salt, shared, &[INFO_ESCROW, ephemeral, recovery, device])
}

/// Seal `st`'s root key, device key and epochs to `recovery`, with the
/// ephemeral key `eph` and `salt` (fresh for every escrow); `d` is the
/// state's device public key.
pub(crate) fn seal_with(
    recovery: &PublicKey,
    st: &State,
    d: &[u8; PUBKEY_LEN],
    eph: &SecretKey,
    salt: &[u8; SALT_LEN],
) -> Result<EscrowBytes, EngineError> {
    let r = crypto::sec1_uncompressed(recovery);
    let e = crypto::sec1_uncompressed(&eph.public_key());
    let shared = crypto::ecdh(eph, recovery);
    let kn = key_nonce(&shared, salt, &e, &r, d).map_err(|_| EngineError::Internal)?;
    let mut payload = Zeroizing::new([0u8; PAYLOAD_LEN]);
    let fields: [&[u8]; 4] = [
        &st.root_key,
        &st.device_key,
        &st.epoch.to_be_bytes(),
        &st.min_epoch.to_be_bytes(),
    ];
    let mut at = 0;
    for f in fields {
        let end = at + f.len();
        payload
            .get_mut(at..end)
            .ok_or(EngineError::Internal)?
            .copy_from_slice(f);
        at = end;
    }
    let mut out = EscrowBytes::new();
    let header: [&[u8]; 6] = [&ESCROW_MAGIC, &[ESCROW_VERSION], d, &r, &e, salt];
    for p in header {
        out.extend_from_slice(p)
            .map_err(|_| EngineError::Internal)?;
    }
    // The payload is encrypted in place in its own (wiped) buffer; only
    // ciphertext ever enters `out`.
    let tag =
        crypto::aes_gcm_seal(&kn, &out, payload.as_mut()).map_err(|_| EngineError::Internal)?;
    out.extend_from_slice(payload.as_ref())
        .and_then(|_| out.extend_from_slice(&tag))
        .map_err(|_| EngineError::Internal)?;
    Ok(out)
}

/// Seal `st` to `recovery`, drawing the ephemeral key and salt from
/// `entropy`.
pub(crate) fn seal<E: Entropy + ?Sized>(
    recovery: &PublicKey,
    st: &State,
    device_public: &[u8; PUBKEY_LEN],
    entropy: &mut E,
) -> Result<EscrowBytes, EngineError> {
    let eph = crypto::generate_secret_key(entropy)?;
    let mut salt = [0u8; SALT_LEN];
    entropy.fill(&mut salt).map_err(|_| EngineError::Entropy)?;
    seal_with(recovery, st, device_public, &eph, &salt)
}

/// What an escrow holds, once opened with the recovery private key. Key
/// material is wiped when it is dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Escrowed {
    root_key: [u8; 32],
    device_key: [u8; 32],
    epoch: u32,
    min_epoch: u32,
}

impl Escrowed {
    /// The device's current epoch when the escrow was made.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The oldest epoch the device accepted when the escrow was made.
    pub fn min_epoch(&self) -> u32 {
        self.min_epoch
    }

    /// The device public key (uncompressed SEC1).
    pub fn device_public_key(&self) -> Result<[u8; PUBKEY_LEN], EscrowError> {
        let sk = SecretKey::from_slice(&self.device_key).map_err(|_| EscrowError::Unauthentic)?;
        Ok(crypto::sec1_uncompressed(&sk.public_key()))
    }

    /// Open a blob of the escrowed device into `out`, as the device would
    /// have at the time of the escrow, except that there is no boot phase
    /// off the board and epochs above the escrow's own are accepted (they
    /// derive from the same root key). Returns the blob's namespace.
    ///
    /// In this order: parse (`Blob`); a device blob, or an offline blob of
    /// a generation (epoch field not 0), with an epoch below the escrow's
    /// `min_epoch` → `EpochRetired`; derive and decrypt (`Blob`: tampered,
    /// or sealed by another device). Unmarked offline blobs open: the
    /// escrow does not record whether the board had retired them.
    pub fn open_blob(&self, blob_bytes: &[u8], out: &mut Secret) -> Result<Namespace, EngineError> {
        let parsed = blob::parse(blob_bytes)?;
        let marked = parsed.kind == Kind::Device || parsed.epoch != 0;
        if marked && parsed.epoch < self.min_epoch {
            return Err(EngineError::EpochRetired);
        }
        match parsed.kind {
            Kind::Device => {
                blob::open_device(&self.root_key, &parsed, out)?;
            }
            Kind::ToDevice => {
                let sk = SecretKey::from_slice(&self.device_key)
                    .map_err(|_| EngineError::Blob(blob::BlobError::Unauthentic))?;
                blob::open_to_device(&sk, &parsed, out)?;
            }
        }
        let mut ns = Namespace::new();
        ns.push_str(parsed.namespace)
            .map_err(|_| EngineError::Internal)?;
        Ok(ns)
    }
}

/// Open an escrow with the recovery private key: check the header, that it
/// was made for this recovery key, the tag, and that the payload is
/// consistent with the header (its device key is the header's device
/// public key; `1 <= min_epoch <= epoch`).
pub fn open(recovery: &SecretKey, escrow: &[u8]) -> Result<Escrowed, EscrowError> {
    let h = header(escrow)?;
    let r = crypto::sec1_uncompressed(&recovery.public_key());
    if h.recovery != r {
        return Err(EscrowError::WrongRecoveryKey);
    }
    let (eph, _) = point(&h.ephemeral)?;
    let shared = crypto::ecdh(recovery, &eph);
    let kn = key_nonce(&shared, &h.salt, &h.ephemeral, &h.recovery, &h.device)
        .map_err(|_| EscrowError::Unauthentic)?;
    let (aad, rest) = escrow
        .split_at_checked(HEADER_LEN)
        .ok_or(EscrowError::Malformed)?;
    let (ct, tag) = rest
        .split_at_checked(PAYLOAD_LEN)
        .ok_or(EscrowError::Malformed)?;
    let mut payload = Zeroizing::new([0u8; PAYLOAD_LEN]);
    payload.copy_from_slice(ct);
    crypto::aes_gcm_open(&kn, aad, payload.as_mut(), tag).map_err(|_| EscrowError::Unauthentic)?;
    let (root, rest) = payload
        .split_first_chunk::<32>()
        .ok_or(EscrowError::Malformed)?;
    let (device, rest) = rest
        .split_first_chunk::<32>()
        .ok_or(EscrowError::Malformed)?;
    let (epoch, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(EscrowError::Malformed)?;
    let (min_epoch, _) = rest
        .split_first_chunk::<4>()
        .ok_or(EscrowError::Malformed)?;
    let out = Escrowed {
        root_key: *root,
        device_key: *device,
        epoch: u32::from_be_bytes(*epoch),
        min_epoch: u32::from_be_bytes(*min_epoch),
    };
    if out.min_epoch == 0 || out.min_epoch > out.epoch || out.device_public_key()? != h.device {
        return Err(EscrowError::Unauthentic);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
