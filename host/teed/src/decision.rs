//! The daemon's one trust decision: may this caller do this, and what is
//! the answer.
//!
//! [`decide`] is a function of (caller identity, request line, time, policy,
//! limits state) to (answer line, audit line), over an [`Engine`] trait. It
//! does no I/O of its own: no socket, no clock, no user database, so every
//! allow and every deny is unit-tested here without root, users or sockets.
//! The server (`server.rs`) only reads lines, calls this and writes what it
//! returns.
//!
//! The caller is data: uid, gid, pid and where it runs (the host, a named
//! Docker container, a container teed could not name, or unknown), found
//! by the identity layer (`identity/`) before anything here runs.
//!
//! At the door, [`admit`] gives a new connection a slot, or not: at most
//! `max_connections` in all, `max_connections_per_caller` per caller, and
//! `max_unnamed_connections` for all callers no rule names together.
//!
//! The rules for each request, in the order they are applied:
//! 1. the caller's request rate (token bucket per caller);
//! 2. the line must decode strictly (`teed_protocol::decode_request`);
//! 3. for `unseal`, the caller must not be backing off after failed
//!    unseals;
//! 4. `boot/` namespaces are never served, whatever the policy says;
//! 5. the policy must grant this caller (its uid and gid, its container's
//!    name) this operation on this namespace
//!    (for `unseal`, the namespace in the blob's header, which the engine
//!    then checks against the authenticated one);
//! 6. the engine answers.
//!
//! Failed unseals that are the caller's doing (denied, rejected, wrong
//! namespace, retired, boot-locked) count towards the back-off.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hakeys_engine::namespace;
use hakeys_proto::Status;
use teed_protocol::{self as protocol, Code, Op, Request, StatusAnswer};
use zeroize::Zeroizing;

use crate::engine::{Answer, Failure, Job};
use crate::identity::cgroup::ContainerId;
use crate::limits::{CallerKey, Callers, Refusal};
use crate::policy::{Policy, Who};

/// Where the process at the other end of a connection runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Outside any container: identified by uid and gid.
    Host,
    /// In a Docker container; `name` is `None` if the container runtime
    /// could not name it (then only uid and gid rules can match).
    Container {
        id: ContainerId,
        name: Option<String>,
    },
    /// teed could not tell (the caller exited before it could be
    /// identified, its cgroups disagree): only uid and gid rules can match.
    Unknown,
}

/// Who is at the other end of a connection: the kernel's uid, gid and pid,
/// and where the process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub origin: Origin,
}

impl Peer {
    /// A process outside containers.
    pub fn host(uid: u32, gid: u32, pid: i32) -> Peer {
        Peer {
            uid,
            gid,
            pid,
            origin: Origin::Host,
        }
    }

    /// The container's name, if it runs in one that has a name.
    pub fn container_name(&self) -> Option<&str> {
        match &self.origin {
            Origin::Container { name, .. } => name.as_deref(),
            _ => None,
        }
    }

    /// The caller as the policy sees it.
    pub fn who(&self) -> Who<'_> {
        Who {
            uid: self.uid,
            gid: self.gid,
            container: self.container_name(),
        }
    }

    /// Whose limits its requests count against.
    pub fn key(&self) -> CallerKey {
        match &self.origin {
            Origin::Container {
                name: Some(name), ..
            } => CallerKey::Container(name.clone()),
            Origin::Container { id, name: None } => CallerKey::UnnamedContainer(id.clone()),
            Origin::Host | Origin::Unknown => CallerKey::Uid(self.uid),
        }
    }

    /// The caller in one phrase, for a `denied` message.
    fn describe(&self) -> String {
        match &self.origin {
            Origin::Host => format!("uid {} gid {}", self.uid, self.gid),
            Origin::Container {
                name: Some(name), ..
            } => format!("container {name} (uid {} gid {})", self.uid, self.gid),
            Origin::Container { id, name: None } => format!(
                "container {} whose name teed could not read (uid {} gid {})",
                id.short(),
                self.uid,
                self.gid
            ),
            Origin::Unknown => format!(
                "uid {} gid {} (whose container teed could not tell)",
                self.uid, self.gid
            ),
        }
    }
}

/// The key engine as the decision sees it.
pub trait Engine {
    /// Run one job.
    fn call(&self, job: Job) -> Result<Answer, Failure>;
    /// `sim` or `tee`, for `status` answers.
    fn backend_name(&self) -> &'static str;
}

/// What one audit line says. Never a plaintext, key or blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub op: Option<Op>,
    pub ns: Option<String>,
    pub code: Code,
    /// Rate-limited requests from this caller not logged since the last line.
    pub suppressed: u64,
}

impl Audit {
    /// An audit record for one request.
    pub fn new(op: Option<Op>, ns: Option<String>, code: Code) -> Audit {
        Audit {
            op,
            ns,
            code,
            suppressed: 0,
        }
    }

    /// An audit record for a failure that concerns the connection, not one
    /// operation.
    pub fn connection(code: Code) -> Audit {
        Audit::new(None, None, code)
    }

    /// The audit line, exactly as `docs/daemon.md` specifies it: the
    /// fields of old, then, for a caller in a container, its name (`-` if
    /// it could not be read) and short id; `container=?` if teed could not
    /// tell where the caller runs. Container names are Docker's
    /// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`): no spaces, no `=`.
    pub fn line(&self, peer: &Peer) -> String {
        let suppressed = if self.suppressed > 0 {
            format!(" suppressed={}", self.suppressed)
        } else {
            String::new()
        };
        let place = match &peer.origin {
            Origin::Host => String::new(),
            Origin::Container { id, name } => format!(
                " container={} cid={}",
                name.as_deref().unwrap_or("-"),
                id.short()
            ),
            Origin::Unknown => " container=?".into(),
        };
        format!(
            "audit uid={} gid={} pid={} op={} ns={} result={}{suppressed}{place}",
            peer.uid,
            peer.gid,
            peer.pid,
            self.op.map(Op::name).unwrap_or("-"),
            self.ns.as_deref().unwrap_or("-"),
            self.code.name()
        )
    }
}

/// The outcome of one request line.
pub struct Decision {
    /// The answer line, with its `\n`; wiped on drop.
    pub answer: Zeroizing<Vec<u8>>,
    /// The audit record, or `None` when a rate-limited caller's line is
    /// folded into a later one's `suppressed` count.
    pub audit: Option<Audit>,
}

/// The pause suggested to a caller after `retry`, `busy` or a refusal at
/// the door.
pub const RETRY_AFTER_MS: u64 = 100;

fn lock(m: &Mutex<Callers>) -> MutexGuard<'_, Callers> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// `major.minor.patch` of an engine version number.
pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

type Outcome = Result<Zeroizing<Vec<u8>>, (Code, String)>;

/// A connection let in: whose slot it holds. Give it back with
/// [`release`] when the connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub key: CallerKey,
    /// Some rule named the caller when it was let in.
    pub named: bool,
}

/// Let a new connection from `peer` in, or say why not (`busy`: the daemon,
/// or the pool of callers no rule names, is full; `rate_limited`: this
/// caller holds its maximum).
pub fn admit(
    peer: &Peer,
    now: Instant,
    policy: &Policy,
    callers: &Mutex<Callers>,
) -> Result<Admission, Refusal> {
    let a = Admission {
        key: peer.key(),
        named: policy.names(peer.who()),
    };
    lock(callers).open_connection(&a.key, a.named, now, &policy.limits)?;
    Ok(a)
}

/// A connection let in by [`admit`] ended.
pub fn release(a: &Admission, now: Instant, callers: &Mutex<Callers>) {
    lock(callers).close_connection(&a.key, a.named, now);
}

/// Decide one request line (without its `\n`) from `peer`, received at
/// `now`. `callers` is the per-caller limits state, locked only briefly
/// (never across the engine call).
pub fn decide(
    engine: &impl Engine,
    peer: &Peer,
    line: &[u8],
    now: Instant,
    policy: &Policy,
    callers: &Mutex<Callers>,
) -> Decision {
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
    let key = peer.key();
    let refuse = |wait: Duration, message: &str| {
        let logged = lock(callers).log_limited(&key, now, limits);
        limited(op, ns.clone(), wait, message, logged)
    };
    // (Each lock is taken and released in its own statement.)
    let token = lock(callers).take_token(&key, now, limits);
    if let Err(Refusal::RateLimited(wait)) = token {
        return refuse(wait, "too many requests; slow down");
    }
    let req = match decoded {
        Ok(r) => r,
        Err(e) => {
            if e.op == Some(Op::Unseal) && is_caller_failure(e.code) {
                lock(callers).record_unseal(&key, now, true, limits);
            }
            return Decision {
                answer: protocol::encode_error(e.code, &e.message, None),
                audit: Some(Audit::new(op, None, e.code)),
            };
        }
    };
    if op == Some(Op::Unseal) {
        let allowed = lock(callers).unseal_allowed(&key, now, limits);
        if let Err(Refusal::RateLimited(wait)) = allowed {
            return refuse(wait, "too many failed unseals; wait before trying again");
        }
    }
    let outcome = execute(engine, policy, peer, req);
    let code = match &outcome {
        Ok(_) => Code::OK,
        Err((c, _)) => *c,
    };
    if op == Some(Op::Unseal) {
        lock(callers).record_unseal(&key, now, is_caller_failure(code), limits);
    }
    let answer = match outcome {
        Ok(r) => r,
        Err((c, m)) => protocol::encode_error(c, &m, c.is_retryable().then_some(RETRY_AFTER_MS)),
    };
    Decision {
        answer,
        audit: Some(Audit::new(op, ns, code)),
    }
}

/// A rate-limited answer. Its audit line is written at most once a second
/// per caller (`logged`: the requests folded into it since the last one,
/// or `None` to write none now).
fn limited(
    op: Option<Op>,
    ns: Option<String>,
    wait: Duration,
    message: &str,
    logged: Option<u64>,
) -> Decision {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Decision {
        answer: protocol::encode_error(Code::RateLimited, message, Some(ms)),
        audit: logged.map(|suppressed| Audit {
            suppressed,
            ..Audit::new(op, ns, Code::RateLimited)
        }),
    }
}

/// The answer and audit code for a connection turned away at the door.
pub fn refusal(r: Refusal) -> (Code, &'static str) {
    match r {
        Refusal::Busy => (
            Code::Engine(Status::Busy),
            "the daemon is at its connection limit; retry",
        ),
        Refusal::TooManyConnections => (
            Code::RateLimited,
            "too many connections from this caller; close some and retry",
        ),
        Refusal::RateLimited(_) => (Code::RateLimited, "too many requests; slow down"),
    }
}

fn denied(caller: &Peer, op: Op, ns: Option<&str>) -> (Code, String) {
    let on = ns.map(|n| format!(" on namespace {n}")).unwrap_or_default();
    (
        Code::Denied,
        format!(
            "denied: the policy does not grant {} `{}`{on}",
            caller.describe(),
            op.name()
        ),
    )
}

fn boot_refused() -> (Code, String) {
    (
        Code::Denied,
        "denied: boot/ namespaces are never served at run time (boot units use teectl directly)"
            .into(),
    )
}

/// The run-time rule for a namespaced operation: never `boot/`, then
/// whatever the policy grants this caller.
fn authorize(policy: &Policy, caller: &Peer, op: Op, ns: &str) -> Result<(), (Code, String)> {
    if namespace::is_boot(ns) {
        return Err(boot_refused());
    }
    if !policy.allows(caller.who(), op, Some(ns)) {
        return Err(denied(caller, op, Some(ns)));
    }
    Ok(())
}

fn execute(engine: &impl Engine, policy: &Policy, caller: &Peer, req: Request) -> Outcome {
    let unexpected = || {
        (
            Code::Engine(Status::Internal),
            "the key engine answered another operation".to_string(),
        )
    };
    let call = |job: Job| engine.call(job).map_err(|f| (f.code, f.message));
    match req {
        Request::Status => {
            if !policy.allows(caller.who(), Op::Status, None) {
                return Err(denied(caller, Op::Status, None));
            }
            match call(Job::Status)? {
                Answer::Status(s) => Ok(protocol::encode_status(&StatusAnswer {
                    backend: engine.backend_name().into(),
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
            if !policy.allows(caller.who(), Op::Pubkey, None) {
                return Err(denied(caller, Op::Pubkey, None));
            }
            match call(Job::Pubkey)? {
                Answer::Pubkey { sec1 } => hakeys_client::armor::pubkey_to_pem(&sec1)
                    .map(|pem| protocol::encode_pubkey(&pem))
                    .map_err(|e| (Code::Engine(Status::Internal), e.to_string())),
                _ => Err(unexpected()),
            }
        }
        Request::Seal(s) => {
            authorize(policy, caller, Op::Seal, &s.namespace)?;
            match call(Job::Seal {
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
            authorize(policy, caller, Op::Unseal, &u.blob_namespace)?;
            let (kind, epoch) = (u.blob_kind, u.blob_epoch);
            // The engine is told the namespace policy allowed, and checks
            // the authenticated header against it.
            match call(Job::Unseal {
                blob: u.blob,
                namespace: u.blob_namespace,
            })? {
                Answer::Unseal {
                    namespace,
                    plaintext,
                } => Ok(protocol::encode_unseal(&namespace, kind, epoch, &plaintext)),
                _ => Err(unexpected()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
