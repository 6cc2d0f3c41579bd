//! Thin wrappers over the RustCrypto primitives, so the rest of the engine
//! deals in fixed-size arrays and opaque errors only.

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::Aes256Gcm;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Entropy;

/// AES-256 key followed by a 96-bit GCM nonce, both taken from one HKDF
/// output so that every blob has its own key and nonce.
pub(crate) type KeyNonce = Zeroizing<[u8; 44]>;

/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// A crypto operation failed; deliberately carries no detail.
#[derive(Debug, PartialEq, Eq)]
pub struct CryptoError;

impl core::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("cryptographic operation failed")
    }
}

impl core::error::Error for CryptoError {}

/// Length of a SHA-256 output (HashLen in RFC 5869).
const HASH_LEN: usize = 32;
/// SHA-256's block length (B in RFC 2104).
const BLOCK_LEN: usize = 64;

/// HMAC-SHA256 (RFC 2104) of the bytes `data` feeds in, under `key`, into
/// `out`.
///
/// Written here, on `sha2`, rather than taken from `hmac`/`hkdf`, so that
/// every buffer that holds the key or a value derived from it is ours to
/// wipe: the padded key and the inner hash are `Zeroizing`, and the SHA-256
/// states are wiped on drop (`sha2`'s `zeroize` feature). `hmac` 0.13 leaves
/// the padded key in a local array, and `hkdf` 0.13 drops the
/// pseudorandom key and every expansion block without wiping them.
pub(crate) fn hmac_sha256(key: &[u8], data: impl FnOnce(&mut Sha256), out: &mut [u8; HASH_LEN]) {
    let mut k = Zeroizing::new([0u8; BLOCK_LEN]);
    if key.len() > BLOCK_LEN {
        let mut d = Sha256::new();
        d.update(key);
        let mut kh = Zeroizing::new([0u8; HASH_LEN]);
        d.finalize_into((&mut *kh).into());
        if let Some(dst) = k.get_mut(..HASH_LEN) {
            dst.copy_from_slice(kh.as_ref());
        }
    } else if let Some(dst) = k.get_mut(..key.len()) {
        dst.copy_from_slice(key);
    }
    let mut pad = Zeroizing::new([0u8; BLOCK_LEN]);
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x36;
    }
    let mut inner = Sha256::new();
    inner.update(pad.as_ref());
    data(&mut inner);
    let mut inner_hash = Zeroizing::new([0u8; HASH_LEN]);
    inner.finalize_into((&mut *inner_hash).into());
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x5c;
    }
    let mut outer = Sha256::new();
    outer.update(pad.as_ref());
    outer.update(inner_hash.as_ref());
    outer.finalize_into(out.into());
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` (empty: HashLen zero bytes,
/// which HMAC pads to the same key) from `ikm`, then expand over the
/// concatenation of the `info` parts into `okm` (at most 255 × 32 bytes).
/// The pseudorandom key and every expansion block are wiped.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    okm: &mut [u8],
) -> Result<(), CryptoError> {
    if okm.len() > 255 * HASH_LEN {
        return Err(CryptoError);
    }
    let mut prk = Zeroizing::new([0u8; HASH_LEN]);
    hmac_sha256(salt, |h| h.update(ikm), &mut prk);
    let mut t = Zeroizing::new([0u8; HASH_LEN]);
    for (i, chunk) in okm.chunks_mut(HASH_LEN).enumerate() {
        let counter = u8::try_from(i + 1).map_err(|_| CryptoError)?;
        let previous = Zeroizing::new(*t);
        hmac_sha256(
            prk.as_ref(),
            |h| {
                if i > 0 {
                    h.update(previous.as_ref());
                }
                for part in info {
                    h.update(part);
                }
                h.update([counter]);
            },
            &mut t,
        );
        chunk.copy_from_slice(t.get(..chunk.len()).ok_or(CryptoError)?);
    }
    Ok(())
}

pub(crate) fn derive_key_nonce(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
) -> Result<KeyNonce, CryptoError> {
    let mut okm = Zeroizing::new([0u8; 44]);
    hkdf_sha256(salt, ikm, info, okm.as_mut())?;
    Ok(okm)
}

fn cipher(kn: &KeyNonce) -> Result<(Aes256Gcm, Nonce<Aes256Gcm>), CryptoError> {
    let (key, nonce) = kn.split_first_chunk::<32>().ok_or(CryptoError)?;
    let c = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError)?;
    let n = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| CryptoError)?;
    Ok((c, n))
}

/// Encrypt `buf` in place; returns the tag.
pub fn aes_gcm_seal(
    kn: &KeyNonce,
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let (c, n) = cipher(kn)?;
    let tag = c
        .encrypt_inout_detached(&n, aad, buf.into())
        .map_err(|_| CryptoError)?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_slice());
    Ok(out)
}

/// Verify `tag` (in constant time, inside aes-gcm) and decrypt `buf` in
/// place. On failure `buf` must be discarded by the caller.
pub fn aes_gcm_open(
    kn: &KeyNonce,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    let (c, n) = cipher(kn)?;
    let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| CryptoError)?;
    c.decrypt_inout_detached(&n, aad, buf.into(), &tag)
        .map_err(|_| CryptoError)
}

/// Uncompressed SEC1 encoding (65 bytes) of a public key.
pub fn sec1_uncompressed(pk: &PublicKey) -> [u8; 65] {
    let point = pk.to_sec1_point(false);
    let mut out = [0u8; 65];
    // An uncompressed P-256 point is always 65 bytes.
    if let Some(src) = point.as_bytes().get(..65) {
        out.copy_from_slice(src);
    }
    out
}

/// Parse an uncompressed or compressed SEC1 public key (not the identity).
pub fn parse_public_key(sec1: &[u8]) -> Result<PublicKey, CryptoError> {
    PublicKey::from_sec1_bytes(sec1).map_err(|_| CryptoError)
}

/// X coordinate of `secret * public` (the ECDH shared secret).
pub fn ecdh(secret: &SecretKey, public: &PublicKey) -> Zeroizing<[u8; 32]> {
    let shared =
        p256::elliptic_curve::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes().as_slice());
    out
}

/// A fresh P-256 secret key from the entropy source. A 32-byte draw is
/// outside `[1, n-1]` with probability about 2^-32, so a few draws suffice.
pub fn generate_secret_key<E: Entropy + ?Sized>(
    entropy: &mut E,
) -> Result<SecretKey, crate::EngineError> {
    for _ in 0..8 {
        let mut bytes = Zeroizing::new([0u8; 32]);
        entropy
            .fill(bytes.as_mut())
            .map_err(|_| crate::EngineError::Entropy)?;
        if let Ok(sk) = SecretKey::from_slice(bytes.as_ref()) {
            return Ok(sk);
        }
    }
    Err(crate::EngineError::Entropy)
}
