//! A client for the daemon's socket protocol (`docs/daemon.md`), used by
//! `teectl --via-daemon`, the benchmark harness and the tests. One
//! connection, one request at a time; answers are read with a bound and a
//! timeout and decoded into the typed answers of this crate.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use zeroize::{Zeroize, Zeroizing};

use crate::{
    Code, ErrorAnswer, Head, Op, PubkeyAnswer, RequestLine, SealAnswer, StatusAnswer, UnsealAnswer,
    MAX_LINE, VERSION,
};

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

impl std::error::Error for DaemonError {}

impl DaemonError {
    /// The status code, when the daemon answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            DaemonError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The daemon's socket: `explicit`, else `$HAKEYS_SOCKET`, else
/// [`crate::DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(crate::SOCKET_ENV)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_SOCKET))
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

    /// Send one request and return the body of its answer when the status
    /// is `ok`.
    pub fn call<T: DeserializeOwned>(&mut self, request: &RequestLine) -> Result<T, DaemonError> {
        let line = request.encode();
        self.stream
            .write_all(&line)
            .map_err(|e| DaemonError::Unreachable(format!("cannot send the request: {e}")))?;
        drop(line);
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
        let answer = decode_answer(self.buf.get(..end).unwrap_or_default());
        self.buf.zeroize();
        answer
    }

    /// The engine's state, as the daemon sees it.
    pub fn status(&mut self) -> Result<StatusAnswer, DaemonError> {
        self.call(&RequestLine::new(Op::Status))
    }

    /// The device public key, PEM.
    pub fn pubkey(&mut self) -> Result<String, DaemonError> {
        self.call::<PubkeyAnswer>(&RequestLine::new(Op::Pubkey))
            .map(|a| a.pem)
    }

    /// Seal `plaintext` in `namespace`; returns the blob's text form.
    pub fn seal(&mut self, namespace: &str, plaintext: &[u8]) -> Result<String, DaemonError> {
        let mut b64 = Zeroizing::new(String::with_capacity(plaintext.len().div_ceil(3) * 4));
        STANDARD.encode_string(plaintext, &mut b64);
        let mut req = RequestLine::new(Op::Seal);
        req.namespace = Some(namespace.into());
        req.plaintext = Some(b64);
        self.call::<SealAnswer>(&req).map(|a| a.blob)
    }

    /// Open a blob (text form); with `namespace`, only a blob of that
    /// namespace. Returns the blob's namespace and the plaintext.
    pub fn unseal(
        &mut self,
        blob_text: &str,
        namespace: Option<&str>,
    ) -> Result<(String, Zeroizing<Vec<u8>>), DaemonError> {
        let mut req = RequestLine::new(Op::Unseal);
        req.blob = Some(blob_text.trim().into());
        req.namespace = namespace.map(str::to_owned);
        let a: UnsealAnswer = self.call(&req)?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(a.plaintext.len() / 4 * 3 + 3));
        STANDARD
            .decode_vec(a.plaintext.as_bytes(), &mut plaintext)
            .map_err(|_| DaemonError::Protocol("the plaintext is not base64".into()))?;
        Ok((a.namespace, plaintext))
    }
}

/// Decode one answer line (without its `\n`): the body when the status is
/// `ok`, else the refusal.
pub fn decode_answer<T: DeserializeOwned>(line: &[u8]) -> Result<T, DaemonError> {
    let head: Head = serde_json::from_slice(line)
        .map_err(|_| DaemonError::Protocol("not a JSON object with `v` and `status`".into()))?;
    if head.v != VERSION {
        return Err(DaemonError::Protocol("not protocol version 1".into()));
    }
    let code = Code::from_name(&head.status)
        .ok_or_else(|| DaemonError::Protocol(format!("unknown status `{}`", head.status)))?;
    if code == Code::OK {
        return serde_json::from_slice(line)
            .map_err(|_| DaemonError::Protocol("the answer does not fit the operation".into()));
    }
    let e: ErrorAnswer = serde_json::from_slice(line).unwrap_or(ErrorAnswer {
        message: String::new(),
        retry_after_ms: None,
    });
    Err(DaemonError::Refused {
        code,
        message: e.message,
        retry_after_ms: e.retry_after_ms,
    })
}
