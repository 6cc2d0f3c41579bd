//! Errors of the device model, the image file and the transports.
//!
//! These are host-side errors (a file could not be read, an image is
//! corrupt, the image is locked). Protocol outcomes are never errors: a bad
//! MAC, a counter mismatch or a malformed request is answered with a result
//! code in a response frame, as an eMMC does.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// An error of this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on the image (or a transport stream) failed.
    Io {
        /// What was being done, e.g. "read state slot".
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// `create` refused to overwrite an existing file.
    AlreadyExists(PathBuf),
    /// Another process (or another open in this process) holds the image.
    Locked(PathBuf),
    /// The image is not an rpmb-sim image, or it is damaged beyond what the
    /// crash-recovery rules can repair.
    Corrupt {
        /// The image's name (path, or `"<memory>"`).
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// The image has a format version this build does not understand.
    UnsupportedVersion {
        /// The image's name.
        image: String,
        /// The version found.
        version: u32,
    },
    /// Create options out of range.
    InvalidOptions(String),
    /// A request sequence that the API refuses outright (as opposed to one
    /// answered with a general-failure frame), e.g. a response count that
    /// does not fit the request.
    Protocol(String),
    /// An earlier write to the image failed part-way; the in-memory state
    /// may no longer match the image, so the device refuses further work.
    /// Reopen the image to run crash recovery.
    Poisoned,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn corrupt(image: &str, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            image: image.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::AlreadyExists(p) => {
                write!(f, "{}: file exists, refusing to overwrite", p.display())
            }
            Error::Locked(p) => write!(
                f,
                "{}: image is in use (locked by another open or process)",
                p.display()
            ),
            Error::Corrupt { image, reason } => write!(f, "{image}: corrupt image: {reason}"),
            Error::UnsupportedVersion { image, version } => {
                write!(f, "{image}: unsupported image format version {version}")
            }
            Error::InvalidOptions(m) => write!(f, "invalid options: {m}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Poisoned => write!(
                f,
                "device stopped after a failed image write; reopen the image to recover"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
