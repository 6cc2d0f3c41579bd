//! Exit codes of `teectl`. Stable: scripts and boot units branch on them.
//! Documented in the README. This is the only place they are chosen: the
//! libraries report typed errors, and `teectl` maps them here.

use hakeys_client::client::ClientError;
use hakeys_proto::Status;
use teed_protocol::client::DaemonError;
use teed_protocol::Code;

/// Success.
pub const OK: i32 = 0;
/// An unexpected internal failure (a bug, or the engine's `Internal`).
pub const INTERNAL: i32 = 1;
/// Bad usage or bad input: unknown flag, invalid namespace, empty or
/// over-long secret, malformed text, an impossible epoch.
pub const USAGE: i32 = 2;
/// The device has not been initialised (`teectl init`).
pub const NOT_INITIALISED: i32 = 3;
/// Refused by policy: boot namespace after `boot-done`, a retired epoch, a
/// namespace the caller may not use, `reseal` of a boot namespace without
/// `--allow-boot`, an escrow to another recovery key than the enrolled one,
/// a blob sealed offline in `boot/` (or with `--device-only`), an operation
/// the TA allows only to root's TEE identity.
pub const REFUSED: i32 = 4;
/// The blob or evidence is not authentic: tampered, truncated, or made for
/// another device or key.
pub const REJECTED: i32 = 5;
/// Secure storage failed, or failed its integrity check; also the state of
/// an initialised device is lost (never reported as [`NOT_INITIALISED`]:
/// no command makes a new key then, except `init --new-identity`).
pub const STORAGE: i32 = 6;
/// The backend is unavailable: no TEE device, state directory unusable,
/// the engine busy past the wait.
pub const UNAVAILABLE: i32 = 7;
/// An output file or directory already exists (and no `--force`), or could
/// not be written; nothing was written.
pub const OUTPUT: i32 = 8;

/// The exit codes, for `teectl --help` (the README has the same table).
pub const HELP: &str = "\
Exit codes:
  0  success
  1  internal error (a bug, or a protocol mismatch with the key engine)
  2  usage or bad input (unknown flag, invalid namespace, empty or over-long
     secret, impossible epoch, bad hex, unreadable input file, a key file
     or recovery code that is not a P-256 private key, a mistyped code,
     a device that is not LUKS2 for luks-finish)
  3  the device is not initialised (teectl init)
  4  refused by policy: boot/ after boot-done, retired epoch (also in an
     escrow), another namespace, reseal of boot/ without --allow-boot,
     escrow to another recovery key than the enrolled one, a blob sealed
     offline in boot/ (or with --device-only), an operation the TA allows
     only to root (lifecycle, recovery, boot/), luks-finish of an
     encryption with blocks left or of a device in use
  5  rejected: blob, evidence or escrow tampered, truncated, or for another
     device or key (also: an escrow made for another recovery key)
  6  secure storage failed or failed its integrity check; the state of an
     initialised device is lost
  7  backend unavailable: no TEE, state directory unusable, device busy
  8  an output file or directory exists (no --force) or cannot be written;
     nothing was written (luks-finish: a write to the device failed; run
     it again)";

/// The exit code for a status reported by the engine.
pub fn for_status(s: Status) -> i32 {
    match s {
        Status::Ok => OK,
        Status::InvalidNamespace | Status::TooLarge | Status::InvalidArgument => USAGE,
        Status::NotInitialised => NOT_INITIALISED,
        Status::BootLocked
        | Status::EpochRetired
        | Status::NamespaceMismatch
        | Status::BootNotAllowed
        | Status::RecoveryKeyMismatch
        | Status::OfflineRefused
        | Status::IdentityRefused => REFUSED,
        Status::BlobRejected => REJECTED,
        Status::StorageFailure | Status::StorageCorrupt => STORAGE,
        Status::Busy => UNAVAILABLE,
        // A protocol mismatch between this tool and the engine is not the
        // user's doing.
        Status::BadMessage
        | Status::UnsupportedVersion
        | Status::UnknownOpcode
        | Status::Internal => INTERNAL,
    }
}

/// The exit code for a failed call to the key engine.
pub fn for_client_error(e: &ClientError) -> i32 {
    match e {
        ClientError::Status(s) => for_status(*s),
        ClientError::Transport(_) => UNAVAILABLE,
        ClientError::Protocol(_) => INTERNAL,
        ClientError::Request(_) => USAGE,
    }
}

/// The exit code for an outcome reported by the daemon.
pub fn for_daemon_code(c: Code) -> i32 {
    match c {
        Code::Engine(s) => for_status(s),
        Code::Denied => REFUSED,
        Code::RateLimited | Code::Retry | Code::Timeout => UNAVAILABLE,
    }
}

/// The exit code for a failed call through the daemon.
pub fn for_daemon_error(e: &DaemonError) -> i32 {
    match e {
        DaemonError::Unreachable(_) => UNAVAILABLE,
        DaemonError::Protocol(_) => INTERNAL,
        DaemonError::Refused { code, .. } => for_daemon_code(*code),
    }
}
