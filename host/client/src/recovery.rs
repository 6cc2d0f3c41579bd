//! Recovery keys: a P-256 key pair the owner keeps off the board, to which
//! the engine seals its escrow (`engine/SPEC.md`, "Recovery escrow").
//!
//! Forms (`host/SPEC.md` §1.1):
//! - public: PEM SubjectPublicKeyInfo (`recovery.pem`), as the device key;
//! - private: PEM PKCS#8 (`recovery-key.pem`); SEC1 `EC PRIVATE KEY` PEM is
//!   read too, so keys made by `openssl ecparam -genkey` work;
//! - the recovery code: the private scalar in 56 Crockford base32 symbols
//!   with a 24-bit checksum, in 8 groups of 7 (`xxxxxxx-xxxxxxx-...`), to
//!   write down and type back.

use hakeys_engine::escrow::Fingerprint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::OsEntropy;

/// The recovery code's symbols: Crockford's base32, lower case (no `i`,
/// `l`, `o`, `u`).
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Symbols in a recovery code: 256 bits of scalar and 24 of checksum.
pub const CODE_SYMBOLS: usize = 56;
/// Symbols per group, as the code is written.
pub const CODE_GROUP: usize = 7;
const CODE_TAG: &[u8] = b"hakeys/v1/recovery-code\0";
const CODE_BYTES: usize = 35;

/// Why a private recovery key was not accepted. Never carries key material
/// or any character of a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// PEM, but not an unencrypted P-256 private key.
    NotP256Pem,
    /// An encrypted PKCS#8 key (not supported: decrypt it with openssl).
    Encrypted,
    /// A public key was given where the private key is needed.
    PublicKey,
    /// A character that is not in a recovery code, at this (1-based)
    /// position of the text.
    CodeCharacter(usize),
    /// The code has this many symbols instead of 56.
    CodeLength(usize),
    /// The checksum does not match; if exactly one single-symbol change
    /// makes it match, the (1-based) group where it is.
    CodeChecksum(Option<usize>),
    /// The encoded number is not a valid P-256 private key.
    CodeOutOfRange,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::NotP256Pem => f.write_str("not an unencrypted P-256 private key in PEM (PKCS#8 or SEC1)"),
            KeyError::Encrypted => f.write_str(
                "an encrypted private key is not supported; decrypt it first (openssl pkey -in KEY -out PLAIN.pem)",
            ),
            KeyError::PublicKey => f.write_str(
                "this is a public key; give the private recovery key (recovery-key.pem) or the recovery code",
            ),
            KeyError::CodeCharacter(at) => write!(
                f,
                "not a recovery code: character {at} is not one of 0-9 a-z (without u) or a dash"
            ),
            KeyError::CodeLength(n) => write!(
                f,
                "a recovery code has {CODE_SYMBOLS} characters besides dashes and spaces, this one has {n}"
            ),
            KeyError::CodeChecksum(Some(g)) => write!(
                f,
                "the recovery code is mistyped (its checksum does not match); most likely in group {g}"
            ),
            KeyError::CodeChecksum(None) => {
                f.write_str("the recovery code is mistyped (its checksum does not match)")
            }
            KeyError::CodeOutOfRange => f.write_str("the recovery code does not encode a valid key"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A new recovery key from the operating system's RNG.
pub fn generate() -> Result<SecretKey, hakeys_engine::EngineError> {
    hakeys_engine::crypto::generate_secret_key(&mut OsEntropy)
}

/// The private key as PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
pub fn private_pem(sk: &SecretKey) -> Result<Zeroizing<String>, KeyError> {
    sk.to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| KeyError::NotP256Pem)
}

/// The fingerprint of a recovery public key, as the engine records it.
pub fn fingerprint(pk: &PublicKey) -> Fingerprint {
    hakeys_engine::escrow::fingerprint(pk)
}

/// A fingerprint as text: 32 lower-case hex digits.
pub fn fingerprint_text(fp: &[u8]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

fn checksum(scalar: &[u8]) -> [u8; 3] {
    let d = Sha256::new()
        .chain_update(CODE_TAG)
        .chain_update(scalar)
        .finalize();
    [d[0], d[1], d[2]]
}

/// The 56 symbol values of `data` (35 bytes, 5 bits per symbol, most
/// significant first).
fn symbols(data: &[u8; CODE_BYTES]) -> Zeroizing<[u8; CODE_SYMBOLS]> {
    regroup(data, 8, 5)
}

/// The 35 bytes that the 56 symbols `sym` spell.
fn bytes(sym: &[u8; CODE_SYMBOLS]) -> Zeroizing<[u8; CODE_BYTES]> {
    regroup(sym, 5, 8)
}

/// The bits of `input`'s `from`-bit values, most significant first, as
/// `to`-bit values (`from` and `to` at most 8; the lengths fit exactly).
fn regroup<const N: usize>(input: &[u8], from: u32, to: u32) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    let (mut acc, mut bits, mut n) = (0u16, 0u32, 0);
    for v in input {
        acc = (acc << from) | u16::from(*v);
        bits += from;
        while bits >= to {
            bits -= to;
            out[n] = ((acc >> bits) & ((1 << to) - 1)) as u8;
            n += 1;
        }
        acc &= (1 << bits) - 1;
    }
    out
}

/// The recovery code of a private key: `xxxxxxx-xxxxxxx-...`, 8 groups of
/// 7 symbols.
pub fn code(sk: &SecretKey) -> Zeroizing<String> {
    let scalar = Zeroizing::new(sk.to_bytes());
    let mut data = Zeroizing::new([0u8; CODE_BYTES]);
    data[..32].copy_from_slice(scalar.as_slice());
    data[32..].copy_from_slice(&checksum(scalar.as_slice()));
    let sym = symbols(&data);
    let mut out = Zeroizing::new(String::with_capacity(CODE_SYMBOLS + 7));
    for (i, s) in sym.iter().enumerate() {
        if i > 0 && i % CODE_GROUP == 0 {
            out.push('-');
        }
        out.push(char::from(CODE_ALPHABET[usize::from(*s)]));
    }
    out
}

fn checksum_ok(sym: &[u8; CODE_SYMBOLS]) -> bool {
    let data = bytes(sym);
    checksum(&data[..32]) == data[32..]
}

/// Read a recovery code: case-insensitive, dashes and whitespace ignored,
/// `o` read as `0` and `i`, `l` as `1` (Crockford).
pub fn key_from_code(text: &str) -> Result<SecretKey, KeyError> {
    let mut sym = Zeroizing::new([0u8; CODE_SYMBOLS]);
    let mut n = 0;
    for (i, c) in text.chars().enumerate() {
        if c == '-' || c.is_ascii_whitespace() {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        let v = CODE_ALPHABET
            .iter()
            .position(|a| char::from(*a) == c)
            .ok_or(KeyError::CodeCharacter(i + 1))?;
        if n < CODE_SYMBOLS {
            sym[n] = v as u8;
        }
        n += 1;
    }
    if n != CODE_SYMBOLS {
        return Err(KeyError::CodeLength(n));
    }
    if !checksum_ok(&sym) {
        return Err(KeyError::CodeChecksum(typo_group(&sym)));
    }
    let data = bytes(&sym);
    SecretKey::from_slice(&data[..32]).map_err(|_| KeyError::CodeOutOfRange)
}

/// The group holding a single mistyped symbol, if exactly one
/// single-symbol change anywhere makes the checksum match.
fn typo_group(sym: &[u8; CODE_SYMBOLS]) -> Option<usize> {
    let mut found = None;
    let mut t = Zeroizing::new(*sym);
    for i in 0..CODE_SYMBOLS {
        for v in 0..32u8 {
            if v == sym[i] {
                continue;
            }
            t[i] = v;
            if checksum_ok(&t) {
                if found.is_some() {
                    return None;
                }
                found = Some(i / CODE_GROUP + 1);
            }
        }
        t[i] = sym[i];
    }
    found
}

/// A private recovery key from what `--key` names: PEM (PKCS#8, or SEC1
/// `EC PRIVATE KEY`) or a recovery code, surrounding whitespace ignored.
pub fn key_from_text(text: &str) -> Result<SecretKey, KeyError> {
    let t = text.trim();
    if !t.starts_with("-----BEGIN ") {
        return key_from_code(t);
    }
    if t.starts_with("-----BEGIN PUBLIC KEY-----") {
        return Err(KeyError::PublicKey);
    }
    if t.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::Encrypted);
    }
    SecretKey::from_pkcs8_pem(t)
        .or_else(|_| SecretKey::from_sec1_pem(t))
        .map_err(|_| KeyError::NotP256Pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_slice(&[seed; 32]).unwrap()
    }

    #[test]
    fn code_round_trips_and_has_its_shape() {
        for seed in [1u8, 7, 0x42, 0xfe] {
            let sk = key(seed);
            let c = code(&sk);
            assert_eq!(c.len(), 63);
            let groups: Vec<&str> = c.split('-').collect();
            assert_eq!(groups.len(), 8);
            assert!(groups.iter().all(|g| g.len() == 7));
            assert!(c.bytes().all(|b| b == b'-' || CODE_ALPHABET.contains(&b)));
            assert_eq!(key_from_code(&c).unwrap(), sk);
            // Upper case, spaces instead of dashes, o/i/l for 0/1, a newline.
            let loose = format!("{}\n", c.to_uppercase().replace('-', " "));
            assert_eq!(key_from_code(&loose).unwrap(), sk);
            let confusable = c.replace('0', "o").replace('1', "l");
            assert_eq!(key_from_code(&confusable).unwrap(), sk);
            assert_eq!(key_from_text(&c).unwrap(), sk);
        }
    }

    #[test]
    fn a_known_code() {
        // Scalar 0x0101..01: fixed here so that a second implementation
        // (engine/tests/reference_impl.py) can be checked against it.
        let c = code(&key(1));
        assert_eq!(&*c, KNOWN_CODE_1);
    }

    const KNOWN_CODE_1: &str = "040g208-1040g20-81040g2-081040g-2081040-g208104-0g20810-40z06x3";

    #[test]
    fn typos_are_found_and_never_accepted() {
        let c = code(&key(7));
        let chars: Vec<char> = c.chars().collect();
        let mut located = 0;
        for (i, ch) in chars.iter().enumerate() {
            if *ch == '-' {
                continue;
            }
            for sub in ['0', 'z', 'k'] {
                if sub == *ch {
                    continue;
                }
                let mut t = chars.clone();
                t[i] = sub;
                let t: String = t.into_iter().collect();
                match key_from_code(&t) {
                    Err(KeyError::CodeChecksum(g)) => {
                        if let Some(g) = g {
                            assert_eq!(g, i / 8 + 1, "position {i}");
                            located += 1;
                        }
                    }
                    other => panic!("typo at {i} gave {other:?}"),
                }
            }
        }
        assert!(located > 100, "most single typos are located ({located})");
        assert_eq!(key_from_code(&c[..62]), Err(KeyError::CodeLength(55)));
        assert_eq!(
            key_from_code(&format!("{}x", &*c)),
            Err(KeyError::CodeLength(57))
        );
        assert_eq!(
            key_from_code(&c.replacen('-', "u", 1)),
            Err(KeyError::CodeCharacter(8))
        );
        assert_eq!(key_from_code(""), Err(KeyError::CodeLength(0)));
    }

    #[test]
    fn pem_forms() {
        let sk = key(9);
        let pem = private_pem(&sk).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(key_from_text(&pem).unwrap(), sk);
        let sec1 = sk.to_sec1_pem(LineEnding::LF).unwrap();
        assert_eq!(key_from_text(&sec1).unwrap(), sk);
        let public = crate::armor::pubkey_to_pem(&hakeys_engine::crypto::sec1_uncompressed(
            &sk.public_key(),
        ))
        .unwrap();
        assert_eq!(key_from_text(&public), Err(KeyError::PublicKey));
        assert_eq!(
            key_from_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            Err(KeyError::Encrypted)
        );
        assert_eq!(
            key_from_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(KeyError::NotP256Pem)
        );
        assert_eq!(fingerprint_text(&fingerprint(&sk.public_key())).len(), 32);
    }
}
