//! The normal-world client of the hakeys key engine.
//!
//! - [`client`]: a typed client over any [`client::Transport`] that carries
//!   encoded protocol messages to the key engine;
//! - [`backend`]: choosing and opening a backend, the one path `teectl` and
//!   `teed` both take to the engine;
//! - [`sim`] (feature `sim`, default): the simulator backend, the engine
//!   in-process with its state on an `rpmb-sim` device image;
//! - [`tee`] (feature `tee`): the libteec backend, the trusted application
//!   in OP-TEE;
//! - [`armor`]: the one-line text forms of blobs, evidence and escrows, and
//!   PEM keys;
//! - [`recovery`]: recovery keys, their PEM forms and the recovery code.
//!
//! Nothing here knows about command lines, exit codes or the daemon: those
//! belong to `teectl` and `teed`.

#[cfg(feature = "tee")]
pub mod tee;

#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
pub mod sim_storage;

pub mod armor;
pub mod backend;
pub mod client;
pub mod recovery;

use hakeys_engine::{Entropy, EntropyError};

/// Entropy from the operating system (`getrandom`), for sealing offline
/// and for the simulator's engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(out).map_err(|_| EntropyError)
    }
}

/// Whether this process runs with effective uid 0. The one place the
/// normal-world crates ask.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
