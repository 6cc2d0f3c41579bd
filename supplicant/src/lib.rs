//! A tee-supplicant for OP-TEE whose RPMB partition is an `rpmb-sim` device.
//!
//! Debian's tee-supplicant emulates RPMB in its own memory, so RPMB content
//! is lost when QEMU restarts. This supplicant serves OP-TEE's requests
//! from `/dev/teepriv0` and sends RPMB frames to an `rpmb-sim` image on a
//! disk that outlives the QEMU process. It implements what OP-TEE built with
//! `CFG_REE_FS=n` asks for (see `supplicant/README.md`):
//!
//! | func | request | served |
//! |---|---|---|
//! | 0 | LOAD_TA | from the TA directories |
//! | 1 | RPMB | `rpmb-sim` (`GET_DEV_INFO`, `DATA_REQUEST`) |
//! | 6 | SHM_ALLOC | anonymous memory registered with the TEE driver |
//! | 7 | SHM_FREE | |
//! | other | REE FS, sockets, plugins, ... | `TEEC_ERROR_NOT_SUPPORTED` |
//!
//! The protocol logic here is pure (memory behind [`SharedMemory`]) and
//! unit-tested on any machine; the ioctl layer is in `tee_dev.rs`. A
//! test-only power cut at the N-th authenticated RPMB write is in
//! [`powercut`] (off unless asked for on the command line).

use std::path::PathBuf;

use rpmb_sim::{Frame, RpmbDevice, FRAME_LEN};

pub mod powercut;

pub use powercut::{CutMode, Halt, PowerCut};

// The one module allowed `unsafe` (Cargo.toml denies it everywhere else).
#[allow(unsafe_code)]
pub mod tee_dev;

/// Supplicant functions (OPTEE_RPC_CMD_* as numbered for tee-supplicant).
pub mod func {
    pub const LOAD_TA: u32 = 0;
    pub const RPMB: u32 = 1;
    pub const FS: u32 = 2;
    pub const SHM_ALLOC: u32 = 6;
    pub const SHM_FREE: u32 = 7;
}

/// TEE Client API result codes returned to OP-TEE.
pub mod teec {
    pub const SUCCESS: u32 = 0;
    pub const ERROR_GENERIC: u32 = 0xFFFF_0000;
    pub const ERROR_BAD_PARAMETERS: u32 = 0xFFFF_0006;
    pub const ERROR_ITEM_NOT_FOUND: u32 = 0xFFFF_0008;
    pub const ERROR_NOT_SUPPORTED: u32 = 0xFFFF_000A;
    pub const ERROR_OUT_OF_MEMORY: u32 = 0xFFFF_000C;
}

/// Parameter types (`TEE_IOCTL_PARAM_ATTR_TYPE_*`).
pub mod attr {
    pub const NONE: u64 = 0;
    pub const VALUE_INPUT: u64 = 1;
    pub const VALUE_OUTPUT: u64 = 2;
    pub const VALUE_INOUT: u64 = 3;
    pub const MEMREF_INPUT: u64 = 5;
    pub const MEMREF_OUTPUT: u64 = 6;
    pub const MEMREF_INOUT: u64 = 7;
    pub const TYPE_MASK: u64 = 0xff;
    pub const META: u64 = 0x100;
}

/// `struct tee_ioctl_param`: for values a, b, c are the value; for memrefs
/// a = offset, b = size, c = shared-memory id (`u64::MAX`: no buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Param {
    pub attr: u64,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

impl Param {
    fn kind(&self) -> u64 {
        self.attr & attr::TYPE_MASK
    }
    fn is_value(&self) -> bool {
        matches!(
            self.kind(),
            attr::VALUE_INPUT | attr::VALUE_OUTPUT | attr::VALUE_INOUT
        )
    }
    fn is_memref(&self) -> bool {
        matches!(
            self.kind(),
            attr::MEMREF_INPUT | attr::MEMREF_OUTPUT | attr::MEMREF_INOUT
        )
    }
    /// The memref's (shm id, offset, size), `None` for "no buffer".
    fn memref(&self) -> Option<(u64, usize, usize)> {
        if self.c == u64::MAX {
            return None;
        }
        Some((
            self.c,
            usize::try_from(self.a).ok()?,
            usize::try_from(self.b).ok()?,
        ))
    }
}

/// Shared memory the supplicant allocated for OP-TEE, by id.
pub trait SharedMemory {
    /// Allocate and register `size` bytes; returns the id OP-TEE will use.
    fn alloc(&mut self, size: usize) -> Result<u64, u32>;
    /// Release an allocation.
    fn free(&mut self, id: u64) -> Result<(), u32>;
    /// Copy `out.len()` bytes at `offset` of allocation `id` into `out`.
    fn read(&self, id: u64, offset: usize, out: &mut [u8]) -> Result<(), u32>;
    /// Copy `data` to `offset` of allocation `id`.
    fn write(&mut self, id: u64, offset: usize, data: &[u8]) -> Result<(), u32>;
    /// Whether `offset..offset + len` lies inside allocation `id`. Checked
    /// before anything is sized from an OP-TEE-supplied length.
    fn fits(&self, id: u64, offset: usize, len: usize) -> bool;
}

/// Counters for the log and the benchmark record.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub tas_loaded: u64,
    pub rpmb_transactions: u64,
    pub rpmb_frames_in: u64,
    pub rpmb_frames_out: u64,
    pub rpmb_write_requests: u64,
    pub unsupported: u64,
}

/// RPMB request header commands (`struct rpmb_req`).
const RPMB_CMD_DATA_REQ: u16 = 0;
const RPMB_CMD_GET_DEV_INFO: u16 = 1;
const RPMB_REQ_HEADER: usize = 6;
const RPMB_DEV_INFO_LEN: usize = 19;

/// The supplicant's state.
pub struct Supplicant<M> {
    pub shm: M,
    pub ta_dirs: Vec<PathBuf>,
    pub rpmb: Option<RpmbDevice>,
    pub stats: Stats,
    /// A test-only power cut, if armed (see [`powercut`]).
    pub cut: Option<PowerCut>,
    /// Set once the power cut has happened: the request that hit it, and
    /// every later one, must never be answered.
    pub halted: bool,
}

impl<M: SharedMemory> Supplicant<M> {
    /// A supplicant with no power cut armed.
    pub fn new(shm: M, ta_dirs: Vec<PathBuf>, rpmb: Option<RpmbDevice>) -> Self {
        Supplicant {
            shm,
            ta_dirs,
            rpmb,
            stats: Stats::default(),
            cut: None,
            halted: false,
        }
    }

    /// Serve one request; `params` are updated in place for the reply.
    /// After a power cut ([`Supplicant::halted`]) nothing is served and the
    /// caller must not reply.
    pub fn handle(&mut self, func: u32, params: &mut [Param]) -> u32 {
        if self.halted {
            return teec::ERROR_GENERIC;
        }
        self.stats.requests += 1;
        match func {
            func::LOAD_TA => self.load_ta(params),
            func::RPMB => self.rpmb(params),
            func::SHM_ALLOC => self.shm_alloc(params),
            func::SHM_FREE => self.shm_free(params),
            _ => {
                self.stats.unsupported += 1;
                teec::ERROR_NOT_SUPPORTED
            }
        }
    }

    fn shm_alloc(&mut self, params: &mut [Param]) -> u32 {
        let [p] = params else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        if !p.is_value() {
            return teec::ERROR_BAD_PARAMETERS;
        }
        let Ok(size) = usize::try_from(p.b) else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        match self.shm.alloc(size) {
            Ok(id) => {
                p.c = id;
                teec::SUCCESS
            }
            Err(e) => e,
        }
    }

    fn shm_free(&mut self, params: &mut [Param]) -> u32 {
        let [p] = params else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        if !p.is_value() {
            return teec::ERROR_BAD_PARAMETERS;
        }
        match self.shm.free(p.b) {
            Ok(()) => teec::SUCCESS,
            Err(e) => e,
        }
    }

    fn load_ta(&mut self, params: &mut [Param]) -> u32 {
        let [cmd, ta] = params else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        if !cmd.is_value() || !ta.is_memref() {
            return teec::ERROR_BAD_PARAMETERS;
        }
        let mut octets = [0u8; 16];
        octets[..8].copy_from_slice(&cmd.a.to_le_bytes());
        octets[8..].copy_from_slice(&cmd.b.to_le_bytes());
        let name = format!("{}.ta", uuid_string(&octets));
        let Some(bytes) = self
            .ta_dirs
            .iter()
            .find_map(|d| std::fs::read(d.join(&name)).ok())
        else {
            return teec::ERROR_ITEM_NOT_FOUND;
        };
        if let Some((id, offset, size)) = ta.memref() {
            if size >= bytes.len() {
                if let Err(e) = self.shm.write(id, offset, &bytes) {
                    return e;
                }
                self.stats.tas_loaded += 1;
            }
        }
        // Always report the TA's size: with no or a short buffer, OP-TEE
        // allocates one that fits and asks again.
        ta.b = bytes.len() as u64;
        teec::SUCCESS
    }

    fn rpmb(&mut self, params: &mut [Param]) -> u32 {
        let [req_p, resp_p] = params else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        let (Some((req_id, req_off, req_len)), Some((resp_id, resp_off, resp_len))) =
            (req_p.memref(), resp_p.memref())
        else {
            return teec::ERROR_BAD_PARAMETERS;
        };
        // Both lengths come from OP-TEE: check them against the shared
        // memory before any buffer is sized from them.
        if !self.shm.fits(req_id, req_off, req_len) || !self.shm.fits(resp_id, resp_off, resp_len) {
            return teec::ERROR_BAD_PARAMETERS;
        }
        if !(RPMB_REQ_HEADER..=RPMB_REQ_HEADER + 64 * FRAME_LEN).contains(&req_len) {
            return teec::ERROR_BAD_PARAMETERS;
        }
        let mut req = vec![0u8; req_len];
        if let Err(e) = self.shm.read(req_id, req_off, &mut req) {
            return e;
        }
        let Some(dev) = self.rpmb.as_mut() else {
            return teec::ERROR_NOT_SUPPORTED;
        };
        let cmd = u16::from_ne_bytes([req[0], req[1]]);
        match cmd {
            RPMB_CMD_GET_DEV_INFO => {
                if resp_len < RPMB_DEV_INFO_LEN {
                    return teec::ERROR_BAD_PARAMETERS;
                }
                let info = dev.info();
                let mut out = [0u8; RPMB_DEV_INFO_LEN];
                out[..16].copy_from_slice(&info.cid);
                out[16] = info.size_mult;
                out[17] = info.rel_wr_sec_c;
                out[18] = 0; // RPMB_CMD_GET_DEV_INFO_RET_OK
                match self.shm.write(resp_id, resp_off, &out) {
                    Ok(()) => teec::SUCCESS,
                    Err(e) => e,
                }
            }
            RPMB_CMD_DATA_REQ => {
                let body = &req[RPMB_REQ_HEADER..];
                if body.is_empty() || body.len() % FRAME_LEN != 0 || resp_len % FRAME_LEN != 0 {
                    return teec::ERROR_BAD_PARAMETERS;
                }
                let frames: Vec<Frame> = body
                    .chunks_exact(FRAME_LEN)
                    .filter_map(Frame::from_slice)
                    .collect();
                let resp_frames = resp_len / FRAME_LEN;
                self.stats.rpmb_transactions += 1;
                self.stats.rpmb_frames_in += frames.len() as u64;
                let mut cut_now = None;
                if frames.first().map(|f| f.req_resp()) == Some(rpmb_sim::frame::REQ_WRITE_DATA) {
                    self.stats.rpmb_write_requests += 1;
                    cut_now = self
                        .cut
                        .as_ref()
                        .filter(|c| c.at_write == self.stats.rpmb_write_requests)
                        .map(|c| c.mode);
                }
                if let Some(mode) = cut_now {
                    if mode == CutMode::After {
                        // The device applies and commits the write (rpmb-sim
                        // syncs each commit); its response is dropped.
                        if let Err(e) = dev.process_rpmb_request(&frames, resp_frames) {
                            eprintln!("hakeys-supplicant: RPMB request refused: {e}");
                        }
                    }
                    self.halted = true;
                    let write = self.stats.rpmb_write_requests;
                    if let Some(cut) = self.cut.as_mut() {
                        cut.halt.halt(write, mode);
                    }
                    return teec::ERROR_GENERIC;
                }
                match dev.process_rpmb_request(&frames, resp_frames) {
                    Ok(resp) => {
                        self.stats.rpmb_frames_out += resp.len() as u64;
                        let mut out = Vec::with_capacity(resp.len() * FRAME_LEN);
                        for f in &resp {
                            out.extend_from_slice(f.as_bytes());
                        }
                        out.resize(resp_len, 0);
                        match self.shm.write(resp_id, resp_off, &out) {
                            Ok(()) => teec::SUCCESS,
                            Err(e) => e,
                        }
                    }
                    Err(e) => {
                        eprintln!("hakeys-supplicant: RPMB request refused: {e}");
                        teec::ERROR_GENERIC
                    }
                }
            }
            _ => teec::ERROR_BAD_PARAMETERS,
        }
    }
}

/// RFC 4122 text form of 16 octets.
pub fn uuid_string(o: &[u8; 16]) -> String {
    let h: Vec<String> = o.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests;
