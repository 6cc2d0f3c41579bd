//! The key engine.
//!
//! Everything the trusted application does, with no OP-TEE dependency: it
//! runs inside the TA on a board and in-process as the simulator backend on
//! any machine. Hardware sits behind two traits, [`Entropy`] and
//! [`SecureStorage`]. The engine is driven only through encoded protocol
//! messages ([`Engine::handle`]), so every backend exercises the same decoder.
//!
//! Formats (state layout, sealed blob, attestation evidence) are specified in
//! `engine/SPEC.md`.
#![no_std]
// Lints: `Cargo.toml` [lints] (no unsafe; no unwrap, expect, indexing or
// panic outside tests: a panic in the TA kills the service).

#[cfg(test)]
extern crate std;

pub mod attest;
pub mod blob;
pub mod crypto;
pub mod escrow;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod namespace;
pub mod slots;
pub mod state;
mod storage;

use hakeys_proto::{
    self as proto, AttestResponse, BlobResponse, EpochResponse, EscrowResponse, InitResponse,
    OpenResponse, PingResponse, PubkeyResponse, RecoveryStatusResponse, Request, Response, Secret,
    Status, StatusResponse, UnsealResponse,
};
use p256::SecretKey;
use zeroize::Zeroize;

pub use state::State;
pub use storage::{MemoryStorage, ObjectId, SecureStorage, StorageError, MAX_OBJECT_LEN};

/// Version of the engine, reported by `ping`, `status` and attestation:
/// `major << 16 | minor << 8 | patch`.
/// 1.1.0: evidence version 2 by a separate attestation key, offline blob
/// generations and their refusal in `boot/`, `open`, `retire-unmarked`,
/// `attest-pubkey`.
/// 1.2.0: requests are checked against the caller's TEE identity
/// ([`Caller`], [`permitted`]; status `identity_refused`).
pub const ENGINE_VERSION: u32 = 0x0001_0200;

/// Who sent a request, as the TEE reports the session's login identity
/// (`gpd.client.identity`). The kernel, not the caller, computes it: a
/// process can claim only its own effective uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Root's user login identity: every operation.
    Root,
    /// Any other identity: another user's login (the daemon runs as
    /// `hakeys`), a public login, a group or application login, another
    /// TA. Gets what the daemon needs and nothing that destroys, exports or
    /// reaches `boot/`: see [`permitted`].
    Client,
}

/// May `caller` make `req`? Root may make every request. Any other caller
/// may ping, read the status and the public keys, end the boot phase (it
/// only ever closes: teed, which is not root, ends an open boot phase when
/// it starts), seal into a namespace outside `boot/`, and unseal or open a
/// blob only by naming the namespace it must belong to, outside `boot/`.
/// Lifecycle (init, rotate, retire, new identity), rewrap, reseal,
/// attestation signatures and recovery (escrow, its status) are root's.
pub fn permitted(caller: Caller, req: &Request) -> bool {
    let outside_boot = |ns: Option<&str>| ns.is_some_and(|ns| !namespace::is_boot(ns));
    match caller {
        Caller::Root => true,
        Caller::Client => match req {
            Request::Ping
            | Request::Status
            | Request::Pubkey
            | Request::AttestPubkey
            | Request::BootDone => true,
            Request::Seal(r) => outside_boot(Some(&r.namespace)),
            Request::Unseal(r) => outside_boot(r.namespace.as_deref()),
            Request::Open(r) => outside_boot(r.namespace.as_deref()),
            Request::Init
            | Request::Rotate
            | Request::Retire(_)
            | Request::InitNewIdentity
            | Request::RetireUnmarked
            | Request::Rewrap(_)
            | Request::Reseal(_)
            | Request::Attest(_)
            | Request::Escrow(_)
            | Request::RecoveryStatus => false,
        },
    }
}

/// The initial epoch of a freshly initialised device.
pub const FIRST_EPOCH: u32 = 1;

/// A source of cryptographically secure random bytes (the TEE's RNG, or
/// the OS RNG in the simulator).
pub trait Entropy {
    /// Fill `out` entirely, or fail.
    fn fill(&mut self, out: &mut [u8]) -> Result<(), EntropyError>;
}

/// The entropy source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

impl core::fmt::Display for EntropyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the entropy source failed")
    }
}

impl core::error::Error for EntropyError {}

/// What the engine's shell (the OP-TEE TA, the simulator) says about
/// itself; attestation evidence carries it as claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Which backend this is.
    pub backend: attest::Backend,
    /// The trusted application's version (what OP-TEE's anti-rollback
    /// compares); 0 if there is none.
    pub ta_version: u32,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            backend: attest::Backend::Unspecified,
            ta_version: 0,
        }
    }
}

/// Internal failure reasons. These never cross the boundary as such; they
/// are mapped onto wire [`Status`] codes by [`EngineError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    NotInitialised,
    InvalidNamespace,
    InvalidArgument,
    TooLarge,
    BootLocked,
    EpochRetired,
    NamespaceMismatch,
    /// `reseal` of a `boot/` namespace without `allow_boot`.
    BootNotAllowed,
    /// `escrow` to a recovery key other than the enrolled one.
    RecoveryKeyMismatch,
    /// A blob sealed offline where offline blobs are not accepted.
    OfflineRefused,
    Blob(blob::BlobError),
    Storage(StorageError),
    Entropy,
    Internal,
}

impl EngineError {
    /// The stable wire status for this error. Blob failures are all
    /// reported as one opaque [`Status::BlobRejected`].
    pub fn status(self) -> Status {
        use blob::BlobError as B;
        match self {
            EngineError::NotInitialised => Status::NotInitialised,
            EngineError::InvalidNamespace | EngineError::Blob(B::InvalidNamespace) => {
                Status::InvalidNamespace
            }
            EngineError::InvalidArgument | EngineError::Blob(B::Empty) => Status::InvalidArgument,
            EngineError::TooLarge => Status::TooLarge,
            EngineError::BootLocked => Status::BootLocked,
            EngineError::EpochRetired => Status::EpochRetired,
            EngineError::NamespaceMismatch => Status::NamespaceMismatch,
            EngineError::BootNotAllowed => Status::BootNotAllowed,
            EngineError::RecoveryKeyMismatch => Status::RecoveryKeyMismatch,
            EngineError::OfflineRefused => Status::OfflineRefused,
            EngineError::Blob(_) => Status::BlobRejected,
            EngineError::Storage(StorageError::Io) => Status::StorageFailure,
            EngineError::Storage(StorageError::Corrupt) => Status::StorageCorrupt,
            EngineError::Entropy | EngineError::Internal => Status::Internal,
        }
    }
}

/// Says what failed, never with request data or key material; the wrapped
/// blob or storage error is the [`source`](core::error::Error::source).
impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EngineError::NotInitialised => "device not initialised",
            EngineError::InvalidNamespace => "invalid namespace",
            EngineError::InvalidArgument => "invalid argument",
            EngineError::TooLarge => "input too large",
            EngineError::BootLocked => "boot/ namespaces are locked until the next boot",
            EngineError::EpochRetired => "the blob's key epoch has been retired",
            EngineError::NamespaceMismatch => "the blob belongs to another namespace",
            EngineError::BootNotAllowed => "boot/ namespaces are resealed only when allowed",
            EngineError::RecoveryKeyMismatch => "another recovery key is enrolled",
            EngineError::OfflineRefused => "a blob sealed offline is not accepted here",
            EngineError::Blob(_) => "blob rejected",
            EngineError::Storage(_) => "secure storage failed",
            EngineError::Entropy => "the entropy source failed",
            EngineError::Internal => "internal error in the key engine",
        })
    }
}

impl core::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            EngineError::Blob(e) => Some(e),
            EngineError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        EngineError::Storage(e)
    }
}

impl From<blob::BlobError> for EngineError {
    fn from(e: blob::BlobError) -> Self {
        EngineError::Blob(e)
    }
}

/// The key engine over a storage and an entropy source.
///
/// Cloneable only for the fuzz targets (a pre-initialised engine per run);
/// nothing else copies key material.
#[cfg_attr(any(test, feature = "fuzzing"), derive(Clone))]
pub struct Engine<S, E> {
    storage: S,
    entropy: E,
    /// The state and where it is stored, once loaded; key material wiped
    /// on drop.
    cached: Option<slots::Loaded>,
    /// Set by `boot-done`; kept in memory only, so it lasts until the TA (or
    /// in the simulator, the boot) ends.
    boot_locked: bool,
    /// What the shell says it is, for attestation.
    platform: Platform,
}

impl<S: SecureStorage, E: Entropy> Engine<S, E> {
    /// A new engine; nothing is read until the first request.
    pub fn new(storage: S, entropy: E) -> Self {
        Engine {
            storage,
            entropy,
            cached: None,
            boot_locked: false,
            platform: Platform::default(),
        }
    }

    /// Say what the shell is (backend, TA version), for attestation
    /// evidence. Until called, evidence claims [`Platform::default`].
    pub fn set_platform(&mut self, platform: Platform) {
        self.platform = platform;
    }

    /// Put the engine in the post-boot phase, as `boot-done` does. The
    /// simulator calls this at start-up when this boot already ended its
    /// boot phase.
    pub fn lock_boot_namespaces(&mut self) {
        self.boot_locked = true;
    }

    /// Whether `boot/` namespaces are locked.
    pub fn boot_locked(&self) -> bool {
        self.boot_locked
    }

    /// Mutable access to the storage (tests and storage statistics).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Handle one encoded request from [`Caller::Root`] (the simulator, which
    /// has no client boundary, and tests); see [`Engine::handle_as`].
    pub fn handle(&mut self, request: &[u8], out: &mut [u8]) -> usize {
        self.handle_as(Caller::Root, request, out)
    }

    /// Handle one encoded request from `caller` and write the encoded
    /// response into `out`, returning its length. A request `caller` may
    /// not make ([`permitted`]) is answered [`Status::IdentityRefused`]
    /// before anything is read or written. Never panics on any input; every
    /// failure becomes an error response. `out` must hold at least
    /// [`proto::MAX_MESSAGE_LEN`] bytes for every response to fit.
    pub fn handle_as(&mut self, caller: Caller, request: &[u8], out: &mut [u8]) -> usize {
        // Echoed in an error response even when the request is not understood.
        let raw_opcode = proto::request_opcode_raw(request).unwrap_or(0);
        let result = match proto::decode_request(request) {
            Ok(mut req) => {
                let r = if permitted(caller, &req) {
                    self.execute(&req).map_err(EngineError::status)
                } else {
                    Err(Status::IdentityRefused)
                };
                wipe_request(&mut req);
                r
            }
            Err(e) => Err(e.status()),
        };
        let written = match result {
            Ok(mut resp) => {
                let n = proto::encode_response(&resp, out);
                wipe_response(&mut resp);
                n
            }
            Err(status) => proto::encode_error(raw_opcode, status, out),
        };
        match written {
            Ok(n) => n,
            Err(_) => proto::encode_error(raw_opcode, Status::Internal, out).unwrap_or(0),
        }
    }

    /// Execute a decoded request.
    pub fn execute(&mut self, req: &Request) -> Result<Response, EngineError> {
        match req {
            Request::Ping => Ok(Response::Ping(PingResponse {
                protocol_version: proto::PROTOCOL_VERSION,
                engine_version: ENGINE_VERSION,
            })),
            Request::Status => {
                let epochs = self.load()?.map(|s| (s.epoch, s.min_epoch));
                Ok(Response::Status(StatusResponse {
                    engine_version: ENGINE_VERSION,
                    initialised: epochs.is_some(),
                    epoch: epochs.map_or(0, |e| e.0),
                    min_epoch: epochs.map_or(0, |e| e.1),
                    boot_locked: self.boot_locked,
                }))
            }
            Request::Init => self.init().map(Response::Init),
            Request::InitNewIdentity => self.init_new_identity().map(Response::InitNewIdentity),
            Request::Rotate => self.rotate().map(Response::Rotate),
            Request::Retire(r) => self.retire(r.below).map(Response::Retire),
            Request::BootDone => {
                self.boot_locked = true;
                Ok(Response::BootDone)
            }
            Request::Seal(r) => self.seal(&r.namespace, &r.plaintext).map(Response::Seal),
            Request::Unseal(r) => self.unseal(&r.blob, r.namespace.as_deref(), true).map(|o| {
                Response::Unseal(UnsealResponse {
                    namespace: o.namespace,
                    plaintext: o.plaintext,
                })
            }),
            Request::Open(r) => self
                .unseal(&r.blob, r.namespace.as_deref(), r.accept_offline)
                .map(Response::Open),
            Request::RetireUnmarked => self.retire_unmarked().map(|()| Response::RetireUnmarked),
            Request::Rewrap(r) => self.rewrap(&r.blob).map(Response::Rewrap),
            Request::Reseal(r) => self
                .reseal(&r.blob, &r.to, r.allow_boot)
                .map(Response::Reseal),
            Request::Escrow(r) => self
                .escrow(&r.recovery_key, r.replace)
                .map(Response::Escrow),
            Request::RecoveryStatus => {
                let st = self.require()?;
                let enrolled = match st.recovery_key() {
                    Some(fp) => {
                        Some(heapless::Vec::from_slice(fp).map_err(|_| EngineError::Internal)?)
                    }
                    None => None,
                };
                Ok(Response::RecoveryStatus(RecoveryStatusResponse {
                    enrolled,
                }))
            }
            Request::Pubkey => {
                let sec1 = self.device_public()?;
                Ok(Response::Pubkey(PubkeyResponse {
                    sec1: heapless::Vec::from_slice(&sec1).map_err(|_| EngineError::Internal)?,
                }))
            }
            Request::AttestPubkey => {
                let sk = self.attestation_key()?;
                Ok(Response::AttestPubkey(PubkeyResponse {
                    sec1: sec1_vec(&sk.public_key())?,
                }))
            }
            Request::Attest(r) => self.attest(&r.challenge).map(Response::Attest),
        }
    }

    /// Version-2 evidence for `challenge`, signed by the attestation key
    /// and hedged with fresh entropy.
    fn attest(&mut self, challenge: &[u8]) -> Result<AttestResponse, EngineError> {
        if challenge.is_empty() || challenge.len() > proto::MAX_CHALLENGE_LEN {
            return Err(EngineError::InvalidArgument);
        }
        let mut hedge = zeroize::Zeroizing::new([0u8; attest::HEDGE_LEN]);
        self.entropy
            .fill(hedge.as_mut())
            .map_err(|_| EngineError::Entropy)?;
        let boot_phase_ended = self.boot_locked;
        let platform = self.platform;
        let st = self.require()?;
        let claims = attest::ClaimsV2 {
            claims: attest::Claims {
                engine_version: ENGINE_VERSION,
                epoch: st.epoch,
                min_epoch: st.min_epoch,
            },
            boot_phase_ended,
            unmarked_offline_retired: st.unmarked_offline_retired,
            ta_version: platform.ta_version,
            backend: platform.backend,
            sealing_key: self.device_public()?,
        };
        let key = self.attestation_key()?;
        let evidence = attest::sign(&key, challenge, &claims, &hedge)
            .map_err(|_| EngineError::InvalidArgument)?;
        Ok(AttestResponse { evidence })
    }

    /// The state, loading it on first use. `None` if not initialised.
    /// A marker that is missing or names another identity while a valid
    /// slot exists (a cut between the slot and the marker write) is written
    /// here; if that fails the state is still good and the next load or
    /// commit tries again.
    fn load(&mut self) -> Result<Option<&State>, EngineError> {
        if self.cached.is_none() {
            self.cached = slots::load(&mut self.storage)?;
        }
        if let Some(l) = self.cached.as_mut() {
            if !l.marker_ok && l.slot.is_some() {
                l.marker_ok = slots::write_marker(&mut self.storage, &l.device_public).is_ok();
            }
        }
        Ok(self.cached.as_ref().map(|l| &l.state))
    }

    fn require(&mut self) -> Result<&State, EngineError> {
        self.load()?.ok_or(EngineError::NotInitialised)
    }

    /// The device key: offline blobs are sealed to its public key (ECDH).
    fn device_key(&mut self) -> Result<SecretKey, EngineError> {
        let st = self.require()?;
        SecretKey::from_slice(&st.device_key)
            .map_err(|_| EngineError::Storage(StorageError::Corrupt))
    }

    /// The device public key (uncompressed SEC1), computed once per loaded
    /// state.
    fn device_public(&mut self) -> Result<[u8; 65], EngineError> {
        self.require()?;
        self.cached
            .as_ref()
            .map(|l| l.device_public)
            .ok_or(EngineError::NotInitialised)
    }

    /// The attestation key, derived from the root key: it signs evidence,
    /// and the device key signs nothing.
    fn attestation_key(&mut self) -> Result<SecretKey, EngineError> {
        let st = self.require()?;
        attest::attestation_key(&st.root_key).map_err(|_| EngineError::Internal)
    }

    /// Persist `next` as the successor of the loaded state: into the slot
    /// that does not hold it, with the next sequence number; only then does
    /// it become the engine's state. Writes the marker after it if needed
    /// (the first commit after a v1 record, or one whose marker is missing).
    fn commit(&mut self, next: State) -> Result<(), EngineError> {
        let (slot, seq, marker_ok) = match &self.cached {
            Some(l) => (l.slot, l.seq, l.marker_ok),
            None => return Err(EngineError::Internal),
        };
        let seq = seq.checked_add(1).ok_or(StorageError::Corrupt)?;
        self.write_state(slots::other(slot), seq, next, marker_ok)
    }

    /// Write `next` into `slot` with `seq`, then the marker unless
    /// `marker_ok`. A failed slot write drops the cache (it may or may not
    /// have reached the medium: reload rather than trust either version).
    fn write_state(
        &mut self,
        slot: ObjectId,
        seq: u64,
        next: State,
        marker_ok: bool,
    ) -> Result<(), EngineError> {
        // The same identity keeps its public key; a new one computes it.
        let device_public = match &self.cached {
            Some(l) if l.state.device_key == next.device_key => l.device_public,
            _ => slots::device_public(&next)?,
        };
        if let Err(e) = slots::write_slot(&mut self.storage, slot, seq, &next) {
            self.cached = None;
            return Err(EngineError::Storage(e));
        }
        let loaded = self.cached.insert(slots::Loaded {
            state: next,
            seq,
            slot: Some(slot),
            marker_ok,
            device_public,
        });
        if !marker_ok {
            slots::write_marker(&mut self.storage, &loaded.device_public)?;
            loaded.marker_ok = true;
        }
        Ok(())
    }

    /// A new root key, device key and first epoch from the entropy source.
    fn new_identity(&mut self) -> Result<State, EngineError> {
        let mut st = State {
            root_key: [0u8; 32],
            device_key: [0u8; 32],
            epoch: FIRST_EPOCH,
            min_epoch: FIRST_EPOCH,
            recovery: state::NO_RECOVERY_KEY,
            unmarked_offline_retired: false,
        };
        self.entropy
            .fill(&mut st.root_key)
            .map_err(|_| EngineError::Entropy)?;
        let device = crypto::generate_secret_key(&mut self.entropy)?;
        st.device_key.copy_from_slice(device.to_bytes().as_slice());
        Ok(st)
    }

    /// Create the identity if the device was never initialised. A device
    /// whose state is lost fails here with `StorageCorrupt` (from `load`):
    /// only `init_new_identity` replaces a lost identity.
    fn init(&mut self) -> Result<InitResponse, EngineError> {
        if let Some(st) = self.load()? {
            return Ok(InitResponse {
                created: false,
                epoch: st.epoch,
            });
        }
        // Slots may hold a torn first write of an earlier, interrupted
        // init: number past them.
        let seq = slots::Scan::read(&mut self.storage)?
            .max_seq()
            .checked_add(1)
            .ok_or(StorageError::Corrupt)?;
        let next = self.new_identity()?;
        self.write_state(ObjectId::SlotA, seq, next, false)?;
        Ok(InitResponse {
            created: true,
            epoch: FIRST_EPOCH,
        })
    }

    /// Replace the identity whatever the storage holds: the new state goes
    /// first into the slot that does not hold the current state (so a cut
    /// leaves the old or the new identity), then into the other slot, then
    /// the marker is rewritten (`engine/SPEC.md`, "New identity").
    fn init_new_identity(&mut self) -> Result<InitResponse, EngineError> {
        let scan = slots::Scan::read_tolerant(&mut self.storage)?;
        let current = scan.best().ok().flatten().map(|(id, _, _)| id);
        let seq = scan.max_seq().checked_add(1).ok_or(StorageError::Corrupt)?;
        drop(scan);
        let first = slots::other(current);
        let next = self.new_identity()?;
        self.cached = None;
        slots::write_slot(&mut self.storage, first, seq, &next)?;
        let seq = seq.checked_add(1).ok_or(StorageError::Corrupt)?;
        self.write_state(slots::other(Some(first)), seq, next, false)?;
        Ok(InitResponse {
            created: true,
            epoch: FIRST_EPOCH,
        })
    }

    fn rotate(&mut self) -> Result<EpochResponse, EngineError> {
        let mut next = self.require()?.clone();
        next.epoch = next
            .epoch
            .checked_add(1)
            .ok_or(EngineError::InvalidArgument)?;
        let resp = EpochResponse {
            epoch: next.epoch,
            min_epoch: next.min_epoch,
        };
        self.commit(next)?;
        Ok(resp)
    }

    fn retire(&mut self, below: u32) -> Result<EpochResponse, EngineError> {
        let st = self.require()?;
        // The floor only rises, and the current epoch can never be retired.
        if below < st.min_epoch || below > st.epoch {
            return Err(EngineError::InvalidArgument);
        }
        if below == st.min_epoch {
            return Ok(EpochResponse {
                epoch: st.epoch,
                min_epoch: st.min_epoch,
            });
        }
        let mut next = st.clone();
        next.min_epoch = below;
        let resp = EpochResponse {
            epoch: next.epoch,
            min_epoch: next.min_epoch,
        };
        self.commit(next)?;
        Ok(resp)
    }

    /// Refuse unmarked blobs sealed offline from now on (one commit the
    /// first time; nothing to write after).
    fn retire_unmarked(&mut self) -> Result<(), EngineError> {
        let st = self.require()?;
        if st.unmarked_offline_retired {
            return Ok(());
        }
        let mut next = st.clone();
        next.unmarked_offline_retired = true;
        self.commit(next)
    }

    fn seal(&mut self, ns: &str, plaintext: &[u8]) -> Result<BlobResponse, EngineError> {
        if !namespace::is_valid(ns) {
            return Err(EngineError::InvalidNamespace);
        }
        let mut salt = [0u8; blob::SALT_LEN];
        self.entropy
            .fill(&mut salt)
            .map_err(|_| EngineError::Entropy)?;
        let st = self.require()?;
        let blob = blob::seal_device(&st.root_key, st.epoch, ns, plaintext, &salt)?;
        Ok(BlobResponse { blob })
    }

    /// Authenticate and decrypt a blob, applying the epoch policy: a device
    /// blob's epoch, an offline blob's generation (its epoch field; 0 is
    /// unmarked). The boot-phase, namespace and offline-acceptance checks
    /// are the callers'.
    fn open(&mut self, parsed: &blob::Parsed<'_>, out: &mut Secret) -> Result<(), EngineError> {
        let st = self.require()?;
        match (parsed.kind, parsed.epoch) {
            (blob::Kind::ToDevice, 0) if st.unmarked_offline_retired => {
                return Err(EngineError::EpochRetired)
            }
            (blob::Kind::ToDevice, 0) => {}
            (_, epoch) if epoch < st.min_epoch => return Err(EngineError::EpochRetired),
            // Not sealed by (or for) this state: another device, a rolled
            // back one, or a generation this board never published.
            (_, epoch) if epoch > st.epoch => {
                return Err(EngineError::Blob(blob::BlobError::Unauthentic))
            }
            _ => {}
        }
        match parsed.kind {
            blob::Kind::Device => blob::open_device(&st.root_key, parsed, out)?,
            blob::Kind::ToDevice => {
                let public = self.device_public()?;
                let sk = self.device_key()?;
                blob::open_to_device_as(&sk, &public, parsed, out)?;
            }
        }
        Ok(())
    }

    /// `unseal` and `open`: checks in the order of `engine/SPEC.md` §2,
    /// "Opening".
    fn unseal(
        &mut self,
        blob_bytes: &[u8],
        expected_ns: Option<&str>,
        accept_offline: bool,
    ) -> Result<OpenResponse, EngineError> {
        let parsed = blob::parse(blob_bytes)?;
        if let Some(ns) = expected_ns {
            if ns != parsed.namespace {
                return Err(EngineError::NamespaceMismatch);
            }
        }
        if parsed.kind == blob::Kind::ToDevice
            && !(accept_offline && namespace::accepts_offline(parsed.namespace))
        {
            return Err(EngineError::OfflineRefused);
        }
        if namespace::is_boot(parsed.namespace) {
            if self.boot_locked {
                return Err(EngineError::BootLocked);
            }
        } else {
            // The first unseal outside boot/ is run-time use: the boot phase
            // is over, whether or not anyone ran boot-done
            // (docs/security-model.md, "The boot phase ends for certain").
            self.boot_locked = true;
        }
        let mut plaintext = Secret::new();
        self.open(&parsed, &mut plaintext)?;
        let mut namespace = proto::Namespace::new();
        namespace
            .push_str(parsed.namespace)
            .map_err(|_| EngineError::Internal)?;
        Ok(OpenResponse {
            namespace,
            kind: parsed.kind.number(),
            epoch: parsed.epoch,
            plaintext,
        })
    }

    fn rewrap(&mut self, blob_bytes: &[u8]) -> Result<BlobResponse, EngineError> {
        let parsed = blob::parse(blob_bytes)?;
        let mut plaintext = Secret::new();
        self.open(&parsed, &mut plaintext)?;
        let resealed = self.seal(parsed.namespace, &plaintext);
        plaintext.as_mut_slice().zeroize();
        resealed
    }

    /// Open a blob and seal it to another device's public key `to`, in the
    /// same namespace: checks in the order of `engine/SPEC.md`, "Reseal".
    fn reseal(
        &mut self,
        blob_bytes: &[u8],
        to: &[u8],
        allow_boot: bool,
    ) -> Result<BlobResponse, EngineError> {
        let target = uncompressed_point(to)?;
        let parsed = blob::parse(blob_bytes)?;
        if namespace::is_boot(parsed.namespace) {
            if !allow_boot {
                return Err(EngineError::BootNotAllowed);
            }
            if self.boot_locked {
                return Err(EngineError::BootLocked);
            }
        }
        if parsed.kind == blob::Kind::ToDevice && !namespace::accepts_offline(parsed.namespace) {
            return Err(EngineError::OfflineRefused);
        }
        let mut plaintext = Secret::new();
        self.open(&parsed, &mut plaintext)?;
        let resealed =
            blob::seal_to_device(&target, parsed.namespace, &plaintext, &mut self.entropy);
        plaintext.as_mut_slice().zeroize();
        Ok(BlobResponse { blob: resealed? })
    }

    /// Export the root key and device key sealed to `recovery`. The first
    /// escrow enrols the recovery key (one commit); later ones must name
    /// the same key, unless `replace` is set during the boot phase
    /// (`engine/SPEC.md`, "Escrow").
    fn escrow(&mut self, recovery: &[u8], replace: bool) -> Result<EscrowResponse, EngineError> {
        let rk = uncompressed_point(recovery)?;
        let fp = escrow::fingerprint(&rk);
        if fp == state::NO_RECOVERY_KEY {
            return Err(EngineError::InvalidArgument);
        }
        let boot_locked = self.boot_locked;
        let st = self.require()?;
        let enrol = match st.recovery_key() {
            Some(enrolled) if *enrolled == fp => false,
            Some(_) if replace && !boot_locked => true,
            Some(_) => return Err(EngineError::RecoveryKeyMismatch),
            None => true,
        };
        // Sealed first, so a failure leaves nothing enrolled; the escrow
        // does not depend on the fingerprint it records.
        let mut next = st.clone();
        let device = self.device_public()?;
        let sealed = escrow::seal(&rk, &next, &device, &mut self.entropy)?;
        if enrol {
            next.recovery = fp;
            self.commit(next)?;
        }
        Ok(EscrowResponse { escrow: sealed })
    }
}

/// A public key's uncompressed SEC1 form as a wire field.
fn sec1_vec(pk: &p256::PublicKey) -> Result<heapless::Vec<u8, { proto::PUBKEY_LEN }>, EngineError> {
    heapless::Vec::from_slice(&crypto::sec1_uncompressed(pk)).map_err(|_| EngineError::Internal)
}

/// A P-256 public key given as exactly its 65-byte uncompressed SEC1 form.
fn uncompressed_point(sec1: &[u8]) -> Result<p256::PublicKey, EngineError> {
    let pk = crypto::parse_public_key(sec1).map_err(|_| EngineError::InvalidArgument)?;
    if crypto::sec1_uncompressed(&pk).as_slice() != sec1 {
        return Err(EngineError::InvalidArgument);
    }
    Ok(pk)
}

fn wipe_request(req: &mut Request) {
    if let Request::Seal(r) = req {
        r.plaintext.as_mut_slice().zeroize();
    }
}

fn wipe_response(resp: &mut Response) {
    match resp {
        Response::Unseal(r) => r.plaintext.as_mut_slice().zeroize(),
        Response::Open(r) => r.plaintext.as_mut_slice().zeroize(),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
