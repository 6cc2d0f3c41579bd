//! `teed-docker-proxy`: the one Docker API call teed needs, and nothing else.
//!
//! Whoever can talk to Docker's socket is root on the host (it can start a
//! privileged container with the host's disk mounted). teed needs one
//! read-only call from it: the name of a container, by id. So teed does not
//! get Docker's socket: this small proxy does, and offers teed (alone: its
//! socket is `0600`, owned by teed's user) exactly
//!
//! ```text
//! GET /containers/<64 lowercase hex digits>/json
//! ```
//!
//! Anything else — another method or path, an id prefix or a name, a query,
//! a body — is answered `403` without reaching Docker. Docker's answer is
//! checked (the container asked for, a valid name) and cut down to
//! `{"Id": ..., "Name": ...}`: the container's environment (which holds
//! `SUPERVISOR_TOKEN`s on HA OS), mounts, labels and the rest never reach
//! teed. So a compromised teed learns container names from ids, and nothing
//! more from Docker; the proxy's own input is one short request line from
//! one local user.
//!
//! Bounded like teed: request heads of at most 4 KiB read within 2 s, at
//! most 8 requests at once, each Docker call bounded by its timeout.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::identity::cgroup::ContainerId;
use crate::identity::docker::{ContainerInfo, DockerApi, LookupError, Runtime};

/// The largest request head read.
pub const MAX_REQUEST: usize = 4096;
/// How long a request may take to arrive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests served at once.
pub const MAX_ACTIVE: usize = 8;

/// A refusal: HTTP status and reason.
pub type Refused = (u16, &'static str);

const ONLY: &str = "teed-docker-proxy answers GET /containers/<64-hex id>/json and nothing else";

/// The container id of a request head, if it is the one call offered.
pub fn parse_request(head: &[u8]) -> Result<ContainerId, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Err((400, "not one complete HTTP/1.x request head")),
    }
    if req.method != Some("GET") {
        return Err((403, ONLY));
    }
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            return Err((403, ONLY));
        }
    }
    req.path
        .and_then(|p| p.strip_prefix("/containers/"))
        .and_then(|p| p.strip_suffix("/json"))
        .and_then(ContainerId::parse)
        .ok_or((403, ONLY))
}

fn http(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Bad Gateway",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn message(status: u16, text: &str) -> Vec<u8> {
    http(status, &serde_json::json!({ "message": text }).to_string())
}

/// The answer to a lookup: Docker's, cut down to the id and the name.
pub fn answer(result: Result<ContainerInfo, LookupError>) -> Vec<u8> {
    match result {
        Ok(c) => http(
            200,
            &serde_json::json!({ "Id": c.id.as_str(), "Name": format!("/{}", c.name) }).to_string(),
        ),
        Err(LookupError::NotFound) => message(404, "no such container"),
        Err(LookupError::Failed(m)) => message(502, &m),
    }
}

/// Read one request head (up to the empty line), bounded and timed.
fn read_head(stream: &mut UnixStream) -> Result<Vec<u8>, Refused> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or((400, "the request did not arrive in time"))?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| (400, "unreadable request"))?;
        // Whatever arrives after the empty line (a body, a second request)
        // makes the head incomplete for `parse_request`: refused.
        let want = buf.len().min(MAX_REQUEST + 1 - head.len());
        let n = match stream.read(buf.get_mut(..want).unwrap_or_default()) {
            Ok(0) => return Err((400, "the request ended before its empty line")),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err((400, "the request did not arrive in time")),
        };
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.len() > MAX_REQUEST {
            return Err((400, "the request head is larger than 4096 bytes"));
        }
    }
    Ok(head)
}

fn handle(mut stream: UnixStream, docker: &dyn Runtime) {
    let reply = match read_head(&mut stream).and_then(|h| parse_request(&h)) {
        Ok(id) => answer(docker.inspect(&id)),
        Err((status, why)) => message(status, why),
    };
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.write_all(&reply);
}

/// Serve `listener` until the process is stopped.
pub fn serve(listener: UnixListener, docker: Arc<dyn Runtime>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("teed-docker-proxy: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = stream.write_all(&message(503, "busy; retry"));
            continue;
        }
        let (active2, docker) = (Arc::clone(&active), Arc::clone(&docker));
        let spawned = std::thread::Builder::new()
            .name("proxy".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                handle(stream, docker.as_ref());
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Bind `path` (mode 0600), replacing a stale socket file but never a live
/// one. Call before starting threads.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("{} is already being served", path.display()));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    // Created 0600 from the start (no chmod by path afterwards, which a
    // symlink swapped in between would redirect). The proxy is single-
    // threaded here, so the process-wide umask is changed only for this.
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let l = UnixListener::bind(path);
    rustix::process::umask(old);
    l.map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

/// The Docker API the proxy asks.
pub fn docker(socket: PathBuf) -> Arc<dyn Runtime> {
    Arc::new(DockerApi::new(socket, REQUEST_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::docker::complete_response;

    const A: &str = "1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6";

    #[test]
    fn only_the_one_call_is_let_through() {
        let ok = format!(
            "GET /containers/{A}/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(parse_request(ok.as_bytes()).unwrap().as_str(), A);
        let zero = format!("GET /containers/{A}/json HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(parse_request(zero.as_bytes()).is_ok());
        for bad in [
            format!("POST /containers/{A}/json HTTP/1.1\r\n\r\n"),
            format!("DELETE /containers/{A} HTTP/1.1\r\n\r\n"),
            format!("GET /containers/{A}/json?size=1 HTTP/1.1\r\n\r\n"),
            format!("GET /v1.41/containers/{A}/json HTTP/1.1\r\n\r\n"),
            format!("GET /containers/{}/json HTTP/1.1\r\n\r\n", &A[..12]),
            "GET /containers/homeassistant/json HTTP/1.1\r\n\r\n".into(),
            format!("GET /containers/{A}/logs HTTP/1.1\r\n\r\n"),
            format!("GET /containers/{A}/json/../../images/json HTTP/1.1\r\n\r\n"),
            "GET /containers/json HTTP/1.1\r\n\r\n".into(),
            "GET /info HTTP/1.1\r\n\r\n".into(),
            "POST /containers/create HTTP/1.1\r\n\r\n".into(),
            format!("GET /containers/{A}/json HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            format!("GET /containers/{A}/json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ] {
            assert_eq!(parse_request(bad.as_bytes()).unwrap_err().0, 403, "{bad}");
        }
        for bad in [
            "".to_string(),
            "GET".into(),
            format!("GET /containers/{A}/json HTTP/1.1\r\n\r\nEXTRA"),
            "\u{1}\u{2}\r\n\r\n".into(),
        ] {
            assert_eq!(parse_request(bad.as_bytes()).unwrap_err().0, 400, "{bad:?}");
        }
    }

    #[test]
    fn answers_carry_the_id_and_the_name_only() {
        let id = ContainerId::parse(A).unwrap();
        let r = answer(Ok(ContainerInfo {
            id: id.clone(),
            name: "homeassistant".into(),
        }));
        let r = complete_response(&r, false).unwrap().unwrap();
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"Id": A, "Name": "/homeassistant"}));
        // What teed makes of it.
        assert_eq!(
            crate::identity::docker::parse_inspect(&id, &r.body)
                .unwrap()
                .name,
            "homeassistant"
        );
        let r = answer(Err(LookupError::NotFound));
        assert_eq!(complete_response(&r, false).unwrap().unwrap().status, 404);
        let r = answer(Err(LookupError::Failed("down".into())));
        assert_eq!(complete_response(&r, false).unwrap().unwrap().status, 502);
    }

    /// A runtime that knows one container and counts what reaches it.
    struct One(AtomicUsize);

    impl Runtime for One {
        fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, LookupError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if id.as_str() == A {
                Ok(ContainerInfo {
                    id: id.clone(),
                    name: "addon_core_mosquitto".into(),
                })
            } else {
                Err(LookupError::NotFound)
            }
        }
    }

    #[test]
    fn served_over_a_socket_teed_can_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let l = bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let rt = Arc::new(One(AtomicUsize::new(0)));
        let served: Arc<dyn Runtime> = rt.clone();
        std::thread::spawn(move || serve(l, served));
        let api = DockerApi::new(&path, Duration::from_secs(5));
        let id = ContainerId::parse(A).unwrap();
        assert_eq!(api.inspect(&id).unwrap().name, "addon_core_mosquitto");
        let other = ContainerId::parse(&A.replace('1', "3")).unwrap();
        assert_eq!(api.inspect(&other), Err(LookupError::NotFound));
        // Anything else is refused before the runtime sees it.
        let r =
            crate::identity::docker::get(&path, "/containers/json?all=1", Duration::from_secs(5))
                .unwrap();
        assert_eq!(r.status, 403);
        // A caller that sends half a request and stalls is cut off, and
        // the proxy keeps serving.
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.write_all(b"GET /containers/").unwrap();
        assert_eq!(api.inspect(&id).unwrap().name, "addon_core_mosquitto");
        let mut rest = Vec::new();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.read_to_end(&mut rest).unwrap();
        assert!(
            rest.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(rt.0.load(Ordering::SeqCst), 3);
        // A live socket is not taken over.
        assert!(bind(&path).unwrap_err().contains("already"));
    }
}

#[cfg(test)]
mod garbage {
    //! The decoders the proxy and teed run on bytes from another process
    //! (the proxy's request heads from teed's user, Docker's answers, the
    //! cgroup file) never panic: mutations of valid inputs, and noise.
    use super::*;
    use crate::identity::{cgroup, docker};

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// `seed` with a few random bytes replaced, inserted, removed or cut.
    fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(v.len() + 1);
            let byte = match rng.below(4) {
                0 => b"\r\n:/{}\"0 "[rng.below(9)],
                _ => rng.next() as u8,
            };
            match rng.below(4) {
                0 if at < v.len() => v[at] = byte,
                1 => v.insert(at, byte),
                2 if at < v.len() => {
                    v.remove(at);
                }
                _ => v.truncate(at),
            }
        }
        v
    }

    #[test]
    fn decoders_never_panic() {
        const A: &str = "1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6";
        let id = ContainerId::parse(A).unwrap();
        let body = format!(r#"{{"Id":"{A}","Name":"/homeassistant","Config":{{"Env":["A=b"]}}}}"#);
        let seeds: Vec<Vec<u8>> = vec![
            format!("GET /containers/{A}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            format!("0::/system.slice/docker-{A}.scope\n4:memory:/docker/{A}\n").into_bytes(),
            body.clone().into_bytes(),
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..60_000 {
            let input = if round % 10 == 0 {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            } else {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed)
            };
            let _ = parse_request(&input);
            let _ = docker::complete_response(&input, round % 2 == 0);
            let _ = docker::parse_inspect(&id, &input);
            if let Ok(text) = std::str::from_utf8(&input) {
                let _ = cgroup::parse(text);
            }
        }
    }
}
