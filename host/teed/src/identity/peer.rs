//! What the kernel says about the process at the other end of a connection:
//! its uid, gid and pid (`SO_PEERCRED`, recorded at `connect()`), and the
//! cgroup that places it in a container or on the host.
//!
//! **Race-free, with `SO_PEERPIDFD` (Linux ≥ 6.5).** A pid is only a
//! number: the caller may exit and its number be given to another process
//! before teed reads `/proc/<pid>/cgroup`. So teed takes the caller's
//! *pidfd* from the socket (`SO_PEERPIDFD`, which refers to the process that
//! connected, never to a later one), reads `/proc/<pid>/cgroup`, and then
//! checks on the pidfd that the process has not exited. A live process keeps
//! its pid, so what was read is the caller's. If it has exited, the
//! connection is not identified (its requests are refused; a client has no
//! reason to hand a connection to another process and exit).
//!
//! **Older kernels (< 6.5)**, where `getsockopt` answers `ENOPROTOOPT`: teed
//! opens a pidfd from the pid (`pidfd_open`, Linux ≥ 5.3) and reads the
//! process's start time from `/proc/<pid>/stat` before and after the cgroup,
//! refusing the connection if the two differ, if the process started after
//! the connection was accepted, or if the pidfd says it has exited. What
//! remains is a window between the caller's `connect()` and teed's
//! `accept()`: a caller that connects and exits at once, whose pid is then
//! reused by a new process started before the accept, would be identified
//! as that new process. Exploiting it takes the pid counter to wrap around
//! (up to `pid_max`, 4194304 on 64-bit) inside that window and the reused
//! pid to land in the container to impersonate; teed logs at start which
//! method it uses. HA OS 17 runs Linux 6.12.
//!
//! Nothing here decides anything: the result is data for the policy.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::cgroup::{self, Place};

/// The largest `/proc/<pid>/cgroup` read.
const MAX_CGROUP_FILE: u64 = 64 * 1024;

/// How the caller's process was pinned while its cgroup was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `SO_PEERPIDFD`: the connecting process itself (Linux ≥ 6.5).
    PeerPidfd,
    /// The pid from `SO_PEERCRED`, re-checked by start time (older kernels).
    PidOnly,
}

/// The kernel's view of a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPeer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Where the caller runs, or why that could not be told (the caller
    /// exited, its `/proc` entry is not readable, its cgroups disagree).
    pub place: Result<Place, String>,
    pub method: Method,
}

/// Has the process behind `pidfd` exited? (A pidfd becomes readable when
/// its process exits.) An error counts as "exited": fail closed.
fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

fn read_bounded(path: &str) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut s = String::new();
    f.take(MAX_CGROUP_FILE)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(s)
}

/// Field 22 of `/proc/<pid>/stat`: the start time, in clock ticks since boot.
fn start_time(pid: i32) -> Result<u64, String> {
    let stat = read_bounded(&format!("/proc/{pid}/stat"))?;
    // `pid (comm) state ...`: comm may hold anything, even ')', so count
    // from the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/stat has no start time"))
}

/// Now, in clock ticks since boot (the unit of [`start_time`]).
fn now_ticks() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(hz)
        .saturating_add(nanos.saturating_mul(hz) / 1_000_000_000)
}

/// The caller's pidfd, or why there is none: `Ok(None)` when this kernel
/// has no `SO_PEERPIDFD`.
fn peer_pidfd(stream: &UnixStream) -> Result<Option<OwnedFd>, String> {
    use nix::errno::Errno;
    match nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerPidfd) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOPROTOOPT) => Ok(None),
        Err(e) => Err(format!("the caller's process is gone (SO_PEERPIDFD: {e})")),
    }
}

/// Does this kernel give the caller's pidfd (`SO_PEERPIDFD`)? Asked once
/// at start, on a socket pair of teed's own, to say which method is used.
pub fn kernel_has_peer_pidfd() -> bool {
    UnixStream::pair()
        .ok()
        .is_some_and(|(a, _b)| matches!(peer_pidfd(&a), Ok(Some(_))))
}

/// Identify the caller at the other end of `stream` (just accepted). Fails
/// only if the kernel gives no peer credentials at all.
pub fn identify(stream: &UnixStream) -> std::io::Result<KernelPeer> {
    peer_with(stream, |pid, accepted| match peer_pidfd(stream) {
        Ok(Some(pidfd)) => (Method::PeerPidfd, place_by_pidfd(pid, &pidfd)),
        Ok(None) => (Method::PidOnly, place_by_pid(pid, accepted)),
        Err(e) => (Method::PeerPidfd, Err(e)),
    })
}

/// Identify with a given method (tests exercise the older kernels' path
/// on a new one).
pub fn identify_with(stream: &UnixStream, method: Method) -> std::io::Result<KernelPeer> {
    peer_with(stream, |pid, accepted| {
        let place = match method {
            Method::PeerPidfd => match peer_pidfd(stream) {
                Ok(Some(pidfd)) => place_by_pidfd(pid, &pidfd),
                Ok(None) => Err("this kernel has no SO_PEERPIDFD".into()),
                Err(e) => Err(e),
            },
            Method::PidOnly => place_by_pid(pid, accepted),
        };
        (method, place)
    })
}

/// The kernel's credentials for `stream`'s peer, and the method and place
/// that `locate` finds for its pid (given the tick it was accepted at).
fn peer_with(
    stream: &UnixStream,
    locate: impl FnOnce(i32, u64) -> (Method, Result<Place, String>),
) -> std::io::Result<KernelPeer> {
    let accepted = now_ticks();
    let c = rustix::net::sockopt::socket_peercred(stream)?;
    let (uid, gid, pid) = (c.uid.as_raw(), c.gid.as_raw(), c.pid.as_raw_pid());
    let (method, place) = locate(pid, accepted);
    Ok(KernelPeer {
        uid,
        gid,
        pid,
        place,
        method,
    })
}

fn visible(pid: i32) -> Result<(), String> {
    if pid <= 0 {
        // SO_PEERCRED gives 0 for a process in a pid namespace teed cannot
        // see into (teed runs in the host's).
        return Err("the caller's process is not visible to teed".into());
    }
    Ok(())
}

fn place_by_pidfd(pid: i32, pidfd: &OwnedFd) -> Result<Place, String> {
    visible(pid)?;
    let gone = || "the caller exited before it could be identified".to_string();
    let text = match read_bounded(&format!("/proc/{pid}/cgroup")) {
        Ok(t) => t,
        Err(_) if exited(pidfd) => return Err(gone()),
        Err(e) => return Err(e),
    };
    if exited(pidfd) {
        return Err(gone());
    }
    cgroup::parse(&text)
}

fn place_by_pid(pid: i32, accepted: u64) -> Result<Place, String> {
    visible(pid)?;
    let gone = || "the caller exited before it could be identified".to_string();
    let pidfd = match rustix::process::Pid::from_raw(pid)
        .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
    {
        Some(Ok(fd)) => Some(fd),
        // Linux < 5.3: no pidfd_open; the start time is all there is.
        Some(Err(rustix::io::Errno::NOSYS)) => None,
        _ => return Err(gone()),
    };
    let before = start_time(pid).map_err(|_| gone())?;
    let text = read_bounded(&format!("/proc/{pid}/cgroup")).map_err(|_| gone())?;
    let after = start_time(pid).map_err(|_| gone())?;
    if before != after || before > accepted || pidfd.as_ref().is_some_and(exited) {
        return Err(gone());
    }
    cgroup::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_on_this_host_is_identified_both_ways() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = rustix::process::getpid().as_raw_pid();
        let own = cgroup::parse(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
        for method in [Method::PeerPidfd, Method::PidOnly] {
            let p = identify_with(&a, method).unwrap();
            assert_eq!(p.pid, me);
            assert_eq!(p.uid, rustix::process::getuid().as_raw());
            assert_eq!(p.gid, rustix::process::getgid().as_raw());
            assert_eq!(p.place, own, "{method:?}");
        }
        // The race-free method wherever the kernel has it (Linux >= 6.5).
        let want = if kernel_has_peer_pidfd() {
            Method::PeerPidfd
        } else {
            Method::PidOnly
        };
        assert_eq!(identify(&a).unwrap().method, want);
    }

    #[test]
    fn a_caller_that_exited_is_not_identified() {
        // A child connects to a listener, then exits before teed looks.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!(
                "import socket; s=socket.socket(socket.AF_UNIX); s.connect({:?})",
                path.display().to_string()
            ))
            .spawn()
            .unwrap();
        let (s, _) = l.accept().unwrap();
        child.wait().unwrap();
        for method in [Method::PeerPidfd, Method::PidOnly] {
            let p = identify_with(&s, method).unwrap();
            let e = p.place.unwrap_err();
            assert!(
                e.contains("gone") || e.contains("exited"),
                "{method:?}: {e}"
            );
        }
    }

    #[test]
    fn start_times_parse_around_odd_process_names() {
        let me = rustix::process::getpid().as_raw_pid();
        let t = start_time(me).unwrap();
        assert!(t <= now_ticks());
        assert!(start_time(i32::MAX).is_err());
    }
}
