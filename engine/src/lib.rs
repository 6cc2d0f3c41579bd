//! The key engine.
//!
//! Everything the trusted application does, with no OP-TEE dependency: it
//! runs inside the TA on a board and in-process as the simulator backend on
//! any machine. Hardware sits behind two traits, [`Entropy`] and
//! [`SecureStorage`]. The engine is driven only through encoded protocol
//! messages ([`Engine::handle`]), so every backend exercises the same decoder.
//!
//! Formats (state record, sealed blob, attestation evidence) are specified in
//! `engine/SPEC.md`.
#![no_std]
// Lints: `Cargo.toml` [lints] (no unsafe; no unwrap, expect, indexing or
// panic outside tests: a panic in the TA kills the service).

#[cfg(test)]
extern crate std;

pub mod attest;
pub mod blob;
pub mod crypto;
pub mod namespace;
pub mod state;

use hakeys_proto::{
    self as proto, AttestResponse, BlobResponse, EpochResponse, InitResponse, PingResponse,
    PubkeyResponse, Request, Response, Secret, Status, StatusResponse, UnsealResponse,
};
use p256::SecretKey;
use zeroize::Zeroize;

pub use state::State;

/// Version of the engine, reported by `ping`, `status` and attestation:
/// `major << 16 | minor << 8 | patch`.
pub const ENGINE_VERSION: u32 = 0x0001_0000;

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

/// The engine's stored objects. Each holds at most [`MAX_OBJECT_LEN`]
/// bytes. Which ones the engine writes, when, and why that survives a power
/// cut at any write is specified in `engine/SPEC.md` ("State layout").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// The state record of format v1, as releases before the slot layout
    /// wrote it. Read to carry such a device over; never written again.
    LegacyState,
    /// The first of the two state slots, written alternately.
    SlotA,
    /// The second state slot.
    SlotB,
    /// The initialisation marker: written when the device is initialised,
    /// never rewritten or removed, so that lost state is told apart from a
    /// device that was never set up.
    Marker,
}

impl ObjectId {
    /// Every object, in a fixed order.
    pub const ALL: [ObjectId; 4] = [
        ObjectId::LegacyState,
        ObjectId::SlotA,
        ObjectId::SlotB,
        ObjectId::Marker,
    ];
}

/// The largest stored object, in bytes.
pub const MAX_OBJECT_LEN: usize = 256;

/// Where the engine keeps its objects (an OP-TEE persistent object per
/// [`ObjectId`] in RPMB on a board; an RPMB block per object in the
/// simulator; memory in tests).
///
/// The contract an implementation must keep, on which the engine's
/// power-cut safety rests: a [`SecureStorage::write`] interrupted at any
/// point (a crash, a power cut, a failed write) leaves object `id` holding
/// its previous contents, the new contents, or contents that fail the
/// engine's own integrity check of that object — and never changes any
/// other object. A write of a missing object, interrupted, leaves it
/// missing or complete.
pub trait SecureStorage {
    /// Read object `id` into `buf`; `Ok(None)` if it does not exist.
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError>;
    /// Write object `id` whole, creating it if it does not exist.
    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError>;
}

/// Secure storage failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// Could not be read or written.
    Io,
    /// What was read fails its integrity or freshness check.
    Corrupt,
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StorageError::Io => "secure storage could not be read or written",
            StorageError::Corrupt => "secure storage failed its integrity or freshness check",
        })
    }
}

impl core::error::Error for StorageError {}

/// Secure storage in memory: for tests, fuzzing and benchmarks. Nothing
/// survives the value; never use it for real keys.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    objects: [Option<heapless::Vec<u8, MAX_OBJECT_LEN>>; 4],
}

fn slot_of(id: ObjectId) -> usize {
    match id {
        ObjectId::LegacyState => 0,
        ObjectId::SlotA => 1,
        ObjectId::SlotB => 2,
        ObjectId::Marker => 3,
    }
}

impl MemoryStorage {
    /// Object `id`, if it exists (tests inspect and corrupt it).
    pub fn object_mut(&mut self, id: ObjectId) -> Option<&mut [u8]> {
        self.objects
            .get_mut(slot_of(id))
            .and_then(|o| o.as_mut())
            .map(|r| r.as_mut_slice())
    }

    /// Remove object `id` (tests: a lost object).
    pub fn remove(&mut self, id: ObjectId) {
        if let Some(o) = self.objects.get_mut(slot_of(id)) {
            *o = None;
        }
    }
}

impl SecureStorage for MemoryStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        match self.objects.get(slot_of(id)).and_then(|o| o.as_ref()) {
            None => Ok(None),
            Some(r) => {
                let dst = buf.get_mut(..r.len()).ok_or(StorageError::Corrupt)?;
                dst.copy_from_slice(r);
                Ok(Some(r.len()))
            }
        }
    }

    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
        let obj = heapless::Vec::from_slice(data).map_err(|_| StorageError::Io)?;
        let o = self.objects.get_mut(slot_of(id)).ok_or(StorageError::Io)?;
        *o = Some(obj);
        Ok(())
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
pub struct Engine<S, E> {
    storage: S,
    entropy: E,
    /// The state record, once loaded; key material wiped on drop.
    cached: Option<State>,
    /// Set by `boot-done`; kept in memory only, so it lasts until the TA (or
    /// in the simulator, the boot) ends.
    boot_locked: bool,
}

impl<S: SecureStorage, E: Entropy> Engine<S, E> {
    /// A new engine; nothing is read until the first request.
    pub fn new(storage: S, entropy: E) -> Self {
        Engine {
            storage,
            entropy,
            cached: None,
            boot_locked: false,
        }
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

    /// Handle one encoded request and write the encoded response into
    /// `out`, returning its length. Never panics on any input; every
    /// failure becomes an error response. `out` must hold at least
    /// [`proto::MAX_MESSAGE_LEN`] bytes for every response to fit.
    pub fn handle(&mut self, request: &[u8], out: &mut [u8]) -> usize {
        // Echoed in an error response even when the request is not understood.
        let raw_opcode = proto::request_opcode_raw(request).unwrap_or(0);
        let result = match proto::decode_request(request) {
            Ok(mut req) => {
                let r = self.execute(&req);
                wipe_request(&mut req);
                r.map_err(EngineError::status)
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
            Request::Rotate => self.rotate().map(Response::Rotate),
            Request::Retire(r) => self.retire(r.below).map(Response::Retire),
            Request::BootDone => {
                self.boot_locked = true;
                Ok(Response::BootDone)
            }
            Request::Seal(r) => self.seal(&r.namespace, &r.plaintext).map(Response::Seal),
            Request::Unseal(r) => self
                .unseal(&r.blob, r.namespace.as_deref())
                .map(Response::Unseal),
            Request::Rewrap(r) => self.rewrap(&r.blob).map(Response::Rewrap),
            Request::Pubkey => {
                let sk = self.device_key()?;
                let mut sec1 = heapless::Vec::new();
                sec1.extend_from_slice(&crypto::sec1_uncompressed(&sk.public_key()))
                    .map_err(|_| EngineError::Internal)?;
                Ok(Response::Pubkey(PubkeyResponse { sec1 }))
            }
            Request::Attest(r) => {
                let (epoch, min_epoch) = {
                    let st = self.require()?;
                    (st.epoch, st.min_epoch)
                };
                let sk = self.device_key()?;
                let claims = attest::Claims {
                    engine_version: ENGINE_VERSION,
                    epoch,
                    min_epoch,
                };
                let evidence = attest::sign(&sk, &r.challenge, &claims)
                    .map_err(|_| EngineError::InvalidArgument)?;
                Ok(Response::Attest(AttestResponse { evidence }))
            }
        }
    }

    /// The state, loading it on first use. `None` if not initialised.
    fn load(&mut self) -> Result<Option<&State>, EngineError> {
        if self.cached.is_none() {
            let mut buf = [0u8; state::STATE_LEN + 1];
            let loaded = self.storage.read(ObjectId::LegacyState, &mut buf);
            let result = match loaded {
                Ok(None) => Ok(None),
                Ok(Some(n)) => buf
                    .get(..n)
                    .ok_or(EngineError::Storage(StorageError::Corrupt))
                    .and_then(|b| {
                        State::decode(b).map_err(|_| EngineError::Storage(StorageError::Corrupt))
                    })
                    .map(Some),
                Err(e) => Err(EngineError::Storage(e)),
            };
            buf.zeroize();
            self.cached = result?;
        }
        Ok(self.cached.as_ref())
    }

    fn require(&mut self) -> Result<&State, EngineError> {
        self.load()?.ok_or(EngineError::NotInitialised)
    }

    fn device_key(&mut self) -> Result<SecretKey, EngineError> {
        let st = self.require()?;
        SecretKey::from_slice(&st.device_key)
            .map_err(|_| EngineError::Storage(StorageError::Corrupt))
    }

    /// Persist `next` atomically; only then does it become the engine's state.
    fn commit(&mut self, next: State) -> Result<(), EngineError> {
        let mut rec = next.encode();
        let stored = self.storage.write(ObjectId::LegacyState, &rec);
        rec.zeroize();
        match stored {
            Ok(()) => {
                self.cached = Some(next);
                Ok(())
            }
            Err(e) => {
                // The store may or may not have reached the medium; reload
                // next time rather than trusting either version.
                self.cached = None;
                Err(EngineError::Storage(e))
            }
        }
    }

    fn init(&mut self) -> Result<InitResponse, EngineError> {
        if let Some(st) = self.load()? {
            return Ok(InitResponse {
                created: false,
                epoch: st.epoch,
            });
        }
        let mut root_key = [0u8; 32];
        self.entropy
            .fill(&mut root_key)
            .map_err(|_| EngineError::Entropy)?;
        let device = crypto::generate_secret_key(&mut self.entropy)?;
        let mut device_key = [0u8; 32];
        device_key.copy_from_slice(device.to_bytes().as_slice());
        let next = State {
            root_key,
            device_key,
            epoch: FIRST_EPOCH,
            min_epoch: FIRST_EPOCH,
        };
        root_key.zeroize();
        device_key.zeroize();
        self.commit(next)?;
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

    /// Authenticate and decrypt a blob, applying the epoch policy. The
    /// boot-phase and namespace checks are the callers'.
    fn open(&mut self, parsed: &blob::Parsed<'_>, out: &mut Secret) -> Result<(), EngineError> {
        match parsed.kind {
            blob::Kind::Device => {
                let st = self.require()?;
                if parsed.epoch < st.min_epoch {
                    return Err(EngineError::EpochRetired);
                }
                if parsed.epoch > st.epoch {
                    // Not sealed by this state: another device or a rolled-back one.
                    return Err(EngineError::Blob(blob::BlobError::Unauthentic));
                }
                blob::open_device(&st.root_key, parsed, out)?;
            }
            blob::Kind::ToDevice => {
                let sk = self.device_key()?;
                blob::open_to_device(&sk, parsed, out)?;
            }
        }
        Ok(())
    }

    fn unseal(
        &mut self,
        blob_bytes: &[u8],
        expected_ns: Option<&str>,
    ) -> Result<UnsealResponse, EngineError> {
        let parsed = blob::parse(blob_bytes)?;
        if let Some(ns) = expected_ns {
            if ns != parsed.namespace {
                return Err(EngineError::NamespaceMismatch);
            }
        }
        if namespace::is_boot(parsed.namespace) && self.boot_locked {
            return Err(EngineError::BootLocked);
        }
        let mut plaintext = Secret::new();
        self.open(&parsed, &mut plaintext)?;
        let mut namespace = proto::Namespace::new();
        namespace
            .push_str(parsed.namespace)
            .map_err(|_| EngineError::Internal)?;
        Ok(UnsealResponse {
            namespace,
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
}

fn wipe_request(req: &mut Request) {
    if let Request::Seal(r) = req {
        r.plaintext.as_mut_slice().zeroize();
    }
}

fn wipe_response(resp: &mut Response) {
    if let Response::Unseal(r) = resp {
        r.plaintext.as_mut_slice().zeroize();
    }
}

#[cfg(test)]
mod tests;
