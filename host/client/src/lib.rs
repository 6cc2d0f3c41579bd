//! The normal-world side of hakeys.
//!
//! - [`client`]: a typed client over any [`client::Transport`] that carries
//!   encoded protocol messages to the key engine;
//! - [`sim`]: the simulator backend, the engine in-process with its state on
//!   an `rpmb-sim` device image;
//! - [`armor`]: the one-line text forms of blobs and evidence, and PEM keys;
//! - [`exit`]: the documented exit codes of the command-line tools.
#![forbid(unsafe_code)]

#[cfg(feature = "tee")]
pub mod tee;

pub mod armor;
pub mod backend;
pub mod client;
pub mod daemon;
pub mod exit;
pub mod sim;
pub mod sim_storage;
