//! Attestation evidence, version 1 (specified in `engine/SPEC.md`).
//!
//! ```text
//! magic "HKAT" | version 1 | challenge_len | challenge
//!   | engine_version u32 BE | epoch u32 BE | min_epoch u32 BE
//!   | signature[64]  (ECDSA P-256 / SHA-256, r || s, over all bytes before it)
//! ```
//!
//! The device key signs nothing else, and everything it signs starts with
//! this magic, so evidence cannot be confused with any other signed message.

use hakeys_proto::{MAX_CHALLENGE_LEN, MAX_EVIDENCE_LEN};
use heapless::Vec;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::{PublicKey, SecretKey};

/// First four bytes of attestation evidence.
pub const EVIDENCE_MAGIC: [u8; 4] = *b"HKAT";
/// Evidence format version.
pub const EVIDENCE_VERSION: u8 = 1;
/// Length of the raw `r || s` signature.
pub const SIGNATURE_LEN: usize = 64;

/// Evidence bytes.
pub type Evidence = Vec<u8, MAX_EVIDENCE_LEN>;

/// What verified evidence says about the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub engine_version: u32,
    pub epoch: u32,
    pub min_epoch: u32,
}

/// Why evidence did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestError {
    /// Not evidence, or of an unknown version.
    Malformed,
    /// The evidence answers another challenge (a replay).
    ChallengeMismatch,
    /// The signature is not the given key's over these bytes.
    BadSignature,
    /// The challenge is empty or longer than allowed.
    BadChallenge,
}

impl core::fmt::Display for AttestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttestError::Malformed => f.write_str("not attestation evidence of a known version"),
            AttestError::ChallengeMismatch => f.write_str("the evidence answers another challenge"),
            AttestError::BadSignature => f.write_str("the evidence signature does not verify"),
            AttestError::BadChallenge => {
                write!(f, "the challenge must be 1 to {MAX_CHALLENGE_LEN} bytes")
            }
        }
    }
}

impl core::error::Error for AttestError {}

/// Build signed evidence for `challenge`.
pub fn sign(
    device_key: &SecretKey,
    challenge: &[u8],
    claims: &Claims,
) -> Result<Evidence, AttestError> {
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_LEN {
        return Err(AttestError::BadChallenge);
    }
    let mut ev = Evidence::new();
    let parts: [&[u8]; 6] = [
        &EVIDENCE_MAGIC,
        &[EVIDENCE_VERSION, challenge.len() as u8],
        challenge,
        &claims.engine_version.to_be_bytes(),
        &claims.epoch.to_be_bytes(),
        &claims.min_epoch.to_be_bytes(),
    ];
    for p in parts {
        ev.extend_from_slice(p)
            .map_err(|_| AttestError::Malformed)?;
    }
    let sk = SigningKey::from(device_key);
    let sig: Signature = sk.sign(&ev);
    ev.extend_from_slice(&sig.to_bytes())
        .map_err(|_| AttestError::Malformed)?;
    Ok(ev)
}

/// Verify `evidence` against the device's public key and the challenge the
/// verifier chose; returns the signed claims.
pub fn verify(
    device: &PublicKey,
    challenge: &[u8],
    evidence: &[u8],
) -> Result<Claims, AttestError> {
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_LEN {
        return Err(AttestError::BadChallenge);
    }
    if evidence.len() > MAX_EVIDENCE_LEN || evidence.len() < 6 + SIGNATURE_LEN {
        return Err(AttestError::Malformed);
    }
    let (signed, sig) = evidence
        .split_last_chunk::<SIGNATURE_LEN>()
        .ok_or(AttestError::Malformed)?;
    let (head, rest) = signed
        .split_first_chunk::<6>()
        .ok_or(AttestError::Malformed)?;
    let [m0, m1, m2, m3, version, clen] = *head;
    if [m0, m1, m2, m3] != EVIDENCE_MAGIC || version != EVIDENCE_VERSION {
        return Err(AttestError::Malformed);
    }
    let (got_challenge, tail) = rest
        .split_at_checked(usize::from(clen))
        .ok_or(AttestError::Malformed)?;
    // Exactly the three claim words follow the challenge.
    let tail: &[u8; 12] = tail.try_into().map_err(|_| AttestError::Malformed)?;
    let [e0, e1, e2, e3, p0, p1, p2, p3, f0, f1, f2, f3] = *tail;
    let claims = Claims {
        engine_version: u32::from_be_bytes([e0, e1, e2, e3]),
        epoch: u32::from_be_bytes([p0, p1, p2, p3]),
        min_epoch: u32::from_be_bytes([f0, f1, f2, f3]),
    };
    let sig = Signature::from_slice(sig.as_slice()).map_err(|_| AttestError::BadSignature)?;
    VerifyingKey::from(device)
        .verify(signed, &sig)
        .map_err(|_| AttestError::BadSignature)?;
    // Checked after the signature so a forged blob learns nothing either way.
    if got_challenge != challenge {
        return Err(AttestError::ChallengeMismatch);
    }
    Ok(claims)
}
