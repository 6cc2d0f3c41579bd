//! The daemon proper: listens, identifies each caller (the identity layer:
//! peer credentials, pidfd, cgroup, the container's name), frames and times
//! out requests, applies the policy and the per-caller limits, forwards to
//! the engine pool, and writes one audit line per request. SIGHUP reloads
//! the policy; SIGTERM/SIGINT stop it after the requests in progress.
//!
//! Threads: the main thread accepts and does the kernel's part of the
//! identification (and the cache's); one thread per connection (at most
//! `limits.max_connections`, `limits.max_connections_per_caller` per
//! caller, `limits.max_unnamed_connections` for callers no rule names); a
//! connection whose container must first be named gets its thread before
//! that lookup (at most `identity::cache::MAX_PENDING` such at once, 2 per
//! container); the engine pool's session threads; one signal thread.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use hakeys_client::backend::{Backend, BackendKind};
use hakeys_proto::Status;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use teed_protocol::{self as protocol, Code};

use crate::activation;
use crate::decision::{self, Admission, Audit, Decision, Origin, Peer, RETRY_AFTER_MS};
use crate::engine::{Answer, EnginePool, Failure, Job, Opener};
use crate::framing::{LineReader, ReadOutcome};
use crate::identity::{self, cache::NameCache, docker::DockerApi, Stage};
use crate::limits::{Callers, Refusal};
use crate::policy::Policy;

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
    /// Docker's API socket (or `teed-docker-proxy`'s), for the names of
    /// callers' containers.
    pub docker_socket: PathBuf,
    /// How long one container lookup may take.
    pub docker_timeout: Duration,
}

/// What kind of failure stopped the daemon from starting (`teed`'s exit
/// code is chosen from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeErrorKind {
    /// The configuration or the policy file is not acceptable.
    Config,
    /// The socket or the key engine is not available.
    Unavailable,
    /// Something that should not fail did (threads, signal handlers).
    Internal,
}

/// Why the daemon could not start: its kind and one line.
#[derive(Debug)]
pub struct ServeError {
    pub kind: ServeErrorKind,
    pub message: String,
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServeError {}

fn fail(kind: ServeErrorKind, message: impl Into<String>) -> ServeError {
    ServeError {
        kind,
        message: message.into(),
    }
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
    /// Containers' names by id.
    names: Arc<NameCache>,
    /// Identification failures logged at most once a second.
    unidentified: Mutex<(Option<Instant>, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The engine pool as the decision sees it.
struct PoolEngine<'a> {
    pool: &'a EnginePool,
    backend: BackendKind,
}

impl decision::Engine for PoolEngine<'_> {
    fn call(&self, job: Job) -> Result<Answer, Failure> {
        self.pool.call(job)
    }

    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
}

impl Shared {
    fn policy(&self) -> Arc<Policy> {
        let g = self.policy.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&g)
    }

    fn audit(&self, peer: &Peer, a: &Audit) {
        log::info!(target: "audit", "{}", a.line(peer));
    }

    /// Say why a caller could not be (fully) identified: at most one line a
    /// second, with the number of others since.
    fn unidentified(&self, why: &str) {
        let now = Instant::now();
        let mut g = lock(&self.unidentified);
        match g.0 {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                g.1 = g.1.saturating_add(1);
            }
            _ => {
                let more = std::mem::take(&mut g.1);
                g.0 = Some(now);
                drop(g);
                let more = if more > 0 {
                    format!(" ({more} more since the last such line)")
                } else {
                    String::new()
                };
                log::warn!("teed: caller not fully identified: {why}{more}");
            }
        }
    }

    /// Answer one request line.
    fn respond(&self, peer: &Peer, line: &[u8]) -> Decision {
        let engine = PoolEngine {
            pool: &self.engine,
            backend: self.backend,
        };
        decision::decide(
            &engine,
            peer,
            line,
            Instant::now(),
            &self.policy(),
            &self.callers,
        )
    }

    fn reload(&self) {
        activation::notify(&[sd_notify::NotifyState::Reloading]);
        match Policy::load(&self.policy_path) {
            Ok(p) => {
                log::info!(
                    "teed: policy reloaded from {}: {} rules ({} add-ons)",
                    self.policy_path.display(),
                    p.rule_count(),
                    p.addon_count()
                );
                for w in p.warnings() {
                    log::warn!("teed: policy warning: {w}");
                }
                let mut g = self.policy.write().unwrap_or_else(|p| p.into_inner());
                *g = Arc::new(p);
            }
            Err(e) => {
                log::warn!("teed: policy reload rejected, the previous policy stays in force: {e}")
            }
        }
        activation::notify(&[sd_notify::NotifyState::Ready]);
    }

    fn stop(&self) -> ! {
        self.stopping.store(true, Ordering::SeqCst);
        activation::notify(&[sd_notify::NotifyState::Stopping]);
        log::info!("teed: stopping; finishing the requests in progress");
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
        log::info!("teed: stopped");
        log::logger().flush();
        std::process::exit(0)
    }
}

fn write_response(mut stream: &UnixStream, response: &[u8], timeout: Duration) -> bool {
    stream.set_write_timeout(Some(timeout)).is_ok() && stream.write_all(response).is_ok()
}

/// Releases a connection slot when the connection ends, however it ends.
struct Slot {
    shared: Arc<Shared>,
    admission: Admission,
}

impl Drop for Slot {
    fn drop(&mut self) {
        decision::release(&self.admission, Instant::now(), &self.shared.callers);
    }
}

/// Give `peer` a connection slot, or turn it away with one answer line.
fn admit(shared: &Arc<Shared>, stream: &UnixStream, peer: &Peer) -> Option<Slot> {
    match decision::admit(peer, Instant::now(), &shared.policy(), &shared.callers) {
        Ok(admission) => Some(Slot {
            shared: Arc::clone(shared),
            admission,
        }),
        Err(r) => {
            refuse(shared, stream, peer, r);
            None
        }
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
                &peer,
                code,
                message,
                None,
                limits.request_timeout,
            );
        };
        match reader.next(&mut &stream, limits.idle_timeout, limits.request_timeout) {
            ReadOutcome::Line => {
                shared.busy.fetch_add(1, Ordering::SeqCst);
                let Decision { answer, audit } = shared.respond(&peer, reader.line());
                reader.consume();
                let written = write_response(&stream, &answer, limits.request_timeout);
                drop(answer);
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                if let Some(a) = audit {
                    shared.audit(&peer, &a);
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
    peer: &Peer,
    code: Code,
    message: &str,
    retry_after_ms: Option<u64>,
    timeout: Duration,
) {
    shared.audit(peer, &Audit::connection(code));
    write_response(
        stream,
        &protocol::encode_error(code, message, retry_after_ms),
        timeout,
    );
}

/// Turn a connection away at the door with one response line.
fn refuse(shared: &Shared, stream: &UnixStream, peer: &Peer, r: Refusal) {
    let (code, message) = decision::refusal(r);
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
    let unavailable = |m: String| fail(ServeErrorKind::Unavailable, m);
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
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
    check_socket_dir(dir).map_err(unavailable)?;
    // The socket is created with its final mode: the file-creation mask
    // is set for the bind alone (before any connection thread exists), so
    // there is no later chmod by path that a swapped-in symlink could
    // redirect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(!mode & 0o777));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener =
        bound.map_err(|e| unavailable(format!("cannot listen on {}: {e}", path.display())))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| unavailable(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.file_type().is_socket() || meta.permissions().mode() & 0o777 != mode {
        return Err(unavailable(format!(
            "{} is not the socket teed just created with mode {mode:o}",
            path.display()
        )));
    }
    Ok((listener, meta.dev(), meta.ino()))
}

/// The socket's directory must be teed's or root's, and writable by no one
/// else: otherwise another user could replace the socket (or the directory
/// entry) under teed and take its callers' requests.
fn check_socket_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to root or to teed's user: another user could replace the socket",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o}): another user could replace the socket; chmod go-w it",
            dir.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// The daemon serves no one while `boot/` secrets could still be unsealed.
/// The boot unit ends the boot phase (`teectl boot-done`) before teed
/// starts; if it did not (it failed, or was left out), teed ends it here,
/// says so, and refuses to start if it cannot (docs/security-model.md,
/// "The boot phase ends for certain").
fn ensure_boot_phase_over(engine: &EnginePool) -> Result<(), ServeError> {
    let unavailable = |f: Failure| {
        fail(
            ServeErrorKind::Unavailable,
            format!("cannot check the boot phase: {}", f.message),
        )
    };
    match engine.call(Job::Status).map_err(unavailable)? {
        Answer::Status(s) if s.boot_locked || !s.initialised => return Ok(()),
        Answer::Status(_) => {}
        _ => {
            return Err(fail(
                ServeErrorKind::Internal,
                "the key engine answered another operation",
            ))
        }
    }
    log::warn!(
        "teed: the boot phase was still open (the boot unit did not run `teectl boot-done`); ending it before serving anyone"
    );
    match engine.call(Job::BootDone) {
        Ok(Answer::BootDone) => Ok(()),
        Ok(_) => Err(fail(ServeErrorKind::Internal, "the key engine answered another operation")),
        Err(f) => Err(fail(
            ServeErrorKind::Unavailable,
            format!("cannot end the boot phase ({}); refusing to serve while boot/ secrets can be unsealed", f.message),
        )),
    }
}

/// Run the daemon until SIGTERM or SIGINT (then the process exits 0).
pub fn run(config: Config) -> Result<(), ServeError> {
    // Signals first: SIGHUP's default action would end the process.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(|e| {
            fail(
                ServeErrorKind::Internal,
                format!("cannot install signal handlers: {e}"),
            )
        })?;
    // Take a socket from systemd before any thread starts (it edits the
    // environment).
    let activated =
        activation::listener_from_systemd().map_err(|e| fail(ServeErrorKind::Unavailable, e))?;
    let policy = Policy::load(&config.policy_path)
        .map_err(|e| fail(ServeErrorKind::Config, format!("policy rejected: {e}")))?;
    if config.backend == BackendKind::Sim && config.sessions > 1 {
        return Err(fail(
            ServeErrorKind::Config,
            "the simulator backend takes one engine session (it locks its state); use --sessions 1",
        ));
    }
    let kind = config.backend;
    let state_dir = config.state_dir.clone();
    let opener: Arc<Opener<Backend>> = Arc::new(move || {
        Backend::open(Some(kind), state_dir.as_deref()).map_err(|e| e.to_string())
    });
    let engine =
        EnginePool::start(config.sessions, opener, config.engine_timeout).map_err(|e| {
            fail(
                ServeErrorKind::Unavailable,
                format!("cannot open the key engine: {e}"),
            )
        })?;
    ensure_boot_phase_over(&engine)?;
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
    for w in policy.warnings() {
        log::warn!("teed: policy warning: {w}");
    }
    let docker = DockerApi::new(&config.docker_socket, config.docker_timeout);
    let names = Arc::new(NameCache::new(Arc::new(docker), config.docker_timeout));
    let shared = Arc::new(Shared {
        policy: RwLock::new(Arc::new(policy)),
        policy_path: config.policy_path.clone(),
        callers: Mutex::new(Callers::default()),
        engine,
        backend: config.backend,
        busy: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        bound,
        names,
        unidentified: Mutex::new((None, 0)),
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
                    ServeErrorKind::Internal,
                    format!("cannot start the signal thread: {e}"),
                )
            })?;
    }
    let backend_detail = match (&config.backend, &config.state_dir) {
        (BackendKind::Sim, Some(d)) => format!("sim, state {}", d.display()),
        (BackendKind::Sim, None) => {
            format!(
                "sim, state {}",
                hakeys_client::sim::default_state_dir().display()
            )
        }
        (BackendKind::Tee, _) => "tee".into(),
    };
    log::info!(
        "teed: serving on {place} (backend {backend_detail}, {} engine session{}); policy {}: {summary}",
        config.sessions.max(1),
        if config.sessions > 1 { "s" } else { "" },
        config.policy_path.display()
    );
    log::info!(
        "teed: callers identified by {}; their containers named by the Docker API at {}",
        if identity::peer::kernel_has_peer_pidfd() {
            "pidfd (SO_PEERPIDFD) and cgroup"
        } else {
            "pid and start time (no SO_PEERPIDFD: Linux < 6.5, see docs/daemon.md) and cgroup"
        },
        config.docker_socket.display()
    );
    activation::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors or similar: wait, do not spin.
                log::warn!("teed: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            continue;
        }
        let kernel = match identity::peer::identify(&stream) {
            Ok(k) => k,
            Err(e) => {
                log::warn!("teed: cannot read a caller's credentials ({e}); connection dropped");
                continue;
            }
        };
        let (stage, why) = identity::first_stage(kernel, &shared.names, Instant::now());
        if let Some(why) = why {
            shared.unidentified(&why);
        }
        let spawned = match stage {
            Stage::Known(peer) => {
                let Some(slot) = admit(&shared, &stream, &peer) else {
                    continue;
                };
                spawn_connection(move || {
                    let slot = slot;
                    serve(&slot.shared, stream, peer);
                })
            }
            Stage::NeedsName(kernel, id) => {
                let pending = match identity::reserve(&shared.names, &id) {
                    Ok(p) => p,
                    Err(_) => {
                        // Too many connections already wait for a lookup
                        // (of this container, or in all).
                        let peer = Peer {
                            uid: kernel.uid,
                            gid: kernel.gid,
                            pid: kernel.pid,
                            origin: Origin::Container { id, name: None },
                        };
                        refuse(&shared, &stream, &peer, Refusal::Busy);
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                spawn_connection(move || {
                    let (peer, why) =
                        identity::second_stage(&kernel, id, &shared.names, Instant::now());
                    drop(pending);
                    if let Some(why) = why {
                        shared.unidentified(&why);
                    }
                    if let Some(slot) = admit(&shared, &stream, &peer) {
                        serve(&slot.shared, stream, peer);
                    }
                })
            }
        };
        if let Err(e) = spawned {
            // The closure, and with it the slot, is dropped: nothing leaks.
            log::error!("teed: cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

fn spawn_connection(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("conn".into())
        .stack_size(512 * 1024)
        .spawn(f)
        .map(|_| ())
}
