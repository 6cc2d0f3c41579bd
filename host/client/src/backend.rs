//! Choosing and opening a key-engine backend: the TEE (libteec, on boards
//! and in QEMU) or the in-process simulator. `teectl` and the daemon both
//! open their engine through here, so they share every code path below the
//! transport.

use std::path::Path;

use crate::client::{Transport, TransportError};

/// The TEE client device; its presence selects the TEE backend by default.
pub const TEE_DEVICE: &str = "/dev/tee0";

/// Which engine to talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The trusted application, through libteec.
    Tee,
    /// The engine in-process, state on an rpmb-sim image.
    Sim,
}

impl BackendKind {
    /// `tee` when the TEE device exists, else `sim`.
    pub fn detect() -> BackendKind {
        if Path::new(TEE_DEVICE).exists() {
            BackendKind::Tee
        } else {
            BackendKind::Sim
        }
    }

    /// Lower-case name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Tee => "tee",
            BackendKind::Sim => "sim",
        }
    }
}

/// A backend could not be opened or reached: one line for a person, never
/// containing request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

/// Why a backend could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The simulator's state directory or image could not be used.
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimError),
    /// The TEE or the trusted application could not be reached.
    #[cfg(feature = "tee")]
    Tee(crate::tee::TeeError),
    /// This build has no such backend.
    NotBuilt(BackendKind),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "sim")]
            OpenError::Sim(e) => write!(f, "simulator: {e}"),
            #[cfg(feature = "tee")]
            OpenError::Tee(e) => e.fmt(f),
            OpenError::NotBuilt(BackendKind::Tee) => write!(
                f,
                "this build has no TEE backend (built without the `tee` feature; {TEE_DEVICE} {}); use --backend sim",
                if Path::new(TEE_DEVICE).exists() { "exists" } else { "does not exist" }
            ),
            OpenError::NotBuilt(BackendKind::Sim) => {
                f.write_str("this build has no simulator backend (built without the `sim` feature)")
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sim")]
            OpenError::Sim(e) => Some(e),
            #[cfg(feature = "tee")]
            OpenError::Tee(e) => Some(e),
            OpenError::NotBuilt(_) => None,
        }
    }
}

/// An open backend.
pub enum Backend {
    #[cfg(feature = "sim")]
    Sim(Box<crate::sim::SimBackend>),
    #[cfg(feature = "tee")]
    Tee(crate::tee::TeeBackend),
}

impl Backend {
    /// Open `kind` (`None`: detect). `state_dir` is the simulator's
    /// (`None`: [`crate::sim::default_state_dir`]).
    pub fn open(kind: Option<BackendKind>, state_dir: Option<&Path>) -> Result<Backend, OpenError> {
        let kind = kind.unwrap_or_else(BackendKind::detect);
        match kind {
            #[cfg(feature = "sim")]
            BackendKind::Sim => {
                let dir = state_dir
                    .map(Path::to_path_buf)
                    .unwrap_or_else(crate::sim::default_state_dir);
                crate::sim::SimBackend::open(&dir)
                    .map(|b| Backend::Sim(Box::new(b)))
                    .map_err(OpenError::Sim)
            }
            #[cfg(feature = "tee")]
            BackendKind::Tee => {
                let _ = state_dir;
                crate::tee::TeeBackend::open()
                    .map(Backend::Tee)
                    .map_err(OpenError::Tee)
            }
            #[allow(unreachable_patterns)] // reason: reachable only in builds without a backend
            other => {
                let _ = state_dir;
                Err(OpenError::NotBuilt(other))
            }
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "sim")]
            Backend::Sim(_) => BackendKind::Sim,
            #[cfg(feature = "tee")]
            Backend::Tee(_) => BackendKind::Tee,
            #[cfg(not(any(feature = "sim", feature = "tee")))]
            _ => unreachable_backend(),
        }
    }

    /// More detail on the last storage failure, when the backend has it.
    pub fn storage_detail(&mut self) -> Option<String> {
        match self {
            #[cfg(feature = "sim")]
            Backend::Sim(s) => s.storage_detail(),
            #[cfg(feature = "tee")]
            Backend::Tee(_) => None,
            #[cfg(not(any(feature = "sim", feature = "tee")))]
            _ => unreachable_backend(),
        }
    }
}

/// A build without any backend cannot construct a [`Backend`].
#[cfg(not(any(feature = "sim", feature = "tee")))]
fn unreachable_backend() -> ! {
    unreachable!("no backend is built in")
}

impl Transport for Backend {
    fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        match self {
            #[cfg(feature = "sim")]
            Backend::Sim(s) => s.call(request, response),
            #[cfg(feature = "tee")]
            Backend::Tee(t) => t.call(request, response),
            #[cfg(not(any(feature = "sim", feature = "tee")))]
            _ => {
                let _ = (request, response);
                unreachable_backend()
            }
        }
    }
}
