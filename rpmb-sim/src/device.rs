//! The RPMB device model: request handling, result codes, commit protocol
//! and crash recovery.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::frame::{
    frame_mac, mac_eq, Frame, ResultCode, BLOCK_LEN, NONCE_LEN, REQ_PROGRAM_KEY, REQ_READ_COUNTER,
    REQ_READ_DATA, REQ_RESULT_READ, REQ_WRITE_DATA, RESP_PROGRAM_KEY, RESP_READ_COUNTER,
    RESP_READ_DATA, RESP_WRITE_DATA, RESULT_COUNTER_EXPIRED,
};
use crate::image::{
    decode_journal_header, encode_journal, verify_journal, Layout, State, Superblock, CHECKSUM_LEN,
    FORMAT_VERSION, JOURNAL_HEADER_LEN, REL_WR_SEC_C_RANGE, SIZE_MULT_RANGE, STATE_LEN,
    STATE_SLOT_OFFSETS, SUPERBLOCK_LEN, SUPERBLOCK_OFFSET,
};
use crate::serve::{group_len, response_count};
use crate::storage::{FileStorage, MemStorage, Storage};
use crate::Error;

const fn crc7(bytes: &[u8]) -> u8 {
    // CRC7 of the MMC CID/CSD registers: polynomial x^7 + x^3 + 1.
    let mut crc: u8 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let mut bit = 0;
        while bit < 8 {
            let inbit = (bytes[i] >> (7 - bit)) & 1;
            let top = (crc >> 6) & 1;
            crc = (crc << 1) & 0x7f;
            if (inbit ^ top) != 0 {
                crc ^= 0x09;
            }
            bit += 1;
        }
        i += 1;
    }
    crc
}

const fn default_cid() -> [u8; 16] {
    let mut cid: [u8; 16] = [
        0x52, // MID  (manufacturer ID): made up, 'R'
        0x01, // CBX  (device type): BGA
        0x53, // OID  (OEM/application ID): made up, 'S'
        b'R', b'P', b'M', b'B', b'S', b'M', // PNM (product name): "RPMBSM"
        0x10, // PRV  (product revision): 1.0
        0x00, 0x00, 0x00, 0x01, // PSN (serial number): 1
        0x1a, // MDT  (manufacturing date): January, year code 0xA
        0x00, // CRC7 << 1 | 1, filled in below
    ];
    let mut head = [0u8; 15];
    let mut i = 0;
    while i < 15 {
        head[i] = cid[i];
        i += 1;
    }
    cid[15] = (crc7(&head) << 1) | 1;
    cid
}

/// The CID of an image created without `--cid`: a fixed, made-up test CID
/// (`52 01 53 "RPMBSM" 10 00000001 1a` plus its CRC7), documented in SPEC.md.
pub const DEFAULT_CID: [u8; 16] = default_cid();
/// Default RPMB size: 16 x 128 KiB = 2 MiB (8192 blocks).
pub const DEFAULT_SIZE_MULT: u8 = 16;
/// Default reliable write sector count: 1 (so at most 2 blocks per write).
pub const DEFAULT_REL_WR_SEC_C: u8 = 1;

/// Parameters fixed when an image is created (EXT_CSD RPMB_SIZE_MULT,
/// EXT_CSD REL_WR_SEC_C and the CID register of a real eMMC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// RPMB size in 128 KiB units, 1..=128 (128 gives 65536 blocks, the
    /// whole 16-bit address space).
    pub size_mult: u8,
    /// The 16-byte CID register.
    pub cid: [u8; 16],
    /// Reliable write sector count in 512-byte sectors, 1..=255; an
    /// authenticated write may carry 1..=2*rel_wr_sec_c blocks of 256 bytes.
    pub rel_wr_sec_c: u8,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size_mult: DEFAULT_SIZE_MULT,
            cid: DEFAULT_CID,
            rel_wr_sec_c: DEFAULT_REL_WR_SEC_C,
        }
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), Error> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidOptions(format!(
            "{name} {value} out of range {}..={}",
            range.start(),
            range.end()
        )))
    }
}

impl CreateOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), Error> {
        in_range("size_mult", self.size_mult, &SIZE_MULT_RANGE)?;
        in_range("rel_wr_sec_c", self.rel_wr_sec_c, &REL_WR_SEC_C_RANGE)?;
        Ok(())
    }
}

const ZERO_BLOCK: [u8; BLOCK_LEN] = [0; BLOCK_LEN];

/// What `show` prints. Never contains the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The image's name (path or `"<memory>"`).
    pub image: String,
    /// Image format version.
    pub format_version: u32,
    /// CID register.
    pub cid: [u8; 16],
    /// RPMB size in 128 KiB units.
    pub size_mult: u8,
    /// Reliable write sector count.
    pub rel_wr_sec_c: u8,
    /// Capacity in 256-byte blocks (`size_mult * 512`).
    pub capacity_blocks: u32,
    /// Capacity in bytes (`size_mult * 128 KiB`).
    pub capacity_bytes: u64,
    /// Largest block count of one authenticated write (`2 * rel_wr_sec_c`).
    pub max_write_blocks: u16,
    /// Whether the authentication key is programmed.
    pub key_programmed: bool,
    /// The write counter.
    pub write_counter: u32,
    /// Whether the write counter has expired (reached 0xFFFF_FFFF).
    pub counter_expired: bool,
    /// Blocks whose contents are not all zero.
    pub used_blocks: u32,
    /// Whether commits are fsync'ed.
    pub durable: bool,
}

/// The result register: the outcome of the last key programming or
/// authenticated write, returned by a result read.
#[derive(Clone, Copy, Debug)]
struct ResultReg {
    op: u16,
    result: ResultCode,
    address: u16,
}

/// What the next read phase (CMD18) returns.
#[derive(Clone, Debug)]
enum Pending {
    /// No read request outstanding.
    Nothing,
    /// A request that only earns a failure frame.
    Failed {
        resp: u16,
        result: ResultCode,
    },
    CounterRead {
        nonce: [u8; NONCE_LEN],
    },
    DataRead {
        address: u16,
        nonce: [u8; NONCE_LEN],
    },
    ResultRead,
}

/// A software eMMC RPMB partition backed by an image.
pub struct RpmbDevice {
    storage: Box<dyn Storage>,
    name: String,
    layout: Layout,
    cid: [u8; 16],
    state: State,
    result_reg: ResultReg,
    pending: Pending,
    used: Vec<bool>,
    used_count: u32,
    durable: bool,
    poisoned: bool,
}

impl std::fmt::Debug for RpmbDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpmbDevice")
            .field("image", &self.name)
            .field("layout", &self.layout)
            .field("key_programmed", &self.state.key_programmed)
            .field("write_counter", &self.state.write_counter)
            .finish_non_exhaustive()
    }
}

fn io_at(what: &str, image: &str) -> impl FnOnce(io::Error) -> Error {
    let msg = format!("{image}: {what}");
    move |e| Error::io(msg, e)
}

/// Writes a fresh image (all blocks zero, key not programmed, counter 0)
/// into `storage`, replacing whatever it held.
pub fn format_storage(storage: &mut dyn Storage, opts: &CreateOptions) -> Result<(), Error> {
    opts.validate()?;
    let name = storage.name();
    let sb = Superblock {
        size_mult: opts.size_mult,
        rel_wr_sec_c: opts.rel_wr_sec_c,
        cid: opts.cid,
    };
    let layout = Layout::new(opts.size_mult, opts.rel_wr_sec_c);
    let st = State::initial();
    let res = (|| {
        storage.set_size(0)?;
        storage.set_size(layout.total_len)?;
        storage.write_at(SUPERBLOCK_OFFSET, &sb.encode())?;
        storage.write_at(State::slot_offset(st.seq), &st.encode()[..])?;
        storage.sync()
    })();
    res.map_err(io_at("cannot write new image", &name))
}

/// Recovery step 2-4 (SPEC.md, "Recovery"): replays a committed write that
/// may not have been (fully) applied; returns the current state.
fn recover_journal(
    storage: &mut dyn Storage,
    layout: &Layout,
    name: &str,
    state: State,
) -> Result<State, Error> {
    let mut hdr = Zeroizing::new([0u8; JOURNAL_HEADER_LEN]);
    storage
        .read_at(layout.journal_offset, &mut hdr[..])
        .map_err(io_at("cannot read journal", name))?;
    let Some(h) = decode_journal_header(&hdr[..], layout) else {
        return Ok(state);
    };
    let next = h.seq == state.seq.wrapping_add(1);
    if !next && h.seq != state.seq {
        return Ok(state);
    }
    let len = JOURNAL_HEADER_LEN + usize::from(h.blocks) * BLOCK_LEN + CHECKSUM_LEN;
    let mut rec = Zeroizing::new(vec![0u8; len]);
    storage
        .read_at(layout.journal_offset, &mut rec)
        .map_err(io_at("cannot read journal", name))?;
    let Some(jstate) = verify_journal(&rec, &h) else {
        // Torn or stale: the write it describes never committed.
        return Ok(state);
    };
    let data = rec
        .get(JOURNAL_HEADER_LEN..len - CHECKSUM_LEN)
        .unwrap_or(&[])
        .to_vec();
    let data_off = layout.block_offset(u32::from(h.address));
    if next {
        let consistent = state.key_programmed
            && jstate.key == state.key
            && jstate.write_counter == state.write_counter.wrapping_add(1);
        if !consistent {
            return Err(Error::corrupt(
                name,
                "committed journal record does not follow the current state",
            ));
        }
        // Committed but maybe not applied: apply it.
        let res = (|| {
            storage.write_at(data_off, &data)?;
            storage.write_at(State::slot_offset(jstate.seq), &jstate.encode()[..])?;
            storage.sync()
        })();
        res.map_err(io_at("cannot replay journal", name))?;
        return Ok(jstate);
    }
    if jstate == state {
        // Applied and recorded, but with no sync in between the blocks may
        // not all have reached the medium: make sure they did (idempotent).
        let mut cur = vec![0u8; data.len()];
        storage
            .read_at(data_off, &mut cur)
            .map_err(io_at("cannot read data", name))?;
        if cur != data {
            let res = (|| {
                storage.write_at(data_off, &data)?;
                storage.sync()
            })();
            res.map_err(io_at("cannot replay journal", name))?;
        }
    }
    Ok(state)
}

/// Which blocks are not all zero (for `show`), and how many.
fn scan_used(
    storage: &mut dyn Storage,
    layout: &Layout,
    name: &str,
) -> Result<(Vec<bool>, u32), Error> {
    let blocks = layout.capacity_blocks as usize;
    let mut used = vec![false; blocks];
    let mut used_count = 0u32;
    let chunk_blocks = 256usize;
    let mut buf = vec![0u8; chunk_blocks * BLOCK_LEN];
    let mut b = 0usize;
    while b < blocks {
        let n = chunk_blocks.min(blocks - b);
        let slice = buf.get_mut(..n * BLOCK_LEN).unwrap_or(&mut []);
        storage
            .read_at(layout.block_offset(b as u32), slice)
            .map_err(io_at("cannot read data", name))?;
        for (i, blk) in slice.chunks(BLOCK_LEN).enumerate() {
            if blk != ZERO_BLOCK.as_slice() {
                if let Some(u) = used.get_mut(b + i) {
                    *u = true;
                    used_count += 1;
                }
            }
        }
        b += n;
    }
    Ok((used, used_count))
}

impl RpmbDevice {
    /// Creates a new image file at `path`. Refuses to overwrite an existing
    /// file. The image is written to a temporary file in the same directory,
    /// synced, and then hard-linked into place, so `path` either does not
    /// exist or holds a complete image. The file is created with mode 0600:
    /// it holds the authentication key once one is programmed.
    pub fn create(path: &Path, opts: &CreateOptions) -> Result<(), Error> {
        opts.validate()?;
        if path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::InvalidOptions(format!("{}: not a file path", path.display())))?
            .to_string_lossy()
            .into_owned();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{file_name}.tmp-{}-{nanos}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("{}: cannot create image", path.display()), e))?;
        let res = (|| {
            let mut st = FileStorage::from_new_file(file, &tmp)?;
            format_storage(&mut st, opts)?;
            drop(st);
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(Error::AlreadyExists(path.to_path_buf()))
                }
                Err(e) => Err(Error::io(
                    format!("{}: cannot create image", path.display()),
                    e,
                )),
            }
        })();
        let _ = fs::remove_file(&tmp);
        res?;
        // Make the new directory entry durable too.
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("{}: cannot sync directory", dir.display()), e))?;
        Ok(())
    }

    /// Opens an image file: takes the exclusive lock (a second open of the
    /// same image, from any process, fails with [`Error::Locked`]) and runs
    /// crash recovery (SPEC.md, "Recovery").
    pub fn open(path: &Path) -> Result<RpmbDevice, Error> {
        let storage = FileStorage::open(path)?;
        RpmbDevice::open_storage(Box::new(storage))
    }

    /// A fresh device on an in-memory image. The returned [`MemStorage`]
    /// shares the bytes with the device (for inspection or reopening).
    pub fn new_in_memory(opts: &CreateOptions) -> Result<(RpmbDevice, MemStorage), Error> {
        let mut mem = MemStorage::new(Vec::new());
        format_storage(&mut mem, opts)?;
        let dev = RpmbDevice::open_storage(Box::new(mem.clone()))?;
        Ok((dev, mem))
    }

    /// Opens an image held by any [`Storage`] and runs crash recovery.
    pub fn open_storage(mut storage: Box<dyn Storage>) -> Result<RpmbDevice, Error> {
        let name = storage.name();
        let mut sb_buf = [0u8; SUPERBLOCK_LEN];
        storage
            .read_at(SUPERBLOCK_OFFSET, &mut sb_buf)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::corrupt(&name, "file too short for a superblock")
                } else {
                    Error::io(format!("{name}: cannot read superblock"), e)
                }
            })?;
        let (sb, layout) = Superblock::decode(&sb_buf, &name)?;
        let size = storage
            .size()
            .map_err(io_at("cannot read image size", &name))?;
        if size < layout.total_len {
            return Err(Error::corrupt(
                &name,
                format!(
                    "image is {size} bytes, its layout needs {}",
                    layout.total_len
                ),
            ));
        }

        // The state: the valid record with the highest sequence number.
        let mut best: Option<State> = None;
        for (slot, off) in STATE_SLOT_OFFSETS.iter().enumerate() {
            let mut buf = Zeroizing::new([0u8; STATE_LEN]);
            storage
                .read_at(*off, &mut buf[..])
                .map_err(io_at("cannot read state slot", &name))?;
            if let Some(st) = State::decode(&buf[..]) {
                if st.seq % 2 == slot as u64 && best.as_ref().is_none_or(|b| st.seq > b.seq) {
                    best = Some(st);
                }
            }
        }
        let state = best.ok_or_else(|| Error::corrupt(&name, "no valid state record"))?;

        let state = recover_journal(storage.as_mut(), &layout, &name, state)?;
        let (used, used_count) = scan_used(storage.as_mut(), &layout, &name)?;

        let result_reg = ResultReg {
            op: state.last_op,
            result: ResultCode::from_u16(state.last_result).unwrap_or(ResultCode::GeneralFailure),
            address: state.last_address,
        };
        Ok(RpmbDevice {
            storage,
            name,
            layout,
            cid: sb.cid,
            state,
            result_reg,
            pending: Pending::Nothing,
            used,
            used_count,
            durable: true,
            poisoned: false,
        })
    }

    /// Whether commits call fsync (default: yes). Without it a write is
    /// still atomic against a killed process, but not against a power cut.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// The device parameters and state (never the key).
    pub fn info(&self) -> DeviceInfo {
        DeviceInfo {
            image: self.name.clone(),
            format_version: FORMAT_VERSION,
            cid: self.cid,
            size_mult: self.layout.size_mult,
            rel_wr_sec_c: self.layout.rel_wr_sec_c,
            capacity_blocks: self.layout.capacity_blocks,
            capacity_bytes: self.layout.data_len,
            max_write_blocks: self.layout.max_write_blocks,
            key_programmed: self.state.key_programmed,
            write_counter: self.state.write_counter,
            counter_expired: self.expired(),
            used_blocks: self.used_count,
            durable: self.durable,
        }
    }
}

impl RpmbDevice {
    /// The image's name (path or `"<memory>"`).
    pub fn image_name(&self) -> &str {
        &self.name
    }

    /// The image layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether an earlier failed image write stopped the device.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

mod protocol;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc7_matches_a_real_emmc_cid() {
        // A CID read from a real eMMC (Micron MMC04G); its last byte is
        // CRC7 << 1 | 1 = 0x15.
        let cid = [
            0xfe, 0x01, 0x4e, 0x4d, 0x4d, 0x43, 0x30, 0x34, 0x47, 0x42, 0xc8, 0xf6, 0x55, 0x2a,
            0x61,
        ];
        assert_eq!((crc7(&cid) << 1) | 1, 0x15);
        assert_eq!(DEFAULT_CID[15], (crc7(&DEFAULT_CID[..15]) << 1) | 1);
        assert_eq!(&DEFAULT_CID[3..9], b"RPMBSM");
    }

    #[test]
    fn default_options_are_valid() {
        let o = CreateOptions::default();
        assert!(o.validate().is_ok());
        assert_eq!((o.size_mult, o.rel_wr_sec_c), (16, 1));
        let l = Layout::new(128, 255);
        assert_eq!(l.capacity_blocks, 65536);
        assert_eq!(l.max_write_blocks, 510);
    }
}
