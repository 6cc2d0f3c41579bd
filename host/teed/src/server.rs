//! The daemon proper: listens, identifies each caller by the kernel's peer
//! credentials, frames and times out requests, applies the policy and the
//! per-caller limits, forwards to the engine pool, and writes one audit line
//! per request. SIGHUP reloads the policy; SIGTERM/SIGINT stop it after the
//! requests in progress.
//!
//! Threads: the main thread accepts; one thread per connection (at most
//! `limits.max_connections`, at most `limits.max_connections_per_uid` per
//! uid); the engine pool's session threads; one signal thread.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use hakeys_engine::namespace;
use hakeys_proto::Status;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use zeroize::{Zeroize, Zeroizing};

use super::activation;
use super::engine::{Answer, EnginePool, Job, Opener};
use super::limits::{Callers, Refusal};
use super::policy::{Caller, Limits, Policy};
use super::protocol::{self, Code, Op, Request, StatusInfo, MAX_LINE};
use crate::armor;
use crate::backend::{Backend, BackendKind};
use crate::exit;

/// How `teed` was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (unless systemd passes a socket).
    pub socket: PathBuf,
    /// The socket file's mode when teed creates it.
    pub socket_mode: u32,
    pub policy_path: PathBuf,
    pub backend: BackendKind,
    /// The simulator's state directory.
    pub state_dir: Option<PathBuf>,
    /// Engine sessions (1 for the simulator, which locks its state).
    pub sessions: usize,
    /// How long a request waits for the engine.
    pub engine_timeout: Duration,
}

/// Why the daemon could not start: an exit code and one line.
#[derive(Debug)]
pub struct ServeError {
    pub exit_code: i32,
    pub message: String,
}

fn fail(exit_code: i32, message: impl Into<String>) -> ServeError {
    ServeError {
        exit_code,
        message: message.into(),
    }
}

/// Write one line to stdout (journald when run by systemd). Never fails:
/// a broken stdout must not stop the service.
pub fn log(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The kernel's identification of the process at the other end.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: i32,
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let c = rustix::net::sockopt::socket_peercred(stream)?;
    Ok(Peer {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        pid: c.pid.as_raw_pid(),
    })
}

/// What one audit line says. Never a plaintext, key or blob.
struct Audit {
    op: Option<Op>,
    ns: Option<String>,
    code: Code,
    /// Rate-limited requests from this caller not logged since the last line.
    suppressed: u64,
}

struct Shared {
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    callers: Mutex<Callers>,
    engine: EnginePool,
    backend: BackendKind,
    /// Requests being answered (for a graceful stop).
    busy: AtomicUsize,
    stopping: AtomicBool,
    /// The socket file teed created (removed at a clean stop), with its
    /// device and inode so that a successor's socket is never removed.
    bound: Option<(PathBuf, u64, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// A failed unseal that is the caller's doing (counted for back-off).
fn is_caller_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Denied
            | Code::Engine(
                Status::BlobRejected
                    | Status::NamespaceMismatch
                    | Status::EpochRetired
                    | Status::BootLocked
            )
    )
}

type Outcome = Result<Zeroizing<String>, (Code, String)>;

/// The pause suggested to a caller after `retry` or `busy`.
const RETRY_AFTER_MS: u64 = 100;

impl Shared {
    fn policy(&self) -> Arc<Policy> {
        let g = self.policy.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&g)
    }

    fn callers(&self) -> MutexGuard<'_, Callers> {
        lock(&self.callers)
    }

    fn audit(&self, peer: Peer, a: &Audit) {
        let suppressed = if a.suppressed > 0 {
            format!(" suppressed={}", a.suppressed)
        } else {
            String::new()
        };
        log(&format!(
            "audit uid={} gid={} pid={} op={} ns={} result={}{suppressed}",
            peer.uid,
            peer.gid,
            peer.pid,
            a.op.map(Op::name).unwrap_or("-"),
            a.ns.as_deref().unwrap_or("-"),
            a.code.name()
        ));
    }

    /// A rate-limited answer; logged at most once a second per caller.
    fn limited(
        &self,
        peer: Peer,
        op: Option<Op>,
        ns: Option<String>,
        wait: Duration,
        message: &str,
        limits: &Limits,
    ) -> (Option<Audit>, Zeroizing<String>) {
        let logged = self.callers().log_limited(peer.uid, Instant::now(), limits);
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        (
            logged.map(|suppressed| Audit {
                op,
                ns,
                code: Code::RateLimited,
                suppressed,
            }),
            protocol::encode_error(Code::RateLimited, message, Some(ms)),
        )
    }

    /// Answer one request line.
    fn respond(&self, peer: Peer, line: &[u8]) -> (Option<Audit>, Zeroizing<String>) {
        let policy = self.policy();
        let limits = &policy.limits;
        let decoded = protocol::decode_request(line);
        let op = match &decoded {
            Ok(r) => Some(r.op()),
            Err(e) => e.op,
        };
        let ns = decoded
            .as_ref()
            .ok()
            .and_then(|r| r.namespace())
            .map(str::to_owned);
        // (Each lock is taken and released in its own statement: `limited`
        // takes it again.)
        let token = self.callers().take_token(peer.uid, Instant::now(), limits);
        if let Err(Refusal::RateLimited(wait)) = token {
            return self.limited(peer, op, ns, wait, "too many requests; slow down", limits);
        }
        let req = match decoded {
            Ok(r) => r,
            Err(e) => {
                if e.op == Some(Op::Unseal) && is_caller_failure(e.code) {
                    self.callers()
                        .record_unseal(peer.uid, Instant::now(), true, limits);
                }
                let audit = Audit {
                    op,
                    ns: None,
                    code: e.code,
                    suppressed: 0,
                };
                return (
                    Some(audit),
                    protocol::encode_error(e.code, &e.message, None),
                );
            }
        };
        if op == Some(Op::Unseal) {
            let allowed = self
                .callers()
                .unseal_allowed(peer.uid, Instant::now(), limits);
            if let Err(Refusal::RateLimited(wait)) = allowed {
                return self.limited(
                    peer,
                    op,
                    ns,
                    wait,
                    "too many failed unseals; wait before trying again",
                    limits,
                );
            }
        }
        let caller = Caller {
            uid: peer.uid,
            gid: peer.gid,
        };
        let outcome = self.execute(&policy, caller, req);
        let code = match &outcome {
            Ok(_) => Code::OK,
            Err((c, _)) => *c,
        };
        if op == Some(Op::Unseal) {
            self.callers()
                .record_unseal(peer.uid, Instant::now(), is_caller_failure(code), limits);
        }
        let response = match outcome {
            Ok(r) => r,
            Err((c, m)) => {
                protocol::encode_error(c, &m, c.is_retryable().then_some(RETRY_AFTER_MS))
            }
        };
        let audit = Audit {
            op,
            ns,
            code,
            suppressed: 0,
        };
        (Some(audit), response)
    }

    fn denied(caller: Caller, op: Op, ns: Option<&str>) -> (Code, String) {
        let on = ns.map(|n| format!(" on namespace {n}")).unwrap_or_default();
        (
            Code::Denied,
            format!(
                "denied: the policy does not grant uid {} gid {} `{}`{on}",
                caller.uid,
                caller.gid,
                op.name()
            ),
        )
    }

    /// The run-time rule for a namespaced operation: never `boot/`, then
    /// whatever the policy grants this caller.
    fn authorize(policy: &Policy, caller: Caller, op: Op, ns: &str) -> Result<(), (Code, String)> {
        if namespace::is_boot(ns) {
            return Err(boot_refused());
        }
        if !policy.allows(caller, op, Some(ns)) {
            return Err(Self::denied(caller, op, Some(ns)));
        }
        Ok(())
    }

    fn engine(&self, job: Job) -> Result<Answer, (Code, String)> {
        self.engine.call(job).map_err(|f| (f.code, f.message))
    }

    fn execute(&self, policy: &Policy, caller: Caller, req: Request) -> Outcome {
        let unexpected = || {
            (
                Code::Engine(Status::Internal),
                "the key engine answered another operation".to_string(),
            )
        };
        match req {
            Request::Status => {
                if !policy.allows(caller, Op::Status, None) {
                    return Err(Self::denied(caller, Op::Status, None));
                }
                match self.engine(Job::Status)? {
                    Answer::Status(s) => Ok(protocol::encode_status(&StatusInfo {
                        backend: self.backend.name().into(),
                        initialised: s.initialised,
                        epoch: s.epoch,
                        min_epoch: s.min_epoch,
                        boot_locked: s.boot_locked,
                        engine_version: version_string(s.engine_version),
                    })),
                    _ => Err(unexpected()),
                }
            }
            Request::Pubkey => {
                if !policy.allows(caller, Op::Pubkey, None) {
                    return Err(Self::denied(caller, Op::Pubkey, None));
                }
                match self.engine(Job::Pubkey)? {
                    Answer::Pubkey { sec1 } => armor::pubkey_to_pem(&sec1)
                        .map(|pem| protocol::encode_pubkey(&pem))
                        .map_err(|e| (Code::Engine(Status::Internal), e.to_string())),
                    _ => Err(unexpected()),
                }
            }
            Request::Seal(s) => {
                Self::authorize(policy, caller, Op::Seal, &s.namespace)?;
                match self.engine(Job::Seal {
                    namespace: s.namespace,
                    plaintext: s.plaintext,
                })? {
                    Answer::Seal { blob } => Ok(protocol::encode_seal(&blob)),
                    _ => Err(unexpected()),
                }
            }
            Request::Unseal(u) => {
                if u.namespace
                    .as_ref()
                    .is_some_and(|want| *want != u.blob_namespace)
                {
                    return Err((
                        Code::Engine(Status::NamespaceMismatch),
                        Status::NamespaceMismatch.message().into(),
                    ));
                }
                Self::authorize(policy, caller, Op::Unseal, &u.blob_namespace)?;
                // The engine is told the namespace policy allowed, and
                // checks the authenticated header against it.
                match self.engine(Job::Unseal {
                    blob: u.blob,
                    namespace: u.blob_namespace,
                })? {
                    Answer::Unseal {
                        namespace,
                        plaintext,
                    } => Ok(protocol::encode_unseal(&namespace, &plaintext)),
                    _ => Err(unexpected()),
                }
            }
        }
    }

    fn reload(&self) {
        activation::notify("RELOADING=1");
        match Policy::load(&self.policy_path) {
            Ok(p) => {
                log(&format!(
                    "teed: policy reloaded from {}: {} rules ({} add-ons)",
                    self.policy_path.display(),
                    p.rule_count(),
                    p.addon_count()
                ));
                let mut g = self.policy.write().unwrap_or_else(|p| p.into_inner());
                *g = Arc::new(p);
            }
            Err(e) => log(&format!(
                "teed: policy reload rejected, the previous policy stays in force: {e}"
            )),
        }
        activation::notify("READY=1");
    }

    fn stop(&self) -> ! {
        self.stopping.store(true, Ordering::SeqCst);
        activation::notify("STOPPING=1");
        log("teed: stopping; finishing the requests in progress");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some((path, dev, ino)) = &self.bound {
            let ours = std::fs::symlink_metadata(path)
                .map(|m| m.dev() == *dev && m.ino() == *ino)
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        log("teed: stopped");
        std::process::exit(0)
    }
}

fn boot_refused() -> (Code, String) {
    (
        Code::Denied,
        "denied: boot/ namespaces are never served at run time (boot units use teectl directly)"
            .into(),
    )
}

/// Reads request lines with a bounded buffer and deadlines.
struct LineReader {
    buf: Zeroizing<Vec<u8>>,
    /// Length of the current line (without its `\n`), once found.
    line: usize,
}

enum ReadOutcome {
    /// A full line is available ([`LineReader::line`]).
    Line,
    /// The peer closed between requests.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// No `\n` within [`MAX_LINE`] bytes.
    TooLong,
    /// The peer closed in the middle of a line.
    Truncated,
    /// A started request did not complete within the request timeout.
    TimedOut,
    /// The connection failed.
    Failed,
}

impl LineReader {
    fn new() -> LineReader {
        LineReader {
            // Allocated once at full size: never reallocated, so no copy of
            // a request is left behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(MAX_LINE)),
            line: 0,
        }
    }

    fn next(&mut self, mut stream: &UnixStream, limits: &Limits) -> ReadOutcome {
        let mut started = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                self.line = i;
                return ReadOutcome::Line;
            }
            let len = self.buf.len();
            if len >= MAX_LINE {
                return ReadOutcome::TooLong;
            }
            let timeout = match started {
                None => limits.idle_timeout,
                Some(t) => limits.request_timeout.saturating_sub(t.elapsed()),
            };
            if timeout.is_zero() || stream.set_read_timeout(Some(timeout)).is_err() {
                return ReadOutcome::TimedOut;
            }
            self.buf.resize(MAX_LINE, 0);
            let r = stream.read(&mut self.buf[len..]);
            match r {
                Ok(0) => {
                    self.buf.truncate(len);
                    return if len == 0 {
                        ReadOutcome::Closed
                    } else {
                        ReadOutcome::Truncated
                    };
                }
                Ok(n) => {
                    self.buf.truncate(len + n);
                    started.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    self.buf.truncate(len);
                    match e.kind() {
                        std::io::ErrorKind::Interrupted => {}
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            return if started.is_none() {
                                ReadOutcome::Idle
                            } else {
                                ReadOutcome::TimedOut
                            }
                        }
                        _ => return ReadOutcome::Failed,
                    }
                }
            }
        }
    }

    /// The current line, without its `\n`.
    fn line(&self) -> &[u8] {
        self.buf.get(..self.line).unwrap_or_default()
    }

    /// Drop the current line and its `\n`, wiping it; keep what follows.
    fn consume(&mut self) {
        let n = (self.line + 1).min(self.buf.len());
        let rest = self.buf.len() - n;
        self.buf.copy_within(n.., 0);
        if let Some(tail) = self.buf.get_mut(rest..) {
            tail.zeroize();
        }
        self.buf.truncate(rest);
        self.line = 0;
    }
}

fn write_response(mut stream: &UnixStream, response: &str, timeout: Duration) -> bool {
    stream.set_write_timeout(Some(timeout)).is_ok() && stream.write_all(response.as_bytes()).is_ok()
}

/// Releases a connection slot when the connection ends, however it ends.
struct Slot {
    shared: Arc<Shared>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared
            .callers()
            .close_connection(self.uid, Instant::now());
    }
}

fn serve(shared: &Shared, stream: UnixStream, peer: Peer) {
    let mut reader = LineReader::new();
    loop {
        let limits = shared.policy().limits;
        let connection_error = |code: Code, message: &str| {
            audit_and_answer(
                shared,
                &stream,
                peer,
                code,
                message,
                None,
                limits.request_timeout,
            );
        };
        match reader.next(&stream, &limits) {
            ReadOutcome::Line => {
                shared.busy.fetch_add(1, Ordering::SeqCst);
                let (audit, response) = shared.respond(peer, reader.line());
                reader.consume();
                let written = write_response(&stream, &response, limits.request_timeout);
                drop(response);
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                if let Some(a) = audit {
                    shared.audit(peer, &a);
                }
                if !written {
                    return;
                }
            }
            ReadOutcome::Closed | ReadOutcome::Idle | ReadOutcome::Failed => return,
            ReadOutcome::TooLong => {
                return connection_error(
                    Code::Engine(Status::TooLarge),
                    "request line longer than 16384 bytes; closing the connection",
                )
            }
            ReadOutcome::Truncated => {
                return connection_error(
                    Code::Engine(Status::BadMessage),
                    "truncated request: the connection was closed before the end of the line",
                )
            }
            ReadOutcome::TimedOut => {
                return connection_error(
                    Code::Timeout,
                    "the request did not arrive in full within the request timeout; closing the connection",
                )
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// A failure that concerns the connection, not one operation: one audit
/// line and one error response.
fn audit_and_answer(
    shared: &Shared,
    stream: &UnixStream,
    peer: Peer,
    code: Code,
    message: &str,
    retry_after_ms: Option<u64>,
    timeout: Duration,
) {
    let audit = Audit {
        op: None,
        ns: None,
        code,
        suppressed: 0,
    };
    shared.audit(peer, &audit);
    write_response(
        stream,
        &protocol::encode_error(code, message, retry_after_ms),
        timeout,
    );
}

/// Turn a connection away at the door with one response line.
fn refuse(shared: &Shared, stream: &UnixStream, peer: Peer, r: Refusal) {
    let (code, message) = match r {
        Refusal::Busy => (
            Code::Engine(Status::Busy),
            "the daemon is at its connection limit; retry",
        ),
        Refusal::TooManyConnections => (
            Code::RateLimited,
            "too many connections from this uid; close some and retry",
        ),
        Refusal::RateLimited(_) => (Code::RateLimited, "too many requests; slow down"),
    };
    audit_and_answer(
        shared,
        stream,
        peer,
        code,
        message,
        Some(RETRY_AFTER_MS),
        Duration::from_millis(100),
    );
}

/// Bind `path`, replacing a stale socket file but never a live daemon's.
fn bind(path: &Path, mode: u32) -> Result<(UnixListener, u64, u64), ServeError> {
    let unavailable = |m: String| fail(exit::UNAVAILABLE, m);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(unavailable(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(unavailable(format!(
                "another teed is already serving on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| {
            unavailable(format!(
                "cannot remove the stale socket {}: {e}",
                path.display()
            ))
        })?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| unavailable(format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| unavailable(format!("cannot set the mode of {}: {e}", path.display())))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| unavailable(format!("cannot stat {}: {e}", path.display())))?;
    Ok((listener, meta.dev(), meta.ino()))
}

/// Run the daemon until SIGTERM or SIGINT (then the process exits 0).
pub fn run(config: Config) -> Result<(), ServeError> {
    // Signals first: SIGHUP's default action would end the process.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(|e| {
            fail(
                exit::INTERNAL,
                format!("cannot install signal handlers: {e}"),
            )
        })?;
    // Take a socket from systemd before any thread starts (it edits the
    // environment).
    let activated = activation::listener_from_systemd().map_err(|e| fail(exit::UNAVAILABLE, e))?;
    let policy = Policy::load(&config.policy_path)
        .map_err(|e| fail(exit::USAGE, format!("policy rejected: {e}")))?;
    if config.backend == BackendKind::Sim && config.sessions > 1 {
        return Err(fail(
            exit::USAGE,
            "the simulator backend takes one engine session (it locks its state); use --sessions 1",
        ));
    }
    let kind = config.backend;
    let state_dir = config.state_dir.clone();
    let opener: Arc<Opener<Backend>> =
        Arc::new(move || Backend::open(Some(kind), state_dir.as_deref()).map_err(|e| e.message));
    let engine =
        EnginePool::start(config.sessions, opener, config.engine_timeout).map_err(|e| {
            fail(
                exit::UNAVAILABLE,
                format!("cannot open the key engine: {e}"),
            )
        })?;
    let (listener, bound, place) = match activated {
        Some(l) => (l, None, "the socket passed by systemd".to_string()),
        None => {
            let (l, dev, ino) = bind(&config.socket, config.socket_mode)?;
            (
                l,
                Some((config.socket.clone(), dev, ino)),
                config.socket.display().to_string(),
            )
        }
    };
    let summary = format!(
        "{} rules ({} add-ons)",
        policy.rule_count(),
        policy.addon_count()
    );
    let shared = Arc::new(Shared {
        policy: RwLock::new(Arc::new(policy)),
        policy_path: config.policy_path.clone(),
        callers: Mutex::new(Callers::default()),
        engine,
        backend: config.backend,
        busy: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        bound,
    });
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        shared.reload();
                    } else {
                        shared.stop();
                    }
                }
            })
            .map_err(|e| {
                fail(
                    exit::INTERNAL,
                    format!("cannot start the signal thread: {e}"),
                )
            })?;
    }
    let backend_detail = match (&config.backend, &config.state_dir) {
        (BackendKind::Sim, Some(d)) => format!("sim, state {}", d.display()),
        (BackendKind::Sim, None) => {
            format!("sim, state {}", crate::sim::default_state_dir().display())
        }
        (BackendKind::Tee, _) => "tee".into(),
    };
    log(&format!(
        "teed: serving on {place} (backend {backend_detail}, {} engine session{}); policy {}: {summary}",
        config.sessions.max(1),
        if config.sessions > 1 { "s" } else { "" },
        config.policy_path.display()
    ));
    activation::notify("READY=1\nSTATUS=serving");
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors or similar: wait, do not spin.
                log(&format!("teed: accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            continue;
        }
        let peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                log(&format!(
                    "teed: cannot read a caller's credentials ({e}); connection dropped"
                ));
                continue;
            }
        };
        let limits = shared.policy().limits;
        let admitted = shared
            .callers()
            .open_connection(peer.uid, Instant::now(), &limits);
        if let Err(r) = admitted {
            refuse(&shared, &stream, peer, r);
            continue;
        }
        let slot = Slot {
            shared: Arc::clone(&shared),
            uid: peer.uid,
        };
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                let slot = slot;
                serve(&slot.shared, stream, peer);
            });
        if let Err(e) = spawned {
            // The closure, and with it the slot, is dropped: nothing leaks.
            log(&format!("teed: cannot start a connection thread: {e}"));
        }
    }
    Ok(())
}
