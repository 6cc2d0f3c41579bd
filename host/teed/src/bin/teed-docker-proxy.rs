//! `teed-docker-proxy`: offers teed the one Docker API call it needs
//! (`GET /containers/<id>/json`, cut down to the id and the name) so that
//! teed never holds Docker's socket. See `teed::docker_proxy` and
//! `docs/security-model.md`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use teed::{docker_proxy, DEFAULT_DOCKER_SOCKET};

#[derive(Parser)]
#[command(
    name = "teed-docker-proxy",
    version,
    about = "Offers teed Docker's container inspect by id, and nothing else"
)]
struct Cli {
    /// Where to listen (mode 0600), unless systemd passes a socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/hakeys/docker-proxy.sock"
    )]
    listen: PathBuf,
    /// Docker's API socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOCKER_SOCKET)]
    docker_socket: PathBuf,
}

fn main() -> ExitCode {
    if let Err(e) = hakeys_client::forbid_core_dumps() {
        eprintln!("teed-docker-proxy: cannot forbid core dumps: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    teed::logging::init();
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("teed-docker-proxy: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let (listener, bound) = match teed::activation::listener_from_systemd() {
        Ok(Some(l)) => (l, None),
        Ok(None) => match docker_proxy::bind(&cli.listen) {
            Ok(l) => (l, Some(cli.listen.clone())),
            Err(e) => {
                eprintln!("teed-docker-proxy: {e}");
                return ExitCode::from(7);
            }
        },
        Err(e) => {
            eprintln!("teed-docker-proxy: {e}");
            return ExitCode::from(7);
        }
    };
    let stop = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                if let Some(p) = &bound {
                    let _ = std::fs::remove_file(p);
                }
                log::info!("teed-docker-proxy: stopped");
                log::logger().flush();
                std::process::exit(0);
            }
        });
    if let Err(e) = stop {
        eprintln!("teed-docker-proxy: cannot start the signal thread: {e}");
        return ExitCode::from(1);
    }
    log::info!(
        "teed-docker-proxy: serving GET /containers/<id>/json from {}",
        cli.docker_socket.display()
    );
    teed::activation::notify(&[sd_notify::NotifyState::Ready]);
    docker_proxy::serve(listener, docker_proxy::docker(cli.docker_socket));
    ExitCode::SUCCESS
}
