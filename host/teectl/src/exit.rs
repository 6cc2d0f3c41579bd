//! Exit codes of `teectl` (and of the daemon's client mode). Stable: scripts
//! and boot units branch on them. Documented in the README.

use hakeys_proto::Status;

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
/// namespace the caller may not use.
pub const REFUSED: i32 = 4;
/// The blob or evidence is not authentic: tampered, truncated, or made for
/// another device or key.
pub const REJECTED: i32 = 5;
/// Secure storage failed, or failed its integrity check.
pub const STORAGE: i32 = 6;
/// The backend is unavailable: no TEE device, state directory unusable,
/// the engine busy past the wait.
pub const UNAVAILABLE: i32 = 7;

/// The exit code for a status reported by the engine.
pub fn for_status(s: Status) -> i32 {
    match s {
        Status::Ok => OK,
        Status::InvalidNamespace | Status::TooLarge | Status::InvalidArgument => USAGE,
        Status::NotInitialised => NOT_INITIALISED,
        Status::BootLocked | Status::EpochRetired | Status::NamespaceMismatch => REFUSED,
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
