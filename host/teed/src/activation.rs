//! systemd integration: socket activation (`LISTEN_PID`/`LISTEN_FDS`, the
//! listening socket as fd 3) and readiness notification (`NOTIFY_SOCKET`),
//! without unsafe code of our own (the `listenfd` crate adopts the fd after
//! checking it is a listening Unix stream socket; `sd-notify` sends the
//! notifications).

use std::os::unix::net::UnixListener;

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

/// Tell systemd (`Type=notify`) about a state change, e.g. `READY=1`,
/// through the `sd-notify` crate. Does nothing when not started by
/// systemd; failures are ignored (the daemon works the same without them).
pub fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(false, states);
}
