//! `teed`, the decrypt daemon: the only process that talks to the key engine
//! at run time. Callers (Home Assistant Core, the Supervisor, add-ons) talk
//! to it over a Unix socket; it identifies them by the kernel's peer
//! credentials and lets each use only the namespaces and operations the
//! policy grants it. The protocol is the `teed-protocol` crate; the policy
//! format and the operations guide are in `docs/daemon.md`.
//!
//! The modules follow the request path:
//!
//! - [`server`]: sockets, threads, signals and I/O — listening, peer
//!   credentials, connection slots, SIGHUP reload, shutdown;
//! - [`framing`]: bounded request lines with idle and request timeouts;
//! - [`decision`]: the trust decision, pure: (caller, line, time, policy,
//!   limits state) to (answer, audit line), over an engine trait;
//! - [`policy`]: the policy file (TOML) and its evaluation;
//! - [`limits`]: per-caller request rate, connection and failed-unseal limits;
//! - [`engine`]: the bounded pool of engine sessions, each owned by one thread,
//!   with reconnection after a retryable transport failure;
//! - [`activation`]: systemd socket activation and readiness notification;
//! - [`logging`]: the `log` facade's output (stdout, one line per record).

pub mod activation;
pub mod decision;
pub mod engine;
pub mod framing;
pub mod limits;
pub mod logging;
pub mod policy;
pub mod server;

/// The policy file `teed` reads by default.
pub const DEFAULT_POLICY: &str = "/etc/hakeys/policy.toml";
