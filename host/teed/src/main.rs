//! `teed`: the decrypt daemon. Serves unseal, seal, pubkey and status to
//! local callers over a Unix socket, by policy on who they are (kernel
//! credentials, and the Docker container they run in);
//! runs in the foreground and logs to stdout. See `docs/daemon.md`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hakeys_client::backend::BackendKind;
use teed::policy::Policy;
use teed::server::{self, Config, ServeErrorKind};
use teed::{DEFAULT_DOCKER_SOCKET, DEFAULT_POLICY};
use teed_protocol::DEFAULT_SOCKET;

/// `teed`'s exit status for a failure to start (the same numbers as
/// `teectl`'s for the same kinds of failure, see the README).
fn exit_code(kind: ServeErrorKind) -> u8 {
    match kind {
        ServeErrorKind::Internal => 1,
        ServeErrorKind::Config => 2,
        ServeErrorKind::Unavailable => 7,
    }
}

#[derive(Parser)]
#[command(
    name = "teed",
    version,
    about = "The hakeys decrypt daemon: access-controlled unseal for local callers"
)]
struct Cli {
    /// Which key engine to use: the TEE (default when /dev/tee0 exists) or
    /// the in-process simulator.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Simulator state directory [env: TEECTL_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where to listen, unless systemd passes a socket (socket activation).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Mode of the socket file teed creates (octal). Access is decided by
    /// the policy, per caller, so every local user may connect by default.
    #[arg(long, value_name = "OCTAL", default_value = "666", value_parser = parse_mode)]
    socket_mode: u32,
    /// The policy file (TOML).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Engine sessions to keep open (the simulator takes exactly one).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    sessions: u16,
    /// Docker's API socket, asked for the names of callers' containers (one
    /// read-only call: inspect by id). On a board, teed-docker-proxy's socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOCKER_SOCKET)]
    docker_socket: PathBuf,
    /// Check the policy file, print a summary and exit (0: valid, 2: not).
    #[arg(long)]
    check_policy: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BackendArg {
    Sim,
    Tee,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal file mode such as 660"))
}

fn main() -> ExitCode {
    if let Err(e) = hakeys_client::forbid_core_dumps() {
        eprintln!("teed: cannot forbid core dumps ({e}); refusing to run with plaintexts in a dumpable process");
        return ExitCode::from(exit_code(ServeErrorKind::Internal));
    }
    let cli = Cli::parse();
    if cli.check_policy {
        return match Policy::load(&cli.policy) {
            Ok(p) => {
                println!(
                    "{}: valid: {} rules ({} add-ons)",
                    cli.policy.display(),
                    p.rule_count(),
                    p.addon_count()
                );
                for w in p.warnings() {
                    eprintln!("teed: policy warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("teed: policy rejected: {e}");
                ExitCode::from(exit_code(ServeErrorKind::Config))
            }
        };
    }
    let backend = match cli.backend {
        Some(BackendArg::Sim) => BackendKind::Sim,
        Some(BackendArg::Tee) => BackendKind::Tee,
        None => BackendKind::detect(),
    };
    let config = Config {
        socket: cli.socket,
        socket_mode: cli.socket_mode,
        policy_path: cli.policy,
        backend,
        state_dir: cli.state_dir,
        sessions: usize::from(cli.sessions),
        engine_timeout: Duration::from_secs(10),
        docker_socket: cli.docker_socket,
        docker_timeout: Duration::from_secs(2),
    };
    teed::logging::init();
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teed: {e}");
            ExitCode::from(exit_code(e.kind))
        }
    }
}
