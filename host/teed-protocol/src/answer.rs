//! Answer lines: the typed bodies the daemon sends back, and their
//! encoding (serde, one line, one buffer).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hakeys_client::armor;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{to_line, Code, VERSION};

/// The body of a successful `status` answer; also what `teectl status
/// --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    /// `sim` or `tee`.
    pub backend: String,
    pub initialised: bool,
    pub epoch: u32,
    pub min_epoch: u32,
    pub boot_locked: bool,
    /// `major.minor.patch`.
    pub engine_version: String,
}

/// The body of a successful `unseal` answer. The plaintext (base64) is
/// wiped on drop.
#[derive(Serialize, Deserialize)]
pub struct UnsealAnswer {
    /// The namespace named in the blob's authenticated header.
    pub namespace: String,
    /// `device` (sealed on this board) or `offline` (sealed to the board's
    /// public key, by anyone who has it): a caller that must not trust a
    /// value someone else could have planted refuses `offline`.
    /// Absent only in answers of daemons before this field existed.
    #[serde(default)]
    pub kind: String,
    /// The blob's epoch (device) or generation (offline).
    #[serde(default)]
    pub epoch: u32,
    /// The secret, base64 (standard alphabet, padded).
    pub plaintext: Zeroizing<String>,
}

/// The body of a successful `seal` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealAnswer {
    /// The blob's `hakeys:v1:` text form.
    pub blob: String,
}

/// The body of a successful `pubkey` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubkeyAnswer {
    /// The device public key, PEM.
    pub pem: String,
}

/// The body of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// One line for a person; never contains a secret.
    pub message: String,
    /// For retryable codes: how long to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// What every answer line starts with. Clients read this first, then the
/// body for the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub v: u64,
    /// A [`Code`] name.
    pub status: String,
}

/// One answer line: the head, then the body's fields.
#[derive(Serialize)]
struct Line<'a, T> {
    v: u64,
    status: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// An answer line (with its `\n`) for `code` with `body`.
pub fn encode_answer<T: Serialize>(code: Code, body: &T) -> Zeroizing<Vec<u8>> {
    to_line(&Line {
        v: VERSION,
        status: code.name(),
        body,
    })
}

/// An error answer line.
pub fn encode_error(code: Code, message: &str, retry_after_ms: Option<u64>) -> Zeroizing<Vec<u8>> {
    encode_answer(
        code,
        &ErrorAnswer {
            message: message.into(),
            retry_after_ms,
        },
    )
}

/// The answer to a successful `unseal`; wiped on drop.
pub fn encode_unseal(
    namespace: &str,
    kind: &str,
    epoch: u32,
    plaintext: &[u8],
) -> Zeroizing<Vec<u8>> {
    let mut b64 = Zeroizing::new(String::with_capacity(plaintext.len().div_ceil(3) * 4));
    STANDARD.encode_string(plaintext, &mut b64);
    encode_answer(
        Code::OK,
        &UnsealAnswer {
            namespace: namespace.into(),
            kind: kind.into(),
            epoch,
            plaintext: b64,
        },
    )
}

/// The answer to a successful `seal`.
pub fn encode_seal(blob: &[u8]) -> Zeroizing<Vec<u8>> {
    encode_answer(
        Code::OK,
        &SealAnswer {
            blob: armor::blob_to_text(blob),
        },
    )
}

/// The answer to a successful `pubkey`.
pub fn encode_pubkey(pem: &str) -> Zeroizing<Vec<u8>> {
    encode_answer(Code::OK, &PubkeyAnswer { pem: pem.into() })
}

/// The answer to a successful `status`.
pub fn encode_status(s: &StatusAnswer) -> Zeroizing<Vec<u8>> {
    encode_answer(Code::OK, s)
}
