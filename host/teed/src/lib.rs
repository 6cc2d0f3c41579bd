//! `teed`, the decrypt daemon: the only process that talks to the key engine
//! at run time. Callers (Home Assistant Core, the Supervisor, add-ons) talk
//! to it over a Unix socket; it identifies them by the kernel's peer
//! credentials and, for callers in containers, by the container's name, and
//! lets each use only the namespaces and operations the policy grants it. The protocol is the `teed-protocol` crate; the policy
//! format and the operations guide are in `docs/daemon.md`.
//!
//! The modules follow the request path:
//!
//! - [`server`]: sockets, threads, signals and I/O — listening, connection
//!   slots, SIGHUP reload, shutdown;
//! - [`identity`]: who is calling — peer credentials and pidfd, the cgroup,
//!   the container's name from Docker (cached) — as data for the decision;
//! - [`framing`]: bounded request lines with idle and request timeouts;
//! - [`decision`]: the trust decision, pure: (caller, line, time, policy,
//!   limits state) to (answer, audit line), over an engine trait;
//! - [`policy`]: the policy file (TOML) and its evaluation;
//! - [`limits`]: per-caller request rate, connection and failed-unseal limits;
//! - [`engine`]: the bounded pool of engine sessions, each owned by one thread,
//!   with reconnection after a retryable transport failure;
//! - [`activation`]: systemd socket activation and readiness notification;
//! - [`logging`]: the `log` facade's output (stdout, one line per record).
//!
//! [`docker_proxy`] is `teed-docker-proxy`'s logic: the one Docker API call
//! teed needs, offered so that teed itself never holds Docker's socket.

pub mod activation;
pub mod decision;
pub mod docker_proxy;
pub mod engine;
pub mod framing;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod policy;
pub mod server;

/// The policy file `teed` reads by default.
pub const DEFAULT_POLICY: &str = "/etc/hakeys/policy.toml";
/// Docker's API socket, where teed asks the names of callers' containers
/// by default.
pub const DEFAULT_DOCKER_SOCKET: &str = "/run/docker.sock";
