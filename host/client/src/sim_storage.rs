//! The simulator's secure storage: the engine's state record kept in block 0
//! of an `rpmb-sim` device, written with authenticated RPMB writes and read
//! back with nonce-checked, MAC-verified reads (format in `host/SPEC.md`).
//!
//! The simulated SoC has a "hardware unique key" (HUK, a file in the state
//! directory standing in for a fused key). From it come the RPMB
//! authentication key (bound to the device's CID, as OP-TEE does) and the key
//! that encrypts and authenticates the record. So:
//! - an edited image is detected (the record's AES-GCM tag fails);
//! - a data block rolled back under a newer write counter is detected (the
//!   record names the counter it was written at, and the device's counter
//!   must be exactly one above it);
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

/// Magic of the record block.
pub const RECORD_MAGIC: [u8; 4] = *b"HKSS";
/// Record block format version.
pub const RECORD_VERSION: u8 = 1;
/// RPMB block (half-sector) holding the record.
pub const RECORD_ADDRESS: u16 = 0;
const HEADER_LEN: usize = 24;
const TAG_LEN: usize = 16;
const BLOCK_LEN: usize = 256;
/// Largest engine record that fits one block.
pub const MAX_RECORD_LEN: usize = BLOCK_LEN - HEADER_LEN - TAG_LEN;

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

/// The engine's storage on an rpmb-sim device.
pub struct RpmbStateStorage {
    device: CountingDevice,
    keys: HukKeys,
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

    fn load_inner(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SimStorageError> {
        if !self.device.device.info().key_programmed {
            return Ok(None);
        }
        let counter = client::read_counter(&mut self.device, &self.keys.rpmb_key, &nonce()?)
            .map_err(map_client)?;
        let blocks = client::read_blocks(
            &mut self.device,
            &self.keys.rpmb_key,
            RECORD_ADDRESS,
            1,
            &nonce()?,
        )
        .map_err(map_client)?;
        let mut block = Zeroizing::new(
            *blocks
                .first()
                .ok_or(SimStorageError::Corrupt("short RPMB read"))?,
        );
        if block.iter().all(|b| *b == 0) {
            return if counter == 0 {
                Ok(None)
            } else {
                Err(SimStorageError::Corrupt("the state record was erased"))
            };
        }
        if block[..4] != RECORD_MAGIC || block[4] != RECORD_VERSION || block[5] != 0 {
            return Err(SimStorageError::Corrupt(
                "the state block is not a hakeys record",
            ));
        }
        let len = usize::from(u16::from_be_bytes([block[6], block[7]]));
        let written_at = u32::from_be_bytes([block[8], block[9], block[10], block[11]]);
        if len > MAX_RECORD_LEN || len > buf.len() {
            return Err(SimStorageError::Corrupt(
                "the state record has an impossible length",
            ));
        }
        if written_at.checked_add(1) != Some(counter) {
            return Err(SimStorageError::Corrupt(
                "the state record is not the last one written (rolled back or replayed)",
            ));
        }
        let (aad, rest) = block.split_at_mut(HEADER_LEN);
        let (ct, tail) = rest.split_at_mut(len);
        let tag = Tag::<Aes256Gcm>::try_from(&tail[..TAG_LEN])
            .map_err(|_| SimStorageError::Corrupt("tag"))?;
        let n = Nonce::<Aes256Gcm>::try_from(&aad[12..24])
            .map_err(|_| SimStorageError::Corrupt("nonce"))?;
        self.record_cipher()
            .decrypt_inout_detached(&n, aad, ct.into(), &tag)
            .map_err(|_| SimStorageError::Corrupt("the state record failed its integrity check"))?;
        buf[..len].copy_from_slice(ct);
        Ok(Some(len))
    }

    fn store_inner(&mut self, record: &[u8]) -> Result<(), SimStorageError> {
        if record.len() > MAX_RECORD_LEN {
            return Err(SimStorageError::Io(
                "state record too large for one RPMB block".into(),
            ));
        }
        if !self.device.device.info().key_programmed {
            client::program_key(&mut self.device, &self.keys.rpmb_key).map_err(map_client)?;
        }
        let counter = client::read_counter(&mut self.device, &self.keys.rpmb_key, &nonce()?)
            .map_err(map_client)?;
        let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
        block[..4].copy_from_slice(&RECORD_MAGIC);
        block[4] = RECORD_VERSION;
        block[6..8].copy_from_slice(&(record.len() as u16).to_be_bytes());
        block[8..12].copy_from_slice(&counter.to_be_bytes());
        getrandom::fill(&mut block[12..24])
            .map_err(|e| SimStorageError::Io(format!("no OS randomness: {e}")))?;
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
        client::write_blocks_at_counter(
            &mut self.device,
            &self.keys.rpmb_key,
            RECORD_ADDRESS,
            counter,
            &[*block],
        )
        .map_err(map_client)?;
        Ok(())
    }
}

impl SecureStorage for RpmbStateStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        if id != ObjectId::LegacyState {
            return Ok(None);
        }
        self.load_inner(buf).map_err(|e| {
            let kind = match e {
                SimStorageError::Io(_) => StorageError::Io,
                SimStorageError::Corrupt(_) => StorageError::Corrupt,
            };
            self.last_error = Some(e);
            kind
        })
    }

    fn write(&mut self, id: ObjectId, record: &[u8]) -> Result<(), StorageError> {
        if id != ObjectId::LegacyState {
            return Err(StorageError::Io);
        }
        self.store_inner(record).map_err(|e| {
            let kind = match e {
                SimStorageError::Io(_) => StorageError::Io,
                SimStorageError::Corrupt(_) => StorageError::Corrupt,
            };
            self.last_error = Some(e);
            kind
        })
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

    fn record_offset() -> usize {
        let o = CreateOptions::default();
        Layout::new(o.size_mult, o.rel_wr_sec_c).block_offset(u32::from(RECORD_ADDRESS)) as usize
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

    #[test]
    fn state_survives_reopen_and_counts_writes() {
        let (mut c, mem) = fresh();
        assert!(!c.status().unwrap().initialised);
        c.init().unwrap();
        let blob = c.seal("ha/core", b"x").unwrap();
        c.rotate().unwrap();
        let mut again = client_on(mem.image(), &HUK);
        assert_eq!(again.status().unwrap().epoch, 2);
        assert_eq!(
            again.unseal(&blob, None).unwrap().plaintext.as_slice(),
            b"x"
        );
    }

    #[test]
    fn a_rolled_back_record_block_is_detected() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let old = mem.image();
        c.rotate().unwrap();
        c.retire(2).unwrap();
        // Put the old record block back under the device's newer counter.
        let mut spliced = mem.image();
        let at = record_offset();
        spliced[at..at + BLOCK_LEN].copy_from_slice(&old[at..at + BLOCK_LEN]);
        assert_ne!(spliced, mem.image(), "the splice changed the record");
        corrupt(client_on(without_journal(spliced), &HUK).status());
    }

    #[test]
    fn an_edited_record_is_detected() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let at = record_offset();
        for i in [0, 8, 12, 30, 24 + 73 + 15] {
            let mut edited = mem.image();
            edited[at + i] ^= 1;
            corrupt(client_on(without_journal(edited), &HUK).status());
        }
    }

    #[test]
    fn another_huk_is_detected_and_never_reprograms() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let mut other = client_on(mem.image(), &[1; 32]);
        corrupt(other.status());
        corrupt(other.init());
    }

    #[test]
    fn an_erased_record_is_not_taken_for_a_new_device() {
        let (mut c, mem) = fresh();
        c.init().unwrap();
        let mut erased = mem.image();
        let at = record_offset();
        erased[at..at + BLOCK_LEN].fill(0);
        let mut e = client_on(without_journal(erased), &HUK);
        corrupt(e.status());
        corrupt(e.init());
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
}
