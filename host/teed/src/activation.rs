//! systemd integration: socket activation (`LISTEN_PID`/`LISTEN_FDS`, the
//! listening socket as fd 3) and readiness notification (`NOTIFY_SOCKET`),
//! without unsafe code of our own (the `listenfd` crate adopts the fd after
//! checking it is a listening Unix stream socket).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener};

/// The listening socket systemd passed to this process, if it passed one.
///
/// Only a `LISTEN_PID` naming this very process counts (a stray
/// `LISTEN_FDS` inherited from elsewhere is ignored). Exactly one socket is
/// expected. The variables are removed from the environment so that
/// nothing started later inherits them.
pub fn listener_from_systemd() -> Result<Option<UnixListener>, String> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .ok_or("socket activation: LISTEN_PID is set but LISTEN_FDS is missing or not a number")?;
    if count != 1 {
        return Err(format!(
            "socket activation: systemd passed {count} sockets; teed takes exactly one (one ListenStream= in teed.socket)"
        ));
    }
    let mut fds = listenfd::ListenFd::from_env();
    fds.take_unix_listener(0)
        .map_err(|e| format!("socket activation: fd 3 is not a listening Unix stream socket: {e}"))?
        .ok_or_else(|| "socket activation: no socket at fd 3".to_string())
        .map(Some)
}

/// Tell systemd (`Type=notify`) about a state change, e.g. `READY=1`.
/// Does nothing when not started by systemd; failures are ignored (the
/// daemon works the same without them).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
                let _ = sock.send_to_addr(state.as_bytes(), &addr);
            }
        }
        Some((b'/', _)) => {
            let _ = sock.send_to(state.as_bytes(), &path);
        }
        _ => {}
    }
}
