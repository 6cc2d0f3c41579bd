//! The simulator's secure storage: each engine object in its own block of
//! an `rpmb-sim` device, written with authenticated RPMB writes and read
//! back with nonce-checked, MAC-verified reads (format in `host/SPEC.md`).
//!
//! The simulated SoC has a "hardware unique key" (HUK, a file in the state
//! directory standing in for a fused key). From it come the RPMB
//! authentication key (bound to the device's CID, as OP-TEE does) and the key
//! that encrypts and authenticates the blocks. So:
//! - an edited image is detected (a block's AES-GCM tag fails);
//! - a block moved to another address is detected (its address is part of
//!   the authenticated header);
//! - a block rolled back, replayed or erased under a newer write counter is
//!   detected: every block names the counter it was written at and the
//!   counters at which every other block was last written, and the block
//!   written last must sit exactly one below the device's counter;
//! - a device programmed with another key is detected (response MACs fail).
//!
//! What a software simulator cannot detect is a wholesale copy of an older
//! image and its HUK: on hardware the write counter lives in the eMMC and
//! cannot be rolled back. See docs/security-model.md.

use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::Aes256Gcm;
use hakeys_engine::{ObjectId, SecureStorage, StorageError};
use rpmb_sim::client::{self, ClientError};
use rpmb_sim::RpmbDevice;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Magic of every hakeys block.
pub const RECORD_MAGIC: [u8; 4] = *b"HKSS";
/// Block format of releases before the slot layout: the v1 state record,
/// alone, in block [`RECORD_ADDRESS`]. Read, never written.
pub const RECORD_VERSION_V1: u8 = 1;
/// Block format written now (one engine object per block).
pub const RECORD_VERSION: u8 = 2;
/// RPMB block (half-sector) of `LegacyState`: where releases before the
/// slot layout kept the state record, so their state directories load.
pub const RECORD_ADDRESS: u16 = 0;
/// Number of blocks used, from block 0: one per [`ObjectId`].
pub const OBJECT_BLOCKS: u16 = 4;
const V1_HEADER_LEN: usize = 24;
const HEADER_LEN: usize = 40;
const TAG_LEN: usize = 16;
const BLOCK_LEN: usize = 256;
/// Largest engine object that fits one block.
pub const MAX_RECORD_LEN: usize = BLOCK_LEN - HEADER_LEN - TAG_LEN;
/// In a block's table: the block was never written.
const NEVER: u32 = u32::MAX;

/// The RPMB block holding object `id`.
pub fn block_of(id: ObjectId) -> u16 {
    match id {
        ObjectId::LegacyState => RECORD_ADDRESS,
        ObjectId::SlotA => 1,
        ObjectId::SlotB => 2,
        ObjectId::Marker => 3,
    }
}

/// Why the simulator storage failed, in more detail than the engine sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimStorageError {
    Io(String),
    Corrupt(&'static str),
}

impl std::fmt::Display for SimStorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimStorageError::Io(m) => f.write_str(m),
            SimStorageError::Corrupt(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SimStorageError {}

/// Keys derived from the simulated HUK.
pub struct HukKeys {
    rpmb_key: Zeroizing<[u8; 32]>,
    record_key: Zeroizing<[u8; 32]>,
}

impl HukKeys {
    /// Derive the RPMB key (bound to `cid`) and the record key from `huk`.
    pub fn derive(huk: &[u8; 32], cid: &[u8; 16]) -> HukKeys {
        let mut rpmb_key = Zeroizing::new([0u8; 32]);
        let mut record_key = Zeroizing::new([0u8; 32]);
        let hk = hkdf::Hkdf::<Sha256>::new(None, huk);
        // Expanding 32 bytes from SHA-256 HKDF cannot fail.
        let _ = hk.expand_multi_info(&[b"hakeys/v1/sim/rpmb-key\0", cid], rpmb_key.as_mut());
        let _ = hk.expand(b"hakeys/v1/sim/record-key", record_key.as_mut());
        HukKeys {
            rpmb_key,
            record_key,
        }
    }
}

/// RPMB traffic, counted at the device interface (for the benchmark record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// eMMC transactions (request sequence + its responses).
    pub transactions: u64,
    /// Frames the host sent (requests, including result-read requests).
    pub frames_sent: u64,
    /// Frames the device returned.
    pub frames_received: u64,
    /// Authenticated data-write transactions (each bumps the write counter).
    pub authenticated_writes: u64,
}

/// The device with its traffic counted.
struct CountingDevice {
    device: RpmbDevice,
    stats: FrameStats,
}

impl rpmb_sim::Transport for CountingDevice {
    fn transact(
        &mut self,
        request: &[rpmb_sim::Frame],
    ) -> Result<Vec<rpmb_sim::Frame>, rpmb_sim::Error> {
        self.stats.transactions += 1;
        self.stats.frames_sent += request.len() as u64;
        if request.first().map(|f| f.req_resp()) == Some(rpmb_sim::frame::REQ_WRITE_DATA) {
            self.stats.authenticated_writes += 1;
        }
        let resp = self.device.transact(request)?;
        self.stats.frames_received += resp.len() as u64;
        Ok(resp)
    }
}

/// One object's contents as verified: missing, its bytes, or why not.
type ObjectRead = Result<Option<Zeroizing<Vec<u8>>>, SimStorageError>;

/// The object blocks as read and checked together (`host/SPEC.md` §3,
/// "Load"). Kept until the next write: this process holds the image's
/// exclusive lock, so nothing else changes it.
struct Snapshot {
    /// The device's write counter.
    counter: u32,
    /// The table of the block written last: for each block, the counter it
    /// was written at (or [`NEVER`]). `None` if that block cannot be found.
    table: Option<[u32; 4]>,
    objects: [ObjectRead; 4],
}

/// One block, parsed and authenticated.
enum Block {
    /// All zero: never written.
    Empty,
    /// A hakeys block whose tag verifies.
    Record {
        written_at: u32,
        table: [u32; 4],
        content: Zeroizing<Vec<u8>>,
    },
    /// Anything else.
    Bad(&'static str),
}

/// The engine's storage on an rpmb-sim device.
pub struct RpmbStateStorage {
    device: CountingDevice,
    keys: HukKeys,
    snapshot: Option<Snapshot>,
    /// The most recent detailed failure, for the CLI's message.
    pub last_error: Option<SimStorageError>,
}

fn nonce() -> Result<[u8; 16], SimStorageError> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| SimStorageError::Io(format!("no OS randomness: {e}")))?;
    Ok(n)
}

fn map_client(e: ClientError) -> SimStorageError {
    match e {
        ClientError::BadMac | ClientError::NonceMismatch => SimStorageError::Corrupt(
            "RPMB response failed authentication (wrong key or tampered device)",
        ),
        ClientError::Device { result } => SimStorageError::Io(format!(
            "RPMB device refused the request (result 0x{result:04x})"
        )),
        other => SimStorageError::Io(format!("RPMB transport failed: {other:?}")),
    }
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

impl RpmbStateStorage {
    /// Storage on `device`, with keys from the simulated HUK.
    pub fn new(device: RpmbDevice, huk: &[u8; 32]) -> Self {
        let cid = device.info().cid;
        RpmbStateStorage {
            keys: HukKeys::derive(huk, &cid),
            device: CountingDevice {
                device,
                stats: FrameStats::default(),
            },
            snapshot: None,
            last_error: None,
        }
    }

    /// RPMB traffic so far.
    pub fn stats(&self) -> FrameStats {
        self.device.stats
    }

    fn record_cipher(&self) -> Aes256Gcm {
        let key: &[u8; 32] = &self.keys.record_key;
        Aes256Gcm::new(key.into())
    }

    /// Parse and authenticate the block at `address`.
    fn parse(&self, address: u16, block: &[u8; BLOCK_LEN]) -> Block {
        if block.iter().all(|b| *b == 0) {
            return Block::Empty;
        }
        if block[..4] != RECORD_MAGIC {
            return Block::Bad("a state block is not a hakeys record");
        }
        let (header_len, max_len) = match block[4] {
            RECORD_VERSION_V1 if address == RECORD_ADDRESS && block[5] == 0 => {
                (V1_HEADER_LEN, BLOCK_LEN - V1_HEADER_LEN - TAG_LEN)
            }
            RECORD_VERSION if u16::from(block[5]) == address => (HEADER_LEN, MAX_RECORD_LEN),
            RECORD_VERSION => return Block::Bad("a state block sits at another address"),
            _ => return Block::Bad("a state block has an unknown version"),
        };
        let len = usize::from(u16::from_be_bytes([block[6], block[7]]));
        if len > max_len {
            return Block::Bad("a state block has an impossible length");
        }
        let written_at = be32(&block[8..12]);
        let table = if header_len == V1_HEADER_LEN {
            [written_at, NEVER, NEVER, NEVER]
        } else {
            [0, 1, 2, 3].map(|i| be32(&block[24 + 4 * i..]))
        };
        if table[usize::from(address)] != written_at {
            return Block::Bad("a state block contradicts its own table");
        }
        let mut b = Zeroizing::new(*block);
        let (aad, rest) = b.split_at_mut(header_len);
        let (ct, tail) = rest.split_at_mut(len);
        let (Ok(tag), Ok(n)) = (
            Tag::<Aes256Gcm>::try_from(&tail[..TAG_LEN]),
            Nonce::<Aes256Gcm>::try_from(&aad[12..24]),
        ) else {
            return Block::Bad("a state block is malformed");
        };
        if self
            .record_cipher()
            .decrypt_inout_detached(&n, aad, ct.into(), &tag)
            .is_err()
        {
            return Block::Bad("a state block failed its integrity check");
        }
        Block::Record {
            written_at,
            table,
            content: Zeroizing::new(ct.to_vec()),
        }
    }

    /// Read the counter and every object block, and check them together.
    fn load_snapshot(&mut self) -> Result<Snapshot, SimStorageError> {
        const NONE: ObjectRead = Ok(None);
        if !self.device.device.info().key_programmed {
            return Ok(Snapshot {
                counter: 0,
                table: Some([NEVER; 4]),
                objects: [NONE; 4],
            });
        }
        let counter = client::read_counter(&mut self.device, &self.keys.rpmb_key, &nonce()?)
            .map_err(map_client)?;
        let raw = client::read_blocks(
            &mut self.device,
            &self.keys.rpmb_key,
            0,
            OBJECT_BLOCKS,
            &nonce()?,
        )
        .map_err(map_client)?;
        let raw: Vec<Zeroizing<[u8; BLOCK_LEN]>> = raw.into_iter().map(Zeroizing::new).collect();
        if raw.len() != usize::from(OBJECT_BLOCKS) {
            return Err(SimStorageError::Corrupt("short RPMB read"));
        }
        let blocks: Vec<Block> = (0..OBJECT_BLOCKS)
            .zip(&raw)
            .map(|(a, b)| self.parse(a, b))
            .collect();
        let corrupt = |msg| Snapshot {
            counter,
            table: None,
            objects: [0; 4].map(|_| Err(SimStorageError::Corrupt(msg))),
        };
        // The block written last names where every other block stands.
        let mut heads = blocks.iter().filter_map(|b| match b {
            Block::Record {
                written_at, table, ..
            } if written_at.checked_add(1) == Some(counter) => Some(*table),
            _ => None,
        });
        let table = match (counter, heads.next(), heads.next()) {
            (0, _, _) => [NEVER; 4],
            (_, Some(t), None) => t,
            (_, None, _) => {
                return Ok(corrupt(
                    "the state block written last is gone (erased, rolled back or edited)",
                ))
            }
            (_, Some(_), Some(_)) => {
                return Ok(corrupt("two state blocks claim the same write"));
            }
        };
        let objects = [0usize, 1, 2, 3].map(|i| match (table[i], &blocks[i]) {
            (NEVER, Block::Empty) => Ok(None),
            (NEVER, _) => Err(SimStorageError::Corrupt(
                "a state block holds a record its device never wrote there",
            )),
            (_, Block::Empty) => Err(SimStorageError::Corrupt("a state block was erased")),
            (_, Block::Bad(m)) => Err(SimStorageError::Corrupt(m)),
            (w, Block::Record { written_at, .. }) if *written_at != w => {
                Err(SimStorageError::Corrupt(
                    "a state block is not the last one written there (rolled back or replayed)",
                ))
            }
            (_, Block::Record { content, .. }) => Ok(Some(content.clone())),
        });
        Ok(Snapshot {
            counter,
            table: Some(table),
            objects,
        })
    }

    fn snapshot(&mut self) -> Result<&mut Snapshot, SimStorageError> {
        if self.snapshot.is_none() {
            self.snapshot = Some(self.load_snapshot()?);
        }
        self.snapshot
            .as_mut()
            .ok_or(SimStorageError::Io("no snapshot".into()))
    }

    fn read_inner(
        &mut self,
        id: ObjectId,
        buf: &mut [u8],
    ) -> Result<Option<usize>, SimStorageError> {
        let snap = self.snapshot()?;
        match &snap.objects[usize::from(block_of(id))] {
            Ok(None) => Ok(None),
            Ok(Some(c)) => {
                let dst = buf
                    .get_mut(..c.len())
                    .ok_or(SimStorageError::Corrupt("a state record is too long"))?;
                dst.copy_from_slice(c);
                Ok(Some(c.len()))
            }
            Err(e) => Err(e.clone()),
        }
    }

    fn write_inner(&mut self, id: ObjectId, record: &[u8]) -> Result<(), SimStorageError> {
        if id == ObjectId::LegacyState {
            return Err(SimStorageError::Io(
                "the v1 state block is never written".into(),
            ));
        }
        if record.len() > MAX_RECORD_LEN {
            return Err(SimStorageError::Io(
                "state record too large for one RPMB block".into(),
            ));
        }
        if !self.device.device.info().key_programmed {
            self.snapshot = None;
            client::program_key(&mut self.device, &self.keys.rpmb_key).map_err(map_client)?;
        }
        let address = block_of(id);
        let snap = self.snapshot()?;
        let counter = snap.counter;
        // No block written last (the image was damaged): start a new table,
        // in which every block not written again reads as corrupt.
        let mut table = snap.table.unwrap_or([NEVER; 4]);
        table[usize::from(address)] = counter;
        let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
        block[..4].copy_from_slice(&RECORD_MAGIC);
        block[4] = RECORD_VERSION;
        block[5] = address as u8;
        block[6..8].copy_from_slice(&(record.len() as u16).to_be_bytes());
        block[8..12].copy_from_slice(&counter.to_be_bytes());
        getrandom::fill(&mut block[12..24])
            .map_err(|e| SimStorageError::Io(format!("no OS randomness: {e}")))?;
        for (i, w) in table.iter().enumerate() {
            block[24 + 4 * i..28 + 4 * i].copy_from_slice(&w.to_be_bytes());
        }
        let (aad, rest) = block.split_at_mut(HEADER_LEN);
        let (ct, tail) = rest.split_at_mut(record.len());
        ct.copy_from_slice(record);
        let n = Nonce::<Aes256Gcm>::try_from(&aad[12..24])
            .map_err(|_| SimStorageError::Io("nonce".into()))?;
        let tag = self
            .record_cipher()
            .encrypt_inout_detached(&n, aad, ct.into())
            .map_err(|_| SimStorageError::Io("record encryption failed".into()))?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        // Whatever happens, read the device again before trusting a view of it.
        self.snapshot = None;
        client::write_blocks_at_counter(
            &mut self.device,
            &self.keys.rpmb_key,
            address,
            counter,
            &[*block],
        )
        .map_err(map_client)?;
        Ok(())
    }

    fn fail(&mut self, e: SimStorageError) -> StorageError {
        let kind = match e {
            SimStorageError::Io(_) => StorageError::Io,
            SimStorageError::Corrupt(_) => StorageError::Corrupt,
        };
        self.last_error = Some(e);
        kind
    }
}

impl SecureStorage for RpmbStateStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        self.read_inner(id, buf).map_err(|e| self.fail(e))
    }

    fn write(&mut self, id: ObjectId, record: &[u8]) -> Result<(), StorageError> {
        self.write_inner(id, record).map_err(|e| self.fail(e))
    }
}

/// Test-only fault injection (cargo feature `test-hooks`, never in a
/// default or release build): with `HAKEYS_SIM_KILL_AT_WRITE=N` set, the
/// process kills itself with SIGKILL just before the N-th write step
/// (`write_at` or `sync`) of the rpmb-sim image, counted from the moment the
/// image is opened (rpmb-sim's recovery at open included). The e2e power-cut
/// test (`tests/tests/powercut.rs`) runs every state-changing operation
/// with N = 1, 2, ... until it completes.
#[cfg(feature = "test-hooks")]
pub mod kill_hook {
    use std::io;

    use rpmb_sim::storage::Storage;

    /// The environment variable that arms the hook.
    pub const ENV: &str = "HAKEYS_SIM_KILL_AT_WRITE";

    /// The step to die at, if the hook is armed; an unparsable value is an
    /// error (a test that thinks it armed the hook must not run unarmed).
    pub fn armed() -> Result<Option<u64>, String> {
        match std::env::var(ENV) {
            Err(_) => Ok(None),
            Ok(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(format!("{ENV}={v:?} is not a step number (1, 2, ...)")),
            },
        }
    }

    /// A storage that counts mutating steps and dies at the armed one.
    pub struct KillAtWrite<S> {
        inner: S,
        steps: u64,
        kill_at: u64,
    }

    impl<S: Storage> KillAtWrite<S> {
        pub fn new(inner: S, kill_at: u64) -> Self {
            KillAtWrite {
                inner,
                steps: 0,
                kill_at,
            }
        }

        fn step(&mut self) {
            self.steps += 1;
            if self.steps == self.kill_at {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL cannot be caught; never go on past the step.
                std::process::abort();
            }
        }
    }

    impl<S: Storage> Storage for KillAtWrite<S> {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.inner.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.step();
            self.inner.write_at(offset, buf)
        }
        fn sync(&mut self) -> io::Result<()> {
            self.step();
            self.inner.sync()
        }
        fn size(&mut self) -> io::Result<u64> {
            self.inner.size()
        }
        fn set_size(&mut self, size: u64) -> io::Result<()> {
            self.step();
            self.inner.set_size(size)
        }
        fn name(&self) -> String {
            self.inner.name()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hakeys_engine::Engine;
    use hakeys_proto::Status;
    use rpmb_sim::image::Layout;
    use rpmb_sim::storage::MemStorage;
    use rpmb_sim::CreateOptions;

    use crate::client::{Client, ClientError, Transport, TransportError};
    use crate::OsEntropy;

    struct InProc(Engine<RpmbStateStorage, OsEntropy>);
    impl Transport for InProc {
        fn call(&mut self, req: &[u8], out: &mut [u8]) -> Result<usize, TransportError> {
            Ok(self.0.handle(req, out))
        }
    }

    const HUK: [u8; 32] = [9; 32];

    fn client_on(image: Vec<u8>, huk: &[u8; 32]) -> Client<InProc> {
        let dev = RpmbDevice::open_storage(Box::new(MemStorage::new(image))).expect("image opens");
        Client::new(InProc(Engine::new(
            RpmbStateStorage::new(dev, huk),
            OsEntropy,
        )))
    }

    fn fresh() -> (Client<InProc>, MemStorage) {
        let (dev, mem) = RpmbDevice::new_in_memory(&CreateOptions::default()).unwrap();
        (
            Client::new(InProc(Engine::new(
                RpmbStateStorage::new(dev, &HUK),
                OsEntropy,
            ))),
            mem,
        )
    }

    fn writes(c: &mut Client<InProc>) -> u64 {
        c.transport_mut()
            .0
            .storage_mut()
            .stats()
            .authenticated_writes
    }

    /// Byte offset of object `id`'s block in an image of default geometry.
    fn offset(id: ObjectId) -> usize {
        let o = CreateOptions::default();
        Layout::new(o.size_mult, o.rel_wr_sec_c).block_offset(u32::from(block_of(id))) as usize
    }

    fn block(image: &[u8], id: ObjectId) -> Vec<u8> {
        image[offset(id)..offset(id) + BLOCK_LEN].to_vec()
    }

    fn put_block(image: &mut [u8], id: ObjectId, bytes: &[u8]) {
        image[offset(id)..offset(id) + BLOCK_LEN].copy_from_slice(bytes);
    }

    /// An attacker editing the image also wipes rpmb-sim's journal, which
    /// would otherwise re-apply the last write's blocks at open.
    fn without_journal(mut image: Vec<u8>) -> Vec<u8> {
        let o = CreateOptions::default();
        let l = Layout::new(o.size_mult, o.rel_wr_sec_c);
        image[l.journal_offset as usize..(l.journal_offset + l.journal_len) as usize].fill(0);
        image
    }

    fn corrupt(r: Result<impl std::fmt::Debug, ClientError>) {
        assert!(
            matches!(r, Err(ClientError::Status(Status::StorageCorrupt))),
            "{r:?}"
        );
    }

    const SLOTS_AND_MARKER: [ObjectId; 3] = [ObjectId::SlotA, ObjectId::SlotB, ObjectId::Marker];

    #[test]
    fn state_survives_reopen_and_counts_writes() {
        let (mut c, mem) = fresh();
        assert!(!c.status().unwrap().initialised);
        c.init().unwrap();
        assert_eq!(
            writes(&mut c),
            2,
            "init: slot A and the marker, one RPMB write each"
        );
        let blob = c.seal("ha/core", b"x").unwrap();
        c.rotate().unwrap();
        assert_eq!(writes(&mut c), 3, "rotate: slot B");
        let image = mem.image();
        assert!(block(&image, ObjectId::LegacyState).iter().all(|b| *b == 0));
        for id in SLOTS_AND_MARKER {
            let b = block(&image, id);
            assert_eq!((&b[..5], b[5]), (&b"HKSS\x02"[..], block_of(id) as u8));
        }
        let mut again = client_on(mem.image(), &HUK);
        assert_eq!(again.status().unwrap().epoch, 2);
        assert_eq!(
            again.unseal(&blob, None).unwrap().plaintext.as_slice(),
            b"x"
        );
        assert_eq!(writes(&mut again), 0, "loading writes nothing");
    }

    #[test]
    fn a_rolled_back_block_is_detected() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let old = mem.image();
        c.rotate().unwrap();
        c.retire(2).unwrap();
        // Put the old slot A (epoch 1) back under the device's newer
        // counter; slot B (epoch 2) would then be the newest valid slot.
        let mut spliced = mem.image();
        put_block(&mut spliced, ObjectId::SlotA, &block(&old, ObjectId::SlotA));
        assert!(spliced != mem.image(), "the splice changed slot A");
        corrupt(client_on(without_journal(spliced), &HUK).status());
        // The newest block rolled back: the block written last is gone.
        let mut spliced = mem.image();
        put_block(&mut spliced, ObjectId::SlotA, &block(&old, ObjectId::SlotB));
        corrupt(client_on(without_journal(spliced), &HUK).status());
    }

    #[test]
    fn an_edited_block_is_detected() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        c.rotate().unwrap();
        for id in SLOTS_AND_MARKER {
            for i in [0, 4, 5, 7, 8, 12, 24, 39, 40, 60, 40 + 37 + 3] {
                let mut edited = mem.image();
                edited[offset(id) + i] ^= 1;
                corrupt(client_on(without_journal(edited), &HUK).status());
            }
        }
    }

    #[test]
    fn a_block_moved_to_another_address_is_detected() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        c.rotate().unwrap();
        let image = mem.image();
        let mut swapped = image.clone();
        put_block(
            &mut swapped,
            ObjectId::SlotA,
            &block(&image, ObjectId::SlotB),
        );
        put_block(
            &mut swapped,
            ObjectId::SlotB,
            &block(&image, ObjectId::SlotA),
        );
        corrupt(client_on(without_journal(swapped), &HUK).status());
        // Copied into the v1 block (which the engine reads only when no
        // slot is valid): that block reads as corrupt.
        let mut copied = image.clone();
        put_block(
            &mut copied,
            ObjectId::LegacyState,
            &block(&image, ObjectId::SlotA),
        );
        let dev =
            RpmbDevice::open_storage(Box::new(MemStorage::new(without_journal(copied)))).unwrap();
        let mut st = RpmbStateStorage::new(dev, &HUK);
        let mut buf = [0u8; 256];
        assert_eq!(
            st.read(ObjectId::LegacyState, &mut buf),
            Err(StorageError::Corrupt)
        );
        assert!(st.read(ObjectId::SlotA, &mut buf).unwrap().is_some());
    }

    #[test]
    fn another_huk_is_detected_and_never_reprograms() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let mut other = client_on(mem.image(), &[1; 32]);
        corrupt(other.status());
        corrupt(other.init());
        corrupt(other.call(hakeys_proto::InitNewIdentityRequest));
        assert_eq!(writes(&mut other), 0);
        assert!(client_on(mem.image(), &HUK).status().unwrap().initialised);
    }

    #[test]
    fn an_erased_block_is_not_taken_for_a_new_device() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        c.rotate().unwrap();
        for id in SLOTS_AND_MARKER {
            let mut erased = mem.image();
            put_block(&mut erased, id, &[0; BLOCK_LEN]);
            let mut e = client_on(without_journal(erased), &HUK);
            corrupt(e.status());
            corrupt(e.init());
        }
        let mut all = mem.image();
        for id in SLOTS_AND_MARKER {
            put_block(&mut all, id, &[0; BLOCK_LEN]);
        }
        corrupt(client_on(without_journal(all), &HUK).init());
    }

    #[test]
    fn a_new_identity_recovers_a_damaged_image_and_nothing_else_does() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let pk = c.pubkey().unwrap();
        let blob = c.seal("ha/core", b"gone").unwrap();
        c.rotate().unwrap();
        let mut erased = mem.image();
        put_block(&mut erased, ObjectId::SlotB, &[0; BLOCK_LEN]);
        let erased = without_journal(erased);
        let (dev, mem2) = {
            let m = MemStorage::new(erased);
            (RpmbDevice::open_storage(Box::new(m.clone())).unwrap(), m)
        };
        let mut e = Client::new(InProc(Engine::new(
            RpmbStateStorage::new(dev, &HUK),
            OsEntropy,
        )));
        corrupt(e.init());
        let r = e.call(hakeys_proto::InitNewIdentityRequest).unwrap();
        assert!(r.created);
        assert_eq!(writes(&mut e), 3, "both slots and the marker");
        let mut after = client_on(mem2.image(), &HUK);
        assert_eq!(after.status().unwrap().epoch, 1);
        assert_ne!(after.pubkey().unwrap(), pk);
        assert!(matches!(
            after.unseal(&blob, None),
            Err(ClientError::Status(Status::BlobRejected))
        ));
    }

    #[test]
    fn a_wholesale_image_copy_is_the_documented_limit() {
        // The simulator cannot tell an old copy of the whole image (counter
        // included) from the real one; on hardware the counter is in the eMMC.
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let old = mem.image();
        c.rotate().unwrap();
        assert_eq!(client_on(old, &HUK).status().unwrap().epoch, 1);
    }

    /// The state directory of the previous release (format v1), committed
    /// as `tests/tests/fixtures/sim_state_v1.txt`: its HUK, its image, and
    /// blobs sealed on it with their plaintexts.
    pub(crate) struct V1Fixture {
        pub huk: [u8; 32],
        pub image: Vec<u8>,
        pub blobs: Vec<(String, Vec<u8>)>,
    }

    pub(crate) fn v1_fixture() -> V1Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/tests/fixtures/sim_state_v1.txt"
        );
        let text = std::fs::read_to_string(path).expect("v1 fixture");
        let mut f = V1Fixture {
            huk: [0; 32],
            image: Vec::new(),
            blobs: Vec::new(),
        };
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = line.split(' ').collect();
            match w[0] {
                "huk" => f.huk.copy_from_slice(&hex(w[1])),
                "image-len" => f.image = vec![0; w[1].parse().unwrap()],
                "chunk" => {
                    let at: usize = w[1].parse().unwrap();
                    let b = hex(w[2]);
                    f.image[at..at + b.len()].copy_from_slice(&b);
                }
                "blob" => f.blobs.push((w[3].to_string(), w[2].as_bytes().to_vec())),
                _ => {}
            }
        }
        f
    }

    #[test]
    fn a_v1_state_directory_loads_and_migrates() {
        let f = v1_fixture();
        assert_eq!(f.blobs.len(), 4);
        let legacy = block(&f.image, ObjectId::LegacyState);
        assert_eq!(&legacy[..6], b"HKSS\x01\x00", "the fixture is format v1");
        let (mut c, mem) = {
            let m = MemStorage::new(f.image.clone());
            let dev = RpmbDevice::open_storage(Box::new(m.clone())).unwrap();
            let c = Client::new(InProc(Engine::new(
                RpmbStateStorage::new(dev, &f.huk),
                OsEntropy,
            )));
            (c, m)
        };
        let st = c.status().unwrap();
        assert_eq!((st.initialised, st.epoch, st.min_epoch), (true, 2, 1));
        // boot/ first: the first unseal outside boot/ ends the boot phase.
        let mut blobs: Vec<(Vec<u8>, &Vec<u8>)> = f
            .blobs
            .iter()
            .map(|(text, pt)| (crate::armor::blob_from_input(text.as_bytes()).unwrap(), pt))
            .collect();
        blobs.sort_by_key(|(blob, _)| {
            !hakeys_engine::namespace::is_boot(hakeys_engine::blob::parse(blob).unwrap().namespace)
        });
        for (blob, pt) in &blobs {
            assert_eq!(c.unseal(blob, None).unwrap().plaintext.as_slice(), &pt[..]);
        }
        assert_eq!(writes(&mut c), 0, "a v1 device loads without a write");
        assert!(!c.init().unwrap().created);
        c.rotate().unwrap();
        assert_eq!(
            writes(&mut c),
            2,
            "the first commit: slot A, then the marker"
        );
        let image = mem.image();
        assert_eq!(
            block(&image, ObjectId::LegacyState),
            legacy,
            "never written"
        );
        let mut again = client_on(image, &f.huk);
        assert_eq!(again.status().unwrap().epoch, 3);
        again.retire(3).unwrap();
        // Device blobs of epochs 1 and 2 are retired now; the blob sealed
        // offline to the device key (kind 2, `HKSB 01 02`) has no epoch and
        // still opens.
        for (blob, pt) in &blobs {
            let r = again.unseal(blob, None);
            if blob.starts_with(b"HKSB\x01\x02") {
                assert_eq!(r.unwrap().plaintext.as_slice(), &pt[..]);
            } else {
                assert!(
                    matches!(r, Err(ClientError::Status(Status::EpochRetired))),
                    "{r:?}"
                );
            }
        }
        // An edited v1 block is still detected.
        let mut edited = f.image.clone();
        edited[offset(ObjectId::LegacyState) + 30] ^= 1;
        corrupt(client_on(without_journal(edited), &f.huk).status());
    }
}
