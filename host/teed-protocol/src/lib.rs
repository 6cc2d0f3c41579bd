//! The wire protocol of `teed`, the decrypt daemon, version 1 (specified in
//! `docs/daemon.md`): shared by `teed`, `teectl --via-daemon`, the fuzz
//! target and the tests.
//!
//! One request per line, one answer line per request, in order, any number
//! of requests per connection. A line is one JSON object of at most
//! [`MAX_LINE`] bytes including its `\n`. Requests carry `"v": 1` and an
//! `"op"`; answers carry `"v": 1` and a `"status"` name. Both directions are
//! typed structs serialised by serde: [`RequestLine`] (what a client sends)
//! and [`Answer`] with its bodies (what the daemon sends back).
//!
//! [`decode_request`] is a pure function over the bytes of one line (without
//! its newline), strict and total: unknown fields, unknown operations, other
//! versions, missing or mistyped fields, a damaged blob or a bad namespace are
//! errors with a status and a fixed message, never a panic (fuzzed:
//! `fuzz/fuzz_targets/daemon_request.rs`). Error messages never contain the
//! request's data, except a short, sanitised unknown field name.

use hakeys_proto::Status;
use serde::Serialize;
use zeroize::Zeroizing;

mod answer;
pub mod client;
mod request;

pub use answer::*;
pub use request::*;

/// Where `teed` listens and `teectl` looks for it by default.
pub const DEFAULT_SOCKET: &str = "/run/hakeys/teed.sock";
/// Environment variable naming the daemon's socket (for `teectl` and clients).
pub const SOCKET_ENV: &str = "HAKEYS_SOCKET";

/// The protocol version this daemon speaks.
pub const VERSION: u64 = 1;
/// The longest request or response line, including its `\n`.
pub const MAX_LINE: usize = 16 * 1024;

/// An operation the daemon offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Unseal,
    Seal,
    Pubkey,
    Status,
}

impl Op {
    /// Every operation the daemon offers.
    pub const ALL: [Op; 4] = [Op::Unseal, Op::Seal, Op::Pubkey, Op::Status];

    /// The name on the wire and in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Op::Unseal => "unseal",
            Op::Seal => "seal",
            Op::Pubkey => "pubkey",
            Op::Status => "status",
        }
    }

    /// The operation with this name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|o| o.name() == name)
    }
}

/// Engine operations the daemon recognises and refuses (`denied`): they
/// rotate, retire or otherwise administer keys and stay with `teectl` run as
/// root.
pub const ROOT_ONLY_OPS: [&str; 7] = [
    "init",
    "rotate",
    "retire",
    "rewrap",
    "attest",
    "boot-done",
    "boot_done",
];

/// The outcome of a request: an engine status (including `ok`) or one of
/// the daemon's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A status of the key engine's protocol (`proto::Status`), `ok` included.
    Engine(Status),
    /// The policy does not grant this caller this operation on this namespace.
    Denied,
    /// Too many requests, connections or failed unseals: retry after
    /// `retry_after_ms`.
    RateLimited,
    /// The key engine is reconnecting (the TA or supplicant restarted): retry.
    Retry,
    /// The request did not arrive in full within the request timeout.
    Timeout,
}

/// Every daemon-specific code with its name (engine statuses are named by
/// [`Status::name`], in `hakeys-proto`, from the same table as the
/// engine's status codes).
const DAEMON_CODES: [(Code, &str); 4] = [
    (Code::Denied, "denied"),
    (Code::RateLimited, "rate_limited"),
    (Code::Retry, "retry"),
    (Code::Timeout, "timeout"),
];

impl Code {
    /// Success.
    pub const OK: Code = Code::Engine(Status::Ok);

    /// The name on the wire and in audit lines.
    pub fn name(self) -> &'static str {
        match self {
            Code::Engine(s) => s.name(),
            other => DAEMON_CODES
                .iter()
                .find(|(c, _)| *c == other)
                .map(|(_, n)| *n)
                .unwrap_or("internal"),
        }
    }

    /// The code with this wire name.
    pub fn from_name(name: &str) -> Option<Code> {
        Status::from_name(name).map(Code::Engine).or_else(|| {
            DAEMON_CODES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(c, _)| *c)
        })
    }

    /// Whether the same request may succeed later without change.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Code::RateLimited | Code::Retry | Code::Engine(Status::Busy)
        )
    }
}

/// Serialise into one buffer of [`MAX_LINE`] bytes (never reallocated for
/// any line this protocol allows, so no copy of a secret is left behind in
/// freed memory), with the closing `\n`.
pub(crate) fn to_line<T: Serialize>(value: &T) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(MAX_LINE));
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Only a failing Serialize impl can get here; ours do not fail.
        out.clear();
        out.extend_from_slice(
            br#"{"v":1,"status":"internal","message":"cannot encode the answer"}"#,
        );
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests;
