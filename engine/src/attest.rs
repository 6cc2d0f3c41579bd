//! Attestation evidence (specified in `engine/SPEC.md` §3).
//!
//! Version 2, what the engine signs:
//!
//! ```text
//! magic "HKAT" | version 2 | challenge_len | challenge
//!   | engine_version u32 BE | epoch u32 BE | min_epoch u32 BE
//!   | flags u8 | ta_version u32 BE | backend u8 | sealing key[65]
//!   | signature[64]  (ECDSA P-256 / SHA-256, r || s, over all bytes before it)
//! ```
//!
//! signed by the attestation key, which is derived from the root key and
//! signs nothing else; everything it signs starts with this magic. The
//! signature is hedged: RFC 6979 with 32 fresh random bytes as its
//! additional data, so a fault during one signing does not reveal the key
//! through a repeated nonce, and a failed RNG still gives a sound
//! (deterministic) signature.
//!
//! Version 1 (the first release: no flags, TA version, backend or sealing
//! key; signed by the device key) is still verified, never made.

use hakeys_proto::{MAX_CHALLENGE_LEN, MAX_EVIDENCE_LEN, PUBKEY_LEN};
use heapless::Vec;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::{NistP256, PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto;

/// First four bytes of attestation evidence.
pub const EVIDENCE_MAGIC: [u8; 4] = *b"HKAT";
/// The evidence version this engine signs.
pub const EVIDENCE_VERSION: u8 = 2;
/// The first release's evidence version (verified, never signed).
pub const EVIDENCE_VERSION_1: u8 = 1;
/// Length of the raw `r || s` signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of the random additional data that hedges a signature.
pub const HEDGE_LEN: usize = 32;

/// Flag bit: the boot phase had ended (`boot/` namespaces locked).
pub const FLAG_BOOT_PHASE_ENDED: u8 = 0x01;
/// Flag bit: unmarked blobs sealed offline are refused.
pub const FLAG_UNMARKED_OFFLINE_RETIRED: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_BOOT_PHASE_ENDED | FLAG_UNMARKED_OFFLINE_RETIRED;

const INFO_ATTESTATION_KEY: &[u8] = b"hakeys/v1/attestation-key\0";

/// Evidence bytes.
pub type Evidence = Vec<u8, MAX_EVIDENCE_LEN>;

/// Which engine made the evidence, as the engine's shell says: a claim, not
/// a proof (the simulator's keys are in a file; see `docs/security-model.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    /// The shell did not say.
    Unspecified = 0,
    /// The OP-TEE trusted application.
    OpTee = 1,
    /// The in-process simulator.
    Simulator = 2,
}

impl Backend {
    /// The backend with this number, if there is one.
    pub fn from_u8(v: u8) -> Option<Backend> {
        match v {
            0 => Some(Backend::Unspecified),
            1 => Some(Backend::OpTee),
            2 => Some(Backend::Simulator),
            _ => None,
        }
    }

    /// Lower-case name: `unspecified`, `optee`, `simulator`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Unspecified => "unspecified",
            Backend::OpTee => "optee",
            Backend::Simulator => "simulator",
        }
    }
}

/// What evidence of either version says about the device's key epochs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub engine_version: u32,
    pub epoch: u32,
    pub min_epoch: u32,
}

/// What version-2 evidence says beyond [`Claims`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimsV2 {
    pub claims: Claims,
    /// The boot phase had ended when the evidence was made.
    pub boot_phase_ended: bool,
    /// Unmarked blobs sealed offline were refused.
    pub unmarked_offline_retired: bool,
    /// The trusted application's version as its shell reports it (the one
    /// OP-TEE's anti-rollback compares); 0 if it reports none.
    pub ta_version: u32,
    /// The backend the shell says it is.
    pub backend: Backend,
    /// The device public key offline blobs are sealed to (uncompressed SEC1).
    pub sealing_key: [u8; PUBKEY_LEN],
}

/// Verified evidence, by version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Version 1, signed by the device key.
    V1(Claims),
    /// Version 2, signed by the attestation key.
    V2(ClaimsV2),
}

impl Verified {
    /// The claims both versions make.
    pub fn claims(&self) -> &Claims {
        match self {
            Verified::V1(c) => c,
            Verified::V2(c) => &c.claims,
        }
    }
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

/// The attestation key of the identity with `root_key`:
/// `HKDF(salt = none, ikm = root_key, info = "hakeys/v1/attestation-key" ||
/// 0x00 || counter, L = 32)` for counter 0, 1, ...: the first output in
/// `[1, n-1]` (`engine/SPEC.md` §3.1). Derived, not stored: the slot record
/// has no room, and the root key already stands for the identity (escrow,
/// new identity).
pub fn attestation_key(root_key: &[u8; 32]) -> Result<SecretKey, crypto::CryptoError> {
    for counter in 0u8..8 {
        let mut okm = Zeroizing::new([0u8; 32]);
        crypto::hkdf_sha256(
            &[],
            root_key,
            &[INFO_ATTESTATION_KEY, &[counter]],
            okm.as_mut(),
        )?;
        if let Ok(sk) = SecretKey::from_slice(okm.as_ref()) {
            return Ok(sk);
        }
    }
    // Eight outputs outside [1, n-1]: probability about 2^-256.
    Err(crypto::CryptoError)
}

fn check_challenge(challenge: &[u8]) -> Result<u8, AttestError> {
    match u8::try_from(challenge.len()) {
        Ok(n) if n > 0 && challenge.len() <= MAX_CHALLENGE_LEN => Ok(n),
        _ => Err(AttestError::BadChallenge),
    }
}

/// Sign `signed` (appended to `ev`) with `key`, hedged with `hedge`
/// (RFC 6979 §3.6 additional data; all zero or empty gives the plain
/// deterministic signature).
fn append_signature(ev: &mut Evidence, key: &SecretKey, hedge: &[u8]) -> Result<(), AttestError> {
    let digest = Sha256::digest(ev.as_slice());
    let d = Zeroizing::new(key.to_nonzero_scalar());
    let (sig, _) = ecdsa::hazmat::sign_prehashed_rfc6979::<NistP256, Sha256>(&d, &digest, hedge);
    ev.extend_from_slice(&sig.to_bytes())
        .map_err(|_| AttestError::Malformed)
}

/// Build version-2 evidence for `challenge`, signed by the attestation key
/// `key` and hedged with `hedge` (fresh random bytes for every signature).
pub fn sign(
    key: &SecretKey,
    challenge: &[u8],
    claims: &ClaimsV2,
    hedge: &[u8; HEDGE_LEN],
) -> Result<Evidence, AttestError> {
    let clen = check_challenge(challenge)?;
    let mut flags = 0;
    if claims.boot_phase_ended {
        flags |= FLAG_BOOT_PHASE_ENDED;
    }
    if claims.unmarked_offline_retired {
        flags |= FLAG_UNMARKED_OFFLINE_RETIRED;
    }
    let c = &claims.claims;
    let mut ev = Evidence::new();
    let parts: [&[u8]; 10] = [
        &EVIDENCE_MAGIC,
        &[EVIDENCE_VERSION, clen],
        challenge,
        &c.engine_version.to_be_bytes(),
        &c.epoch.to_be_bytes(),
        &c.min_epoch.to_be_bytes(),
        &[flags],
        &claims.ta_version.to_be_bytes(),
        &[claims.backend as u8],
        &claims.sealing_key,
    ];
    for p in parts {
        ev.extend_from_slice(p)
            .map_err(|_| AttestError::Malformed)?;
    }
    append_signature(&mut ev, key, hedge)?;
    Ok(ev)
}

/// Build version-1 evidence, as the first release did (deterministic, by
/// the device key): only to pin its golden fixture and test the verifier.
#[cfg(test)]
pub(crate) fn sign_v1(
    device_key: &SecretKey,
    challenge: &[u8],
    claims: &Claims,
) -> Result<Evidence, AttestError> {
    let clen = check_challenge(challenge)?;
    let mut ev = Evidence::new();
    let parts: [&[u8]; 6] = [
        &EVIDENCE_MAGIC,
        &[EVIDENCE_VERSION_1, clen],
        challenge,
        &claims.engine_version.to_be_bytes(),
        &claims.epoch.to_be_bytes(),
        &claims.min_epoch.to_be_bytes(),
    ];
    for p in parts {
        ev.extend_from_slice(p)
            .map_err(|_| AttestError::Malformed)?;
    }
    append_signature(&mut ev, device_key, &[])?;
    Ok(ev)
}

/// Take `N` bytes from the front of `b`.
fn take<'a, const N: usize>(b: &mut &'a [u8]) -> Result<&'a [u8; N], AttestError> {
    let (head, rest) = b.split_first_chunk::<N>().ok_or(AttestError::Malformed)?;
    *b = rest;
    Ok(head)
}

fn u32_at(b: &mut &[u8]) -> Result<u32, AttestError> {
    Ok(u32::from_be_bytes(*take::<4>(b)?))
}

/// Verify `evidence` against the public key the verifier trusts (the
/// attestation key for version 2, the device key for version 1) and the
/// challenge it chose; returns the signed claims.
pub fn verify(key: &PublicKey, challenge: &[u8], evidence: &[u8]) -> Result<Verified, AttestError> {
    check_challenge(challenge)?;
    if evidence.len() > MAX_EVIDENCE_LEN || evidence.len() < 6 + SIGNATURE_LEN {
        return Err(AttestError::Malformed);
    }
    let (signed, sig) = evidence
        .split_last_chunk::<SIGNATURE_LEN>()
        .ok_or(AttestError::Malformed)?;
    let mut rest = signed;
    let [m0, m1, m2, m3, version, clen] = *take::<6>(&mut rest)?;
    if [m0, m1, m2, m3] != EVIDENCE_MAGIC {
        return Err(AttestError::Malformed);
    }
    let (got_challenge, mut tail) = rest
        .split_at_checked(usize::from(clen))
        .ok_or(AttestError::Malformed)?;
    let claims = Claims {
        engine_version: u32_at(&mut tail)?,
        epoch: u32_at(&mut tail)?,
        min_epoch: u32_at(&mut tail)?,
    };
    let verified = match version {
        EVIDENCE_VERSION_1 => Verified::V1(claims),
        EVIDENCE_VERSION => {
            let [flags] = *take::<1>(&mut tail)?;
            let ta_version = u32_at(&mut tail)?;
            let [backend] = *take::<1>(&mut tail)?;
            let sealing_key = *take::<PUBKEY_LEN>(&mut tail)?;
            if flags & !KNOWN_FLAGS != 0 {
                return Err(AttestError::Malformed);
            }
            Verified::V2(ClaimsV2 {
                claims,
                boot_phase_ended: flags & FLAG_BOOT_PHASE_ENDED != 0,
                unmarked_offline_retired: flags & FLAG_UNMARKED_OFFLINE_RETIRED != 0,
                ta_version,
                backend: Backend::from_u8(backend).ok_or(AttestError::Malformed)?,
                sealing_key,
            })
        }
        _ => return Err(AttestError::Malformed),
    };
    // Exactly the claims of the version follow the challenge.
    if !tail.is_empty() {
        return Err(AttestError::Malformed);
    }
    let sig = Signature::from_slice(sig.as_slice()).map_err(|_| AttestError::BadSignature)?;
    VerifyingKey::from(key)
        .verify(signed, &sig)
        .map_err(|_| AttestError::BadSignature)?;
    // Checked after the signature so a forged blob learns nothing either way.
    if got_challenge != challenge {
        return Err(AttestError::ChallengeMismatch);
    }
    Ok(verified)
}
