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

/// Make sure this process never leaves a core dump (which could hold
/// plaintexts or request buffers): not dumpable (`PR_SET_DUMPABLE` 0, which
/// also keeps other processes of the same user from ptrace-attaching or
/// reading its memory through /proc) and a zero core-size limit. Called
/// first thing by `teectl` and `teed`; the units also set `LimitCORE=0`.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    use rustix::process::{setrlimit, DumpableBehavior, Resource, Rlimit};
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_forbidden() {
        super::forbid_core_dumps().unwrap();
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
    }
}
