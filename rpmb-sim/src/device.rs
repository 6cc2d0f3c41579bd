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

impl CreateOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !SIZE_MULT_RANGE.contains(&self.size_mult) {
            return Err(Error::InvalidOptions(format!(
                "size_mult {} out of range {}..={}",
                self.size_mult,
                SIZE_MULT_RANGE.start(),
                SIZE_MULT_RANGE.end()
            )));
        }
        if !REL_WR_SEC_C_RANGE.contains(&self.rel_wr_sec_c) {
            return Err(Error::InvalidOptions(format!(
                "rel_wr_sec_c {} out of range {}..={}",
                self.rel_wr_sec_c,
                REL_WR_SEC_C_RANGE.start(),
                REL_WR_SEC_C_RANGE.end()
            )));
        }
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

    /// One eMMC transaction as a stream of frames, the way `rpmb-sim serve`
    /// sees them: the request frames the host writes (CMD25), returning the
    /// response frames the host then reads (CMD18).
    ///
    /// The frames are split into requests (SPEC.md, "Frame stream"): an
    /// authenticated write takes as many frames as its first frame's block
    /// count says (0 counts as 1), every other request one frame. Program key
    /// and write produce no response; a result read, a counter read or an
    /// unknown request type one; an authenticated read of N blocks N (a block
    /// count of 0 reads 1). So `[write frames.., result read]` gives 1
    /// frame, `[program key, result read]` 1, `[counter read]` 1 and
    /// `[read with block count N]` N. Malformed requests are answered with
    /// result codes, never a panic; `Err` means the image could not be
    /// written (the device is then stopped, see [`Error::Poisoned`]).
    pub fn process(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        self.check_alive()?;
        let mut out = Vec::new();
        let mut rest = request;
        while let Some(first) = rest.first() {
            let n = group_len(first).min(rest.len());
            let (group, tail) = rest.split_at(n);
            self.write_phase(group)?;
            let count = response_count(first);
            if count > 0 {
                out.extend(self.read_phase(count));
            }
            rest = tail;
        }
        Ok(out)
    }

    /// One request in the shape OP-TEE's RPMB RPC (and tee-supplicant's
    /// `rpmb_data_req`) uses: `request` holds the frames of one command,
    /// all of one type, without a result-read frame (for a key programming
    /// or a write the device issues the result read itself, as
    /// tee-supplicant does), and `response_frames` is the size of the
    /// response buffer in frames. For an authenticated read `response_frames`
    /// is the block count (OP-TEE leaves the frame's block count at 0 and the
    /// eMMC takes the count from CMD23). Shapes tee-supplicant rejects are
    /// rejected with [`Error::Protocol`] and do not reach the device.
    pub fn process_rpmb_request(
        &mut self,
        request: &[Frame],
        response_frames: usize,
    ) -> Result<Vec<Frame>, Error> {
        self.check_alive()?;
        let first = request
            .first()
            .ok_or_else(|| Error::Protocol("no request frames".into()))?;
        let t = first.req_resp();
        if request.iter().any(|f| f.req_resp() != t) {
            return Err(Error::Protocol(
                "all request frames shall be of the same type".into(),
            ));
        }
        match t {
            REQ_PROGRAM_KEY | REQ_WRITE_DATA => {
                if response_frames != 1 {
                    return Err(Error::Protocol("expected one response frame".into()));
                }
                self.write_phase(request)?;
                self.write_phase(&[Frame::new_request(REQ_RESULT_READ)])?;
                Ok(self.read_phase(1))
            }
            REQ_READ_COUNTER | REQ_RESULT_READ => {
                if request.len() != 1 || response_frames != 1 {
                    return Err(Error::Protocol(
                        "expected one request frame and one response frame".into(),
                    ));
                }
                self.write_phase(request)?;
                Ok(self.read_phase(1))
            }
            REQ_READ_DATA => {
                if request.len() != 1 {
                    return Err(Error::Protocol("expected one request frame".into()));
                }
                if response_frames == 0 || response_frames > usize::from(u16::MAX) {
                    return Err(Error::Protocol(format!(
                        "cannot read {response_frames} frames"
                    )));
                }
                self.write_phase(request)?;
                Ok(self.read_phase(response_frames))
            }
            other => Err(Error::Protocol(format!(
                "unsupported request type {other:#06x}"
            ))),
        }
    }

    fn check_alive(&self) -> Result<(), Error> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    fn expired(&self) -> bool {
        self.state.write_counter == u32::MAX
    }

    fn result_field(&self, code: ResultCode) -> u16 {
        code.as_u16()
            | if self.expired() {
                RESULT_COUNTER_EXPIRED
            } else {
                0
            }
    }

    fn sync_if_durable(&mut self) -> io::Result<()> {
        if self.durable {
            self.storage.sync()
        } else {
            Ok(())
        }
    }

    /// Runs `f`; an I/O error stops the device.
    fn guarded(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> Result<(), Error> {
        match f(self) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poisoned = true;
                Err(Error::io(format!("{}: {what}", self.name), e))
            }
        }
    }

    /// The write phase of one request (CMD25 with `frames`).
    fn write_phase(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let single = frames.len() == 1;
        self.pending = Pending::Nothing;
        match first.req_resp() {
            REQ_PROGRAM_KEY => self.program_key(frames)?,
            REQ_WRITE_DATA => self.write_data(frames)?,
            REQ_READ_COUNTER if single => {
                self.pending = Pending::CounterRead {
                    nonce: first.nonce(),
                }
            }
            REQ_READ_DATA if single => {
                self.pending = Pending::DataRead {
                    address: first.address(),
                    nonce: first.nonce(),
                }
            }
            REQ_RESULT_READ if single => self.pending = Pending::ResultRead,
            REQ_READ_COUNTER => {
                self.pending = Pending::Failed {
                    resp: RESP_READ_COUNTER,
                    result: ResultCode::GeneralFailure,
                }
            }
            REQ_READ_DATA => {
                self.pending = Pending::Failed {
                    resp: RESP_READ_DATA,
                    result: ResultCode::GeneralFailure,
                }
            }
            _ => {
                self.pending = Pending::Failed {
                    resp: 0,
                    result: ResultCode::GeneralFailure,
                }
            }
        }
        Ok(())
    }

    fn program_key(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let result = match frames {
            [f] if !self.state.key_programmed => {
                let mut new = self.state.clone();
                new.seq = new.seq.wrapping_add(1);
                new.key_programmed = true;
                new.key = Zeroizing::new(f.key_mac());
                new.last_op = REQ_PROGRAM_KEY;
                new.last_result = ResultCode::Ok.as_u16();
                new.last_address = 0;
                let rec = new.encode();
                self.guarded("cannot program key", |d| {
                    d.storage.write_at(State::slot_offset(new.seq), &rec[..])?;
                    d.sync_if_durable()
                })?;
                self.state = new;
                ResultCode::Ok
            }
            // The key is one-time programmable, as on an eMMC.
            [_] => ResultCode::WriteFailure,
            _ => ResultCode::GeneralFailure,
        };
        self.result_reg = ResultReg {
            op: REQ_PROGRAM_KEY,
            result,
            address: 0,
        };
        Ok(())
    }

    fn write_data(&mut self, frames: &[Frame]) -> Result<(), Error> {
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Ok(());
        };
        let address = first.address();
        let result = self.check_write(frames, first, last);
        let result = match result {
            ResultCode::Ok => {
                self.commit_write(address, frames)?;
                ResultCode::Ok
            }
            other => other,
        };
        self.result_reg = ResultReg {
            op: REQ_WRITE_DATA,
            result,
            address,
        };
        Ok(())
    }

    /// The checks of an authenticated write, in the JEDEC order.
    fn check_write(&self, frames: &[Frame], first: &Frame, last: &Frame) -> ResultCode {
        if !self.state.key_programmed {
            return ResultCode::KeyNotProgrammed;
        }
        if self.expired() {
            // Reported as 0x0085: write failure with the expired bit.
            return ResultCode::WriteFailure;
        }
        let count = first.block_count();
        let well_formed = usize::from(count) == frames.len()
            && count >= 1
            && count <= self.layout.max_write_blocks
            && frames.iter().all(|f| {
                f.req_resp() == REQ_WRITE_DATA
                    && f.block_count() == count
                    && f.address() == first.address()
                    && f.write_counter() == first.write_counter()
            });
        if !well_formed {
            return ResultCode::GeneralFailure;
        }
        if u32::from(first.address()) + u32::from(count) > self.layout.capacity_blocks {
            return ResultCode::AddressFailure;
        }
        let mac = frame_mac(&self.state.key, frames);
        if !mac_eq(&mac, &last.key_mac()) {
            return ResultCode::AuthFailure;
        }
        if first.write_counter() != self.state.write_counter {
            return ResultCode::CounterFailure;
        }
        ResultCode::Ok
    }

    /// The commit protocol of an authenticated write (SPEC.md):
    /// journal, sync, blocks + state record, sync.
    fn commit_write(&mut self, address: u16, frames: &[Frame]) -> Result<(), Error> {
        let mut data = Vec::with_capacity(frames.len() * BLOCK_LEN);
        for f in frames {
            data.extend_from_slice(f.data_slice());
        }
        let mut new = self.state.clone();
        new.seq = new.seq.wrapping_add(1);
        new.write_counter = new.write_counter.wrapping_add(1);
        new.last_op = REQ_WRITE_DATA;
        new.last_result = ResultCode::Ok.as_u16();
        new.last_address = address;
        let journal = encode_journal(&new, address, &data);
        let rec = new.encode();
        let journal_off = self.layout.journal_offset;
        let data_off = self.layout.block_offset(u32::from(address));
        self.guarded("cannot write data", |d| {
            d.storage.write_at(journal_off, &journal)?;
            d.sync_if_durable()?;
            d.storage.write_at(data_off, &data)?;
            d.storage.write_at(State::slot_offset(new.seq), &rec[..])?;
            d.sync_if_durable()
        })?;
        self.state = new;
        for (i, blk) in data.chunks(BLOCK_LEN).enumerate() {
            let nonzero = blk != ZERO_BLOCK.as_slice();
            if let Some(u) = self.used.get_mut(usize::from(address) + i) {
                if *u != nonzero {
                    *u = nonzero;
                    if nonzero {
                        self.used_count += 1;
                    } else {
                        self.used_count = self.used_count.saturating_sub(1);
                    }
                }
            }
        }
        Ok(())
    }

    /// The read phase (CMD18 of `count` frames).
    fn read_phase(&mut self, count: usize) -> Vec<Frame> {
        let pending = std::mem::replace(&mut self.pending, Pending::Nothing);
        let fail = |resp: u16, result: u16| {
            let mut f = Frame::new_request(resp);
            f.set_result(result);
            f
        };
        let mut out = match pending {
            Pending::Nothing => Vec::new(),
            Pending::Failed { resp, result } => vec![fail(resp, self.result_field(result))],
            Pending::CounterRead { nonce } => vec![self.counter_response(&nonce)],
            Pending::ResultRead => vec![self.result_response()],
            Pending::DataRead { address, nonce } => self.read_data(address, &nonce, count),
        };
        // A read with nothing (more) to return: general failure frames.
        while out.len() < count {
            out.push(fail(0, ResultCode::GeneralFailure.as_u16()));
        }
        out.truncate(count);
        out
    }

    fn counter_response(&self, nonce: &[u8; NONCE_LEN]) -> Frame {
        let mut f = Frame::new_request(RESP_READ_COUNTER);
        f.set_nonce(nonce);
        if self.state.key_programmed {
            f.set_write_counter(self.state.write_counter);
            f.set_result(self.result_field(ResultCode::Ok));
            let mac = frame_mac(&self.state.key, std::slice::from_ref(&f));
            f.set_key_mac(&mac);
        } else {
            f.set_result(ResultCode::KeyNotProgrammed.as_u16());
        }
        f
    }

    fn result_response(&self) -> Frame {
        let reg = self.result_reg;
        match reg.op {
            REQ_PROGRAM_KEY => {
                let mut f = Frame::new_request(RESP_PROGRAM_KEY);
                f.set_result(reg.result.as_u16());
                f
            }
            REQ_WRITE_DATA => {
                let mut f = Frame::new_request(RESP_WRITE_DATA);
                f.set_result(self.result_field(reg.result));
                f.set_address(reg.address);
                if self.state.key_programmed {
                    f.set_write_counter(self.state.write_counter);
                    let mac = frame_mac(&self.state.key, std::slice::from_ref(&f));
                    f.set_key_mac(&mac);
                }
                f
            }
            _ => {
                let mut f = Frame::zeroed();
                f.set_result(ResultCode::GeneralFailure.as_u16());
                f
            }
        }
    }

    fn read_data(&mut self, address: u16, nonce: &[u8; NONCE_LEN], count: usize) -> Vec<Frame> {
        let count = count.clamp(1, usize::from(u16::MAX));
        let mut frames = vec![Frame::new_request(RESP_READ_DATA); count];
        let code = if !self.state.key_programmed {
            ResultCode::KeyNotProgrammed
        } else if u32::from(address) as usize + count > self.layout.capacity_blocks as usize {
            ResultCode::AddressFailure
        } else {
            let mut buf = vec![0u8; count * BLOCK_LEN];
            let off = self.layout.block_offset(u32::from(address));
            match self.storage.read_at(off, &mut buf) {
                Ok(()) => {
                    for (f, blk) in frames.iter_mut().zip(buf.chunks(BLOCK_LEN)) {
                        if let Ok(b) = <&[u8; BLOCK_LEN]>::try_from(blk) {
                            f.set_data(b);
                        }
                    }
                    ResultCode::Ok
                }
                Err(_) => ResultCode::ReadFailure,
            }
        };
        let result = if code == ResultCode::KeyNotProgrammed {
            code.as_u16()
        } else {
            self.result_field(code)
        };
        for f in frames.iter_mut() {
            if code != ResultCode::Ok {
                f.set_data(&[0u8; BLOCK_LEN]);
            }
            f.set_nonce(nonce);
            f.set_address(address);
            f.set_block_count(count as u16);
            f.set_result(result);
        }
        if self.state.key_programmed {
            let mac = frame_mac(&self.state.key, &frames);
            if let Some(last) = frames.last_mut() {
                last.set_key_mac(&mac);
            }
        }
        frames
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
