//! Choosing and opening a key-engine backend: the TEE (libteec, on boards
//! and in QEMU) or the in-process simulator. `teectl` and the daemon both
//! open their engine through here, so they share every code path below the
//! transport.

use std::path::{Path, PathBuf};

use crate::client::{Transport, TransportError};
use crate::exit;
use crate::sim::{self, SimBackend};

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

/// Why a backend could not be opened: an exit code and one line.
#[derive(Debug)]
pub struct OpenError {
    pub exit_code: i32,
    pub message: String,
}

/// An open backend.
pub enum Backend {
    Sim(Box<SimBackend>),
    #[cfg(feature = "tee")]
    Tee(crate::tee::TeeBackend),
}

impl Backend {
    /// Open `kind` (`None`: detect). `state_dir` is the simulator's.
    pub fn open(kind: Option<BackendKind>, state_dir: Option<&Path>) -> Result<Backend, OpenError> {
        match kind.unwrap_or_else(BackendKind::detect) {
            BackendKind::Sim => {
                let dir: PathBuf = state_dir.map(Path::to_path_buf).unwrap_or_else(sim::default_state_dir);
                SimBackend::open(&dir)
                    .map(|b| Backend::Sim(Box::new(b)))
                    .map_err(|e| OpenError { exit_code: exit::UNAVAILABLE, message: format!("simulator: {e}") })
            }
            #[cfg(feature = "tee")]
            BackendKind::Tee => crate::tee::TeeBackend::open()
                .map(Backend::Tee)
                .map_err(|e| OpenError { exit_code: exit::UNAVAILABLE, message: e.to_string() }),
            #[cfg(not(feature = "tee"))]
            BackendKind::Tee => Err(OpenError {
                exit_code: exit::UNAVAILABLE,
                message: format!(
                    "this build has no TEE backend (built without the `tee` feature; {TEE_DEVICE} {}); use --backend sim",
                    if Path::new(TEE_DEVICE).exists() { "exists" } else { "does not exist" }
                ),
            }),
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Sim(_) => BackendKind::Sim,
            #[cfg(feature = "tee")]
            Backend::Tee(_) => BackendKind::Tee,
        }
    }

    /// More detail on the last storage failure, when the backend has it.
    pub fn storage_detail(&mut self) -> Option<String> {
        match self {
            Backend::Sim(s) => s.storage_detail(),
            #[cfg(feature = "tee")]
            Backend::Tee(_) => None,
        }
    }
}

impl Transport for Backend {
    fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        match self {
            Backend::Sim(s) => s.call(request, response),
            #[cfg(feature = "tee")]
            Backend::Tee(t) => t.call(request, response),
        }
    }
}
