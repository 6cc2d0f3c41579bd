//! `teed`, the decrypt daemon: the only process that talks to the key engine
//! at run time. Callers (Home Assistant Core, the Supervisor, add-ons) talk
//! to it over a Unix socket; it identifies them by the kernel's peer
//! credentials and lets each use only the namespaces and operations the
//! policy grants it. The protocol, the policy format and the operations
//! guide are in `docs/daemon.md`.
//!
//! The modules follow the request path:
//!
//! - [`protocol`]: the socket protocol (newline-delimited JSON, version 1):
//!   the strict, pure request decoder (fuzzed), response encoding, status names;
//! - [`server`]: listening, peer credentials, per-connection framing and
//!   timeouts, policy and limit checks, audit lines, SIGHUP reload;
//! - [`policy`]: the policy file (TOML) and its evaluation;
//! - [`limits`]: per-caller request rate, connection and failed-unseal limits;
//! - [`engine`]: the bounded pool of engine sessions, each owned by one thread,
//!   with reconnection after a retryable transport failure;
//! - [`activation`]: systemd socket activation and readiness notification;
//! - [`client`]: a client for the protocol (used by `teectl --via-daemon`).

pub mod activation;
pub mod client;
pub mod engine;
pub mod limits;
pub mod policy;
pub mod protocol;
pub mod server;

/// Where `teed` listens and `teectl` looks for it by default.
pub const DEFAULT_SOCKET: &str = "/run/hakeys/teed.sock";
/// Environment variable naming the daemon's socket (for `teectl` and clients).
pub const SOCKET_ENV: &str = "HAKEYS_SOCKET";
/// The policy file `teed` reads by default.
pub const DEFAULT_POLICY: &str = "/etc/hakeys/policy.toml";
