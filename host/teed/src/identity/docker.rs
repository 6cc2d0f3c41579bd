//! The one call teed makes to the container runtime: Docker's read-only
//! inspect, `GET /containers/<id>/json`, over a Unix socket (Docker's
//! `/run/docker.sock`, or `teed-docker-proxy`'s socket, which answers the
//! same call and nothing else).
//!
//! HTTP/1.1 by hand over `std`'s `UnixStream`, with `httparse` for the
//! response head: one request (`Connection: close`), a deadline over the
//! whole exchange (connect included), a bounded response (Content-Length,
//! chunked or until the end of the stream). Of the answer only `Id` and
//! `Name` are read. The answer also holds the container's environment,
//! which on HA OS carries secrets (`SUPERVISOR_TOKEN`): the buffers that
//! hold it are wiped after use and nothing of it is ever logged or put in
//! an error.
//!
//! Labels are deliberately not used to identify anyone: a container's
//! labels include those of its image, which an add-on's author writes; its
//! name is set by whoever creates the container (the Supervisor).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::cgroup::ContainerId;

/// The largest answer read (an inspect is a few KiB; one with many mounts,
/// labels and environment variables some tens of KiB).
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// The longest container name accepted (Docker sets no limit; names on HA OS
/// are short).
pub const MAX_NAME: usize = 128;

/// What the runtime says about a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    /// The name, without Docker's leading `/`.
    pub name: String,
}

/// Why a container could not be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The runtime knows no container with this id.
    NotFound,
    /// The runtime could not be asked, or its answer was not usable. One
    /// line, never any of the answer's content.
    Failed(String),
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound => f.write_str("the container runtime knows no such container"),
            LookupError::Failed(m) => f.write_str(m),
        }
    }
}

/// A container runtime that can name a container by its id.
pub trait Runtime: Send + Sync {
    fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, LookupError>;
}

/// Docker's API on a Unix socket.
#[derive(Clone, Debug)]
pub struct DockerApi {
    socket: PathBuf,
    timeout: Duration,
}

/// A Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// [`MAX_NAME`] characters; Docker's own rule asks for at least two).
pub fn is_container_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= MAX_NAME
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
}

/// The container of an inspect answer's body, checked to be the one asked
/// for. Docker resolves `/containers/<x>/json` by full id, then by name,
/// then by id prefix: a container *named* like the 64-hex id of a removed
/// one would otherwise answer for it.
pub fn parse_inspect(asked: &ContainerId, body: &[u8]) -> Result<ContainerInfo, LookupError> {
    let bad = |what: &str| LookupError::Failed(format!("the container runtime's answer {what}"));
    let v: Inspect =
        serde_json::from_slice(body).map_err(|_| bad("is not a container's JSON description"))?;
    if v.id != asked.as_str() {
        return Err(bad("is about another container"));
    }
    let name = v.name.strip_prefix('/').unwrap_or(&v.name);
    if !is_container_name(name) {
        return Err(bad("has no usable container name"));
    }
    Ok(ContainerInfo {
        id: asked.clone(),
        name: name.to_owned(),
    })
}

/// An HTTP response, complete.
pub struct Response {
    pub status: u16,
    /// The body (de-chunked); wiped on drop.
    pub body: Zeroizing<Vec<u8>>,
}

/// Is `buf` a complete response yet? `Ok(None)`: more bytes needed (at the
/// end of the stream, that is an error the caller reports).
pub fn complete_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP response ({e})")),
    };
    let status = head.code.ok_or("an HTTP response without a status")?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = std::str::from_utf8(h.value).map_err(|_| "a bad Transfer-Encoding")?;
            chunked = v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("a bad Content-Length")?;
            length = Some(n);
        }
    }
    let rest = buf.get(head_len..).unwrap_or_default();
    if chunked {
        return match dechunk(rest)? {
            Some(body) => Ok(Some(Response { status, body })),
            None => Ok(None),
        };
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response {
            status,
            body: Zeroizing::new(rest.get(..n).unwrap_or_default().to_vec()),
        })),
        Some(_) => Ok(None),
        None if eof => Ok(Some(Response {
            status,
            body: Zeroizing::new(rest.to_vec()),
        })),
        None => Ok(None),
    }
}

/// Decode a chunked body (RFC 9112 §7.1): `Ok(None)` if incomplete.
fn dechunk(mut data: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let mut out = Zeroizing::new(Vec::new());
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(data.get(..eol).unwrap_or_default())
            .map_err(|_| "a bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a bad chunk size")?;
        data = data.get(eol + 2..).unwrap_or_default();
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(out));
                }
                data = data.get(eol + 2..).unwrap_or_default();
            }
        }
        if size > MAX_RESPONSE || out.len() + size > MAX_RESPONSE {
            return Err("an HTTP body over the size limit".into());
        }
        let Some(chunk) = data.get(..size) else {
            return Ok(None);
        };
        match data.get(size..size + 2) {
            Some(b"\r\n") => {}
            Some(_) => return Err("a chunk without its CRLF".into()),
            None => return Ok(None),
        }
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Connect to `path` without waiting past `deadline` (a Unix socket's
/// `connect` blocks while the listener's backlog is full).
fn connect(path: &Path, deadline: Instant) -> Result<UnixStream, String> {
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fail = |e: Errno| format!("cannot connect to {}: {e}", path.display());
    let addr = SocketAddrUnix::new(path).map_err(fail)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(fail)?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::AGAIN | Errno::INTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Errno::AGAIN) => {
                return Err(format!(
                    "cannot connect to {}: it does not accept connections (timed out)",
                    path.display()
                ))
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| format!("cannot use the connection to {}: {e}", path.display()))?;
    Ok(stream)
}

/// One GET request over a fresh connection to `socket`, all of it within
/// `timeout`.
pub fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no complete answer from {} in time", socket.display()))
    };
    let mut stream = connect(socket, deadline)?;
    let io = |e: std::io::Error| format!("talking to {}: {e}", socket.display());
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: teed\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(io)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(64 * 1024));
    let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
    loop {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        let n = match stream.read(&mut chunk[..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no complete answer from {} in time",
                    socket.display()
                ))
            }
            Err(e) => return Err(io(e)),
        };
        if buf.len() + n > MAX_RESPONSE {
            return Err(format!(
                "the answer from {} is larger than {MAX_RESPONSE} bytes",
                socket.display()
            ));
        }
        if buf.len() + n > buf.capacity() {
            // Grow by hand, so that the old buffer is wiped too.
            let mut bigger = Zeroizing::new(Vec::with_capacity((buf.len() + n) * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let answer = complete_response(&buf, n == 0)
            .map_err(|e| format!("{} sent {e}", socket.display()))?;
        match answer {
            Some(r) => return Ok(r),
            None if n == 0 => {
                return Err(format!(
                    "{} closed the connection in the middle of its answer",
                    socket.display()
                ))
            }
            None => {}
        }
    }
}

impl DockerApi {
    /// Docker's API on `socket`, each call bounded by `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> DockerApi {
        DockerApi {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket asked.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Runtime for DockerApi {
    fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, LookupError> {
        let r = get(
            &self.socket,
            &format!("/containers/{id}/json"),
            self.timeout,
        )
        .map_err(LookupError::Failed)?;
        match r.status {
            200 => parse_inspect(id, &r.body),
            404 => Err(LookupError::NotFound),
            code => Err(LookupError::Failed(format!(
                "the container runtime at {} answered HTTP {code}",
                self.socket.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    const A: &str = "1eadbec5c29449835a2d80f19b69220672308202e2a4cc6647ba8e20b0727ea6";

    fn a() -> ContainerId {
        ContainerId::parse(A).unwrap()
    }

    fn inspect_json(id: &str, name: &str) -> String {
        format!(
            r#"{{"Id":"{id}","Created":"2026-11-29T08:06:08Z","State":{{"Status":"running","Running":true,"Pid":23395}},"Name":"{name}","Config":{{"Env":["SUPERVISOR_TOKEN=t0ken"],"Labels":{{"io.hass.type":"addon"}}}}}}"#
        )
    }

    #[test]
    fn container_names() {
        for ok in [
            "homeassistant",
            "addon_core_mosquitto",
            "app_x",
            "a.b-c_d",
            "A1",
        ] {
            assert!(is_container_name(ok), "{ok}");
        }
        for bad in ["", "_x", "-x", ".x", "a/b", "a b", "é", &"a".repeat(129)] {
            assert!(!is_container_name(bad), "{bad}");
        }
    }

    #[test]
    fn inspect_answers_are_checked() {
        assert_eq!(
            parse_inspect(&a(), inspect_json(A, "/homeassistant").as_bytes()),
            Ok(ContainerInfo {
                id: a(),
                name: "homeassistant".into()
            })
        );
        // Another container (a name that looks like the asked id).
        let other = A.replace('1', "2");
        let e = parse_inspect(&a(), inspect_json(&other, "/x").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("another container"));
        for body in [
            inspect_json(A, "/"),
            inspect_json(A, "/a b"),
            inspect_json(A, "/../x"),
            "[]".into(),
            "{".into(),
            r#"{"Id":"x"}"#.into(),
        ] {
            let e = parse_inspect(&a(), body.as_bytes()).unwrap_err();
            assert!(!e.to_string().contains("t0ken"));
        }
    }

    #[test]
    fn responses_by_length_chunks_and_end_of_stream() {
        let json = inspect_json(A, "/homeassistant");
        let by_length = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let r = complete_response(by_length.as_bytes(), false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, json.as_bytes()));
        // Every strict prefix is incomplete.
        for cut in [0, 10, by_length.len() - 1] {
            assert!(complete_response(&by_length.as_bytes()[..cut], false)
                .unwrap()
                .is_none());
        }
        // Chunked, as Docker 20.10 sends an inspect (with an extension and
        // a trailer).
        let (x, y) = json.split_at(100);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{x}\r\n{:x};ext=1\r\n{y}\r\n0\r\nTrailer: t\r\n\r\n",
            x.len(),
            y.len()
        );
        let r = complete_response(chunked.as_bytes(), false)
            .unwrap()
            .unwrap();
        assert_eq!(&r.body[..], json.as_bytes());
        for cut in [60, chunked.len() - 1] {
            assert!(complete_response(&chunked.as_bytes()[..cut], false)
                .unwrap()
                .is_none());
        }
        // Neither: the body runs to the end of the stream.
        let raw = "HTTP/1.0 404 Not Found\r\n\r\n{}";
        assert!(complete_response(raw.as_bytes(), false).unwrap().is_none());
        let r = complete_response(raw.as_bytes(), true).unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"{}"[..]));
        // Garbage.
        for bad in [
            "SSH-2.0-x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd",
        ] {
            assert!(complete_response(bad.as_bytes(), true).is_err(), "{bad}");
        }
    }

    /// A one-shot server on a Unix socket that answers with `answer` (or
    /// nothing at all, if `None`) after reading the request head.
    fn serve_once(
        dir: &Path,
        answer: Option<String>,
    ) -> (PathBuf, std::thread::JoinHandle<String>) {
        let path = dir.join("d.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap() == 0 {
                    break;
                }
                req.push(b[0]);
            }
            match answer {
                Some(a) => {
                    // Byte by byte: the reader must reassemble.
                    for c in a.as_bytes().chunks(7) {
                        let _ = s.write_all(c);
                    }
                }
                None => std::thread::sleep(Duration::from_millis(600)),
            }
            String::from_utf8(req).unwrap()
        });
        (path, h)
    }

    #[test]
    fn one_inspect_call_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let json = inspect_json(A, "/addon_core_mosquitto");
        let (path, h) = serve_once(
            dir.path(),
            Some(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )),
        );
        let api = DockerApi::new(&path, Duration::from_secs(5));
        assert_eq!(api.inspect(&a()).unwrap().name, "addon_core_mosquitto");
        let req = h.join().unwrap();
        assert!(
            req.starts_with(&format!("GET /containers/{A}/json HTTP/1.1\r\n")),
            "{req}"
        );
        assert!(req.contains("Connection: close\r\n"));
    }

    #[test]
    fn not_found_silence_and_absence_are_errors_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = serve_once(
            dir.path(),
            Some("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".into()),
        );
        let api = DockerApi::new(&path, Duration::from_secs(5));
        assert_eq!(api.inspect(&a()), Err(LookupError::NotFound));
        h.join().unwrap();
        std::fs::remove_file(&path).unwrap();
        // A server that never answers: an error within the timeout.
        let (path, h) = serve_once(dir.path(), None);
        let api = DockerApi::new(&path, Duration::from_millis(200));
        let t = Instant::now();
        let e = api.inspect(&a()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("in time"), "{e}");
        h.join().unwrap();
        // No socket at all.
        let api = DockerApi::new(dir.path().join("none.sock"), Duration::from_secs(1));
        let e = api.inspect(&a()).unwrap_err();
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }
}
