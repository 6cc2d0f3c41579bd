//! Text forms that travel through YAML files, shells and forums.
//!
//! - a sealed blob: `hakeys:v1:` followed by standard base64 (with padding)
//!   of the binary blob, on one line;
//! - attestation evidence: `hakeys-evidence:v1:` + base64;
//! - a recovery escrow: `hakeys-escrow:v1:` + base64;
//! - the device public key: a PEM `PUBLIC KEY` (SubjectPublicKeyInfo),
//!   optionally after one line `hakeys-sealing-epoch: N` (a sealing key
//!   file: blobs sealed offline to it carry generation N).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hakeys_proto::{MAX_BLOB_LEN, MAX_ESCROW_LEN, MAX_EVIDENCE_LEN};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use p256::PublicKey;

/// Prefix of a blob's text form.
pub const BLOB_PREFIX: &str = "hakeys:v1:";
/// Prefix of evidence's text form.
pub const EVIDENCE_PREFIX: &str = "hakeys-evidence:v1:";
/// Prefix of a recovery escrow's text form.
pub const ESCROW_PREFIX: &str = "hakeys-escrow:v1:";
/// The one line a sealing key file may have before its PEM (explanatory
/// text, which RFC 7468 §5.2 allows and OpenSSL skips): the board's epoch
/// when it gave out the key, the generation of blobs sealed to it.
pub const SEALING_EPOCH_LABEL: &str = "hakeys-sealing-epoch: ";

/// Why a text form was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmorError {
    /// Does not start with the expected prefix.
    NoPrefix(&'static str),
    /// The base64 part does not decode.
    BadBase64,
    /// More bytes than any valid object of this kind.
    TooLong,
    /// Not a PEM P-256 public key.
    BadPublicKey,
}

impl std::fmt::Display for ArmorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArmorError::NoPrefix(p) => {
                write!(f, "not a hakeys object: expected text starting with `{p}`")
            }
            ArmorError::BadBase64 => f.write_str("the base64 text is damaged"),
            ArmorError::TooLong => f.write_str("input is longer than any valid object"),
            ArmorError::BadPublicKey => f.write_str(
                "not a PEM-encoded P-256 public key (optionally after one line `hakeys-sealing-epoch: N`)",
            ),
        }
    }
}

impl std::error::Error for ArmorError {}

fn encode(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", STANDARD.encode(bytes))
}

fn decode(prefix: &'static str, input: &[u8], max: usize) -> Result<Vec<u8>, ArmorError> {
    // Accept surrounding whitespace (a trailing newline from `echo`, YAML
    // indentation) and nothing else.
    let text = std::str::from_utf8(input)
        .map_err(|_| ArmorError::NoPrefix(prefix))?
        .trim();
    let b64 = text
        .strip_prefix(prefix)
        .ok_or(ArmorError::NoPrefix(prefix))?;
    if b64.len() > (max / 3 + 1) * 4 {
        return Err(ArmorError::TooLong);
    }
    STANDARD.decode(b64).map_err(|_| ArmorError::BadBase64)
}

/// A blob's one-line text form (no newline).
pub fn blob_to_text(blob: &[u8]) -> String {
    encode(BLOB_PREFIX, blob)
}

/// A blob from its text form. The binary form (starting with the blob
/// magic) is accepted as well.
pub fn blob_from_input(input: &[u8]) -> Result<Vec<u8>, ArmorError> {
    if input.starts_with(&hakeys_engine::blob::BLOB_MAGIC) {
        if input.len() > MAX_BLOB_LEN {
            return Err(ArmorError::TooLong);
        }
        return Ok(input.to_vec());
    }
    decode(BLOB_PREFIX, input, MAX_BLOB_LEN)
}

/// Evidence's one-line text form.
pub fn evidence_to_text(ev: &[u8]) -> String {
    encode(EVIDENCE_PREFIX, ev)
}

/// Evidence from its text form.
pub fn evidence_from_input(input: &[u8]) -> Result<Vec<u8>, ArmorError> {
    decode(EVIDENCE_PREFIX, input, MAX_EVIDENCE_LEN)
}

/// An escrow's one-line text form.
pub fn escrow_to_text(escrow: &[u8]) -> String {
    encode(ESCROW_PREFIX, escrow)
}

/// An escrow from its text form.
pub fn escrow_from_input(input: &[u8]) -> Result<Vec<u8>, ArmorError> {
    decode(ESCROW_PREFIX, input, MAX_ESCROW_LEN)
}

/// The device key as PEM SubjectPublicKeyInfo.
pub fn pubkey_to_pem(sec1: &[u8]) -> Result<String, ArmorError> {
    let pk = PublicKey::from_sec1_bytes(sec1).map_err(|_| ArmorError::BadPublicKey)?;
    pk.to_public_key_pem(LineEnding::LF)
        .map_err(|_| ArmorError::BadPublicKey)
}

/// A device key from PEM SubjectPublicKeyInfo, or from a sealing key file
/// (whose epoch line is ignored here).
pub fn pubkey_from_pem(pem: &str) -> Result<PublicKey, ArmorError> {
    sealing_key_from_pem(pem).map(|(pk, _)| pk)
}

/// A sealing key file: `hakeys-sealing-epoch: N` (N ≥ 1, decimal), a line
/// break, then the PEM of the device public key. Offline blobs sealed to it
/// carry generation N, which `retire` ends like the epoch N.
pub fn sealing_key_to_pem(sec1: &[u8], epoch: u32) -> Result<String, ArmorError> {
    if epoch == 0 {
        return Err(ArmorError::BadPublicKey);
    }
    Ok(format!(
        "{SEALING_EPOCH_LABEL}{epoch}\n{}",
        pubkey_to_pem(sec1)?
    ))
}

/// The device public key of a plain PEM or a sealing key file, and the
/// file's epoch (`None` for a plain PEM: blobs sealed to it are unmarked).
/// Surrounding whitespace is ignored; any other text is refused.
pub fn sealing_key_from_pem(text: &str) -> Result<(PublicKey, Option<u32>), ArmorError> {
    let text = text.trim();
    let (epoch, pem) = match text.strip_prefix(SEALING_EPOCH_LABEL) {
        Some(rest) => {
            let (n, pem) = rest.split_once('\n').ok_or(ArmorError::BadPublicKey)?;
            let n = n.strip_suffix('\r').unwrap_or(n);
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
                return Err(ArmorError::BadPublicKey);
            }
            let n: u32 = n.parse().map_err(|_| ArmorError::BadPublicKey)?;
            (Some(n), pem.trim_start())
        }
        None => (None, text),
    };
    // No other text before the PEM (which the PEM reader would skip): a
    // mistyped epoch line must not pass for an unmarked key.
    if !pem.starts_with("-----BEGIN ") {
        return Err(ArmorError::BadPublicKey);
    }
    let pk = PublicKey::from_public_key_pem(pem).map_err(|_| ArmorError::BadPublicKey)?;
    Ok((pk, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_text_round_trip_and_refusals() {
        let blob = b"HKSB\x01\x01rest";
        let t = blob_to_text(blob);
        assert!(t.starts_with("hakeys:v1:") && !t.contains('\n'));
        assert_eq!(blob_from_input(t.as_bytes()).unwrap(), blob);
        assert_eq!(
            blob_from_input(format!("  {t}\n").as_bytes()).unwrap(),
            blob
        );
        assert_eq!(blob_from_input(blob).unwrap(), blob);
        assert_eq!(
            blob_from_input(b"hello"),
            Err(ArmorError::NoPrefix(BLOB_PREFIX))
        );
        assert_eq!(
            blob_from_input(b"hakeys:v1:@@@"),
            Err(ArmorError::BadBase64)
        );
        let huge = format!("hakeys:v1:{}", "A".repeat(10_000));
        assert_eq!(blob_from_input(huge.as_bytes()), Err(ArmorError::TooLong));
        assert_eq!(
            blob_from_input(&[0xff, 0xfe]),
            Err(ArmorError::NoPrefix(BLOB_PREFIX))
        );
    }

    #[test]
    fn escrow_text_round_trip() {
        let t = escrow_to_text(b"HKES\x01rest");
        assert!(t.starts_with("hakeys-escrow:v1:") && !t.contains('\n'));
        assert_eq!(
            escrow_from_input(format!("{t}\n").as_bytes()).unwrap(),
            b"HKES\x01rest"
        );
        assert_eq!(
            escrow_from_input(blob_to_text(b"HKSB").as_bytes()),
            Err(ArmorError::NoPrefix(ESCROW_PREFIX))
        );
        let huge = format!("hakeys-escrow:v1:{}", "A".repeat(1000));
        assert_eq!(escrow_from_input(huge.as_bytes()), Err(ArmorError::TooLong));
    }

    #[test]
    fn pem_round_trip() {
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let sec1 = hakeys_engine::crypto::sec1_uncompressed(&sk.public_key());
        let pem = pubkey_to_pem(&sec1).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(pubkey_from_pem(&pem).unwrap(), sk.public_key());
        assert_eq!(pubkey_from_pem("junk"), Err(ArmorError::BadPublicKey));
    }

    #[test]
    fn sealing_key_files_carry_the_epoch() {
        let sk = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let sec1 = hakeys_engine::crypto::sec1_uncompressed(&sk.public_key());
        let pem = pubkey_to_pem(&sec1).unwrap();
        let file = sealing_key_to_pem(&sec1, 12).unwrap();
        assert_eq!(file, format!("hakeys-sealing-epoch: 12\n{pem}"));
        assert_eq!(
            sealing_key_from_pem(&file).unwrap(),
            (sk.public_key(), Some(12))
        );
        assert_eq!(
            sealing_key_from_pem(&file.replace('\n', "\r\n")).unwrap(),
            (sk.public_key(), Some(12))
        );
        assert_eq!(pubkey_from_pem(&file).unwrap(), sk.public_key());
        assert_eq!(sealing_key_from_pem(&pem).unwrap(), (sk.public_key(), None));
        for bad in [
            "hakeys-sealing-epoch: 0\n",
            "hakeys-sealing-epoch: 012\n",
            "hakeys-sealing-epoch: -1\n",
            "hakeys-sealing-epoch: 4294967296\n",
            "hakeys-sealing-epoch: \n",
            "hakeys-sealing-epoch:12\n",
            "comment\n",
            "hakeys-sealing-epoch: 3\ncomment\n",
        ] {
            assert_eq!(
                sealing_key_from_pem(&format!("{bad}{pem}")),
                Err(ArmorError::BadPublicKey),
                "{bad:?}"
            );
        }
        assert_eq!(sealing_key_to_pem(&sec1, 0), Err(ArmorError::BadPublicKey));
    }
}
