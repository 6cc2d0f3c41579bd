//! A client for the daemon's socket protocol (`docs/daemon.md`), used by
//! `teectl --via-daemon` and the benchmark harness. One connection, one
//! request at a time; responses are read with a bound and a timeout.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::protocol::{Code, StatusInfo, MAX_LINE};
use crate::exit;

/// Why a call through the daemon failed.
#[derive(Debug)]
pub enum DaemonError {
    /// The daemon could not be reached, or the connection broke.
    Unreachable(String),
    /// The daemon's answer does not follow the protocol.
    Protocol(String),
    /// The daemon answered with an error status.
    Refused {
        code: Code,
        message: String,
        retry_after_ms: Option<u64>,
    },
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Unreachable(m) => write!(f, "daemon unavailable: {m}"),
            DaemonError::Protocol(m) => write!(f, "invalid answer from the daemon: {m}"),
            DaemonError::Refused { code, message, .. } => {
                if message.is_empty() {
                    f.write_str(code.name())
                } else {
                    f.write_str(message)
                }
            }
        }
    }
}

impl DaemonError {
    /// The documented `teectl` exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Unreachable(_) => exit::UNAVAILABLE,
            DaemonError::Protocol(_) => exit::INTERNAL,
            DaemonError::Refused { code, .. } => code.exit_code(),
        }
    }

    /// The status code, when the daemon answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            DaemonError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The daemon's socket: `explicit`, else `$HAKEYS_SOCKET`, else
/// [`super::DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(super::SOCKET_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(super::DEFAULT_SOCKET))
}

/// Run `f` on a new connection to `socket`; while the daemon answers
/// `retry` or `busy` (the engine reconnecting), wait and try again, up to
/// `attempts` times in all.
pub fn with_retries<T>(
    socket: &Path,
    attempts: u32,
    mut f: impl FnMut(&mut DaemonClient) -> Result<T, DaemonError>,
) -> Result<T, DaemonError> {
    let mut left = attempts.max(1);
    loop {
        left -= 1;
        let r = DaemonClient::connect(socket, Duration::from_secs(30)).and_then(|mut d| f(&mut d));
        match r {
            Err(DaemonError::Refused {
                code: Code::Retry | Code::Engine(hakeys_proto::Status::Busy),
                retry_after_ms,
                ..
            }) if left > 0 => {
                std::thread::sleep(Duration::from_millis(
                    retry_after_ms.unwrap_or(200).clamp(10, 2000),
                ));
            }
            other => return other,
        }
    }
}

/// A connection to `teed`.
pub struct DaemonClient {
    stream: UnixStream,
    buf: Zeroizing<Vec<u8>>,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn field_str(map: &Map<String, Value>, name: &str) -> Result<String, DaemonError> {
    map.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| DaemonError::Protocol(format!("no `{name}` in the answer")))
}

impl DaemonClient {
    /// Connect to the daemon at `path`; reads and writes time out after
    /// `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<DaemonClient, DaemonError> {
        let stream = UnixStream::connect(path)
            .map_err(|e| DaemonError::Unreachable(format!("{}: {e}", path.display())))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
        Ok(DaemonClient {
            stream,
            buf: Zeroizing::new(Vec::with_capacity(MAX_LINE)),
        })
    }

    /// Send one request line (with its `\n`) and return the answer's fields
    /// when its status is `ok`.
    pub fn call(&mut self, request: &str) -> Result<Map<String, Value>, DaemonError> {
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| DaemonError::Unreachable(format!("cannot send the request: {e}")))?;
        self.buf.clear();
        let mut chunk = Zeroizing::new([0u8; 4096]);
        let end = loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                break i;
            }
            if self.buf.len() >= MAX_LINE {
                return Err(DaemonError::Protocol(
                    "answer longer than 16384 bytes".into(),
                ));
            }
            let n = self
                .stream
                .read(&mut chunk[..])
                .map_err(|e| DaemonError::Unreachable(format!("no answer: {e}")))?;
            if n == 0 {
                return Err(DaemonError::Unreachable(
                    "the daemon closed the connection without answering".into(),
                ));
            }
            let room = MAX_LINE.saturating_sub(self.buf.len()).min(n);
            self.buf
                .extend_from_slice(chunk.get(..room).unwrap_or_default());
        };
        let parsed: Result<Value, _> =
            serde_json::from_slice(self.buf.get(..end).unwrap_or_default());
        self.buf.zeroize();
        let Ok(Value::Object(mut map)) = parsed else {
            return Err(DaemonError::Protocol("not a JSON object".into()));
        };
        if map.get("v").and_then(Value::as_u64) != Some(1) {
            return Err(DaemonError::Protocol("not protocol version 1".into()));
        }
        let status = field_str(&map, "status")?;
        let code = Code::from_name(&status)
            .ok_or_else(|| DaemonError::Protocol(format!("unknown status `{status}`")))?;
        if code == Code::OK {
            return Ok(map);
        }
        let message = match map.remove("message") {
            Some(Value::String(m)) => m,
            _ => String::new(),
        };
        Err(DaemonError::Refused {
            code,
            message,
            retry_after_ms: map.get("retry_after_ms").and_then(Value::as_u64),
        })
    }

    /// The engine's state, as the daemon sees it.
    pub fn status(&mut self) -> Result<StatusInfo, DaemonError> {
        let m = self.call("{\"v\":1,\"op\":\"status\"}\n")?;
        let num = |k: &str| {
            m.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| DaemonError::Protocol(format!("no `{k}` in the answer")))
        };
        let flag = |k: &str| {
            m.get(k)
                .and_then(Value::as_bool)
                .ok_or_else(|| DaemonError::Protocol(format!("no `{k}` in the answer")))
        };
        Ok(StatusInfo {
            backend: field_str(&m, "backend")?,
            initialised: flag("initialised")?,
            epoch: num("epoch")?,
            min_epoch: num("min_epoch")?,
            boot_locked: flag("boot_locked")?,
            engine_version: field_str(&m, "engine_version")?,
        })
    }

    /// The device public key, PEM.
    pub fn pubkey(&mut self) -> Result<String, DaemonError> {
        field_str(&self.call("{\"v\":1,\"op\":\"pubkey\"}\n")?, "pem")
    }

    /// Seal `plaintext` in `namespace`; returns the blob's text form.
    pub fn seal(&mut self, namespace: &str, plaintext: &[u8]) -> Result<String, DaemonError> {
        let b64 = Zeroizing::new(STANDARD.encode(plaintext));
        let mut req = Zeroizing::new(String::with_capacity(b64.len() + namespace.len() + 64));
        req.push_str("{\"v\":1,\"op\":\"seal\",\"namespace\":");
        req.push_str(&json_str(namespace));
        req.push_str(",\"plaintext\":\"");
        req.push_str(&b64);
        req.push_str("\"}\n");
        field_str(&self.call(&req)?, "blob")
    }

    /// Open a blob (text form); with `namespace`, only a blob of that
    /// namespace. Returns the blob's namespace and the plaintext.
    pub fn unseal(
        &mut self,
        blob_text: &str,
        namespace: Option<&str>,
    ) -> Result<(String, Zeroizing<Vec<u8>>), DaemonError> {
        let ns = namespace
            .map(|n| format!(",\"namespace\":{}", json_str(n)))
            .unwrap_or_default();
        let req = format!(
            "{{\"v\":1,\"op\":\"unseal\",\"blob\":{}{ns}}}\n",
            json_str(blob_text.trim())
        );
        let mut m = self.call(&req)?;
        let ns = field_str(&m, "namespace")?;
        let Some(Value::String(mut b64)) = m.remove("plaintext") else {
            return Err(DaemonError::Protocol("no `plaintext` in the answer".into()));
        };
        let mut plaintext = Zeroizing::new(Vec::with_capacity(b64.len() / 4 * 3 + 3));
        let decoded = STANDARD.decode_vec(b64.as_bytes(), &mut plaintext);
        b64.zeroize();
        decoded.map_err(|_| DaemonError::Protocol("the plaintext is not base64".into()))?;
        Ok((ns, plaintext))
    }
}
