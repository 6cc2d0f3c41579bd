//! The 512-byte JEDEC RPMB data frame, its field layout and the frame MAC.
//!
//! Multi-byte fields are big-endian (JEDEC byte order), unlike the image file.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

/// Length of one RPMB data frame in bytes.
pub const FRAME_LEN: usize = 512;
/// Length of the data field of a frame: one RPMB block ("half sector").
pub const BLOCK_LEN: usize = 256;
/// Length of the authentication key and of the MAC.
pub const KEY_LEN: usize = 32;
/// Length of the nonce field.
pub const NONCE_LEN: usize = 16;

/// Byte offset of the stuff bytes (always 0 here).
pub const OFF_STUFF: usize = 0;
/// Byte offset of the key/MAC field (32 bytes).
pub const OFF_KEY_MAC: usize = 196;
/// Byte offset of the data field (256 bytes).
pub const OFF_DATA: usize = 228;
/// Byte offset of the nonce field (16 bytes).
pub const OFF_NONCE: usize = 484;
/// Byte offset of the write counter (u32 big-endian).
pub const OFF_WRITE_COUNTER: usize = 500;
/// Byte offset of the address (u16 big-endian, in 256-byte blocks).
pub const OFF_ADDRESS: usize = 504;
/// Byte offset of the block count (u16 big-endian).
pub const OFF_BLOCK_COUNT: usize = 506;
/// Byte offset of the result (u16 big-endian).
pub const OFF_RESULT: usize = 508;
/// Byte offset of the request/response type (u16 big-endian).
pub const OFF_REQ_RESP: usize = 510;
/// The MAC covers bytes `MAC_START..FRAME_LEN` of every frame (284 bytes).
pub const MAC_START: usize = OFF_DATA;
/// Number of bytes of one frame covered by the MAC.
pub const MAC_INPUT_LEN: usize = FRAME_LEN - MAC_START;

/// Request: authentication key programming.
pub const REQ_PROGRAM_KEY: u16 = 0x0001;
/// Request: reading of the write counter value.
pub const REQ_READ_COUNTER: u16 = 0x0002;
/// Request: authenticated data write.
pub const REQ_WRITE_DATA: u16 = 0x0003;
/// Request: authenticated data read.
pub const REQ_READ_DATA: u16 = 0x0004;
/// Request: result read.
pub const REQ_RESULT_READ: u16 = 0x0005;

/// Response: authentication key programming.
pub const RESP_PROGRAM_KEY: u16 = 0x0100;
/// Response: reading of the write counter value.
pub const RESP_READ_COUNTER: u16 = 0x0200;
/// Response: authenticated data write.
pub const RESP_WRITE_DATA: u16 = 0x0300;
/// Response: authenticated data read.
pub const RESP_READ_DATA: u16 = 0x0400;
/// Response type 0x0500 is reserved by JEDEC for a result-read response;
/// an eMMC answers a result read with the response type of the operation
/// whose result it reports (0x0100 or 0x0300), and so does this device.
pub const RESP_RESULT_READ: u16 = 0x0500;

/// Bit 7 of the result: the write counter has expired (reached 0xFFFF_FFFF).
pub const RESULT_COUNTER_EXPIRED: u16 = 0x0080;
/// Mask of the operation result without the counter-expired bit.
pub const RESULT_CODE_MASK: u16 = 0x007F;

/// The operation results of JEDEC eMMC 5.1 (bits 0..6 of the result field).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// 0x0000 operation OK.
    Ok = 0x0000,
    /// 0x0001 general failure.
    GeneralFailure = 0x0001,
    /// 0x0002 authentication failure (MAC comparison not matching).
    AuthFailure = 0x0002,
    /// 0x0003 counter failure (counters not matching).
    CounterFailure = 0x0003,
    /// 0x0004 address failure (address out of range).
    AddressFailure = 0x0004,
    /// 0x0005 write failure (data, key or counter programming failure).
    WriteFailure = 0x0005,
    /// 0x0006 read failure (data fetch failure).
    ReadFailure = 0x0006,
    /// 0x0007 authentication key not yet programmed.
    KeyNotProgrammed = 0x0007,
}

impl ResultCode {
    /// The code as it appears in the result field (without the expired bit).
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// Decodes bits 0..6 of a result field; unknown codes give `None`.
    pub const fn from_u16(raw: u16) -> Option<ResultCode> {
        Some(match raw & RESULT_CODE_MASK {
            0x0000 => ResultCode::Ok,
            0x0001 => ResultCode::GeneralFailure,
            0x0002 => ResultCode::AuthFailure,
            0x0003 => ResultCode::CounterFailure,
            0x0004 => ResultCode::AddressFailure,
            0x0005 => ResultCode::WriteFailure,
            0x0006 => ResultCode::ReadFailure,
            0x0007 => ResultCode::KeyNotProgrammed,
            _ => return None,
        })
    }

    /// A short English name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            ResultCode::Ok => "operation OK",
            ResultCode::GeneralFailure => "general failure",
            ResultCode::AuthFailure => "authentication failure",
            ResultCode::CounterFailure => "counter failure",
            ResultCode::AddressFailure => "address failure",
            ResultCode::WriteFailure => "write failure",
            ResultCode::ReadFailure => "read failure",
            ResultCode::KeyNotProgrammed => "authentication key not yet programmed",
        }
    }
}

/// One 512-byte RPMB data frame, exactly as it travels on the eMMC bus
/// (without start/stop bits and CRC).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(pub [u8; FRAME_LEN]);

impl Default for Frame {
    fn default() -> Self {
        Frame::zeroed()
    }
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The key/MAC field and the data are deliberately not printed: a
        // program-key frame carries the key in clear.
        f.debug_struct("Frame")
            .field("req_resp", &format_args!("{:#06x}", self.req_resp()))
            .field("result", &format_args!("{:#06x}", self.result()))
            .field("block_count", &self.block_count())
            .field("address", &self.address())
            .field("write_counter", &self.write_counter())
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// A frame of zeros.
    pub const fn zeroed() -> Frame {
        Frame([0; FRAME_LEN])
    }

    /// A zeroed frame with its request/response type set.
    pub fn new_request(req_type: u16) -> Frame {
        let mut f = Frame::zeroed();
        f.set_req_resp(req_type);
        f
    }

    /// Copies a frame out of exactly 512 bytes; any other length gives `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Frame> {
        let arr: [u8; FRAME_LEN] = bytes.try_into().ok()?;
        Some(Frame(arr))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; FRAME_LEN] {
        &self.0
    }

    fn get<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.0.get(off..off + N) {
            out.copy_from_slice(src);
        }
        out
    }

    fn put(&mut self, off: usize, src: &[u8]) {
        if let Some(dst) = self.0.get_mut(off..off + src.len()) {
            dst.copy_from_slice(src);
        }
    }

    fn slice(&self, off: usize, len: usize) -> &[u8] {
        self.0.get(off..off + len).unwrap_or(&[])
    }

    /// The stuff bytes (0..196).
    pub fn stuff(&self) -> &[u8] {
        self.slice(OFF_STUFF, OFF_KEY_MAC)
    }

    /// The key/MAC field (196..228).
    pub fn key_mac(&self) -> [u8; KEY_LEN] {
        self.get(OFF_KEY_MAC)
    }
    /// Sets the key/MAC field.
    pub fn set_key_mac(&mut self, v: &[u8; KEY_LEN]) {
        self.put(OFF_KEY_MAC, v);
    }

    /// The data field (228..484), copied.
    pub fn data(&self) -> [u8; BLOCK_LEN] {
        self.get(OFF_DATA)
    }
    /// The data field (228..484), borrowed.
    pub fn data_slice(&self) -> &[u8] {
        self.slice(OFF_DATA, BLOCK_LEN)
    }
    /// Sets the data field.
    pub fn set_data(&mut self, v: &[u8; BLOCK_LEN]) {
        self.put(OFF_DATA, v);
    }

    /// The nonce field (484..500).
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        self.get(OFF_NONCE)
    }
    /// Sets the nonce field.
    pub fn set_nonce(&mut self, v: &[u8; NONCE_LEN]) {
        self.put(OFF_NONCE, v);
    }

    /// The write counter (500..504, big-endian).
    pub fn write_counter(&self) -> u32 {
        u32::from_be_bytes(self.get(OFF_WRITE_COUNTER))
    }
    /// Sets the write counter.
    pub fn set_write_counter(&mut self, v: u32) {
        self.put(OFF_WRITE_COUNTER, &v.to_be_bytes());
    }

    /// The address (504..506, big-endian), in 256-byte blocks.
    pub fn address(&self) -> u16 {
        u16::from_be_bytes(self.get(OFF_ADDRESS))
    }
    /// Sets the address.
    pub fn set_address(&mut self, v: u16) {
        self.put(OFF_ADDRESS, &v.to_be_bytes());
    }

    /// The block count (506..508, big-endian).
    pub fn block_count(&self) -> u16 {
        u16::from_be_bytes(self.get(OFF_BLOCK_COUNT))
    }
    /// Sets the block count.
    pub fn set_block_count(&mut self, v: u16) {
        self.put(OFF_BLOCK_COUNT, &v.to_be_bytes());
    }

    /// The result (508..510, big-endian), including the counter-expired bit.
    pub fn result(&self) -> u16 {
        u16::from_be_bytes(self.get(OFF_RESULT))
    }
    /// Sets the result.
    pub fn set_result(&mut self, v: u16) {
        self.put(OFF_RESULT, &v.to_be_bytes());
    }

    /// The request/response type (510..512, big-endian).
    pub fn req_resp(&self) -> u16 {
        u16::from_be_bytes(self.get(OFF_REQ_RESP))
    }
    /// Sets the request/response type.
    pub fn set_req_resp(&mut self, v: u16) {
        self.put(OFF_REQ_RESP, &v.to_be_bytes());
    }

    /// The 284 bytes covered by the MAC (228..512).
    pub fn mac_input(&self) -> &[u8] {
        self.slice(MAC_START, MAC_INPUT_LEN)
    }
}

/// HMAC-SHA256 with `key` over the concatenation of the 284-byte
/// `228..512` parts of `frames`, in order. This is the JEDEC RPMB MAC; for a
/// multi-frame write or read it goes in the key/MAC field of the last frame.
pub fn frame_mac(key: &[u8; KEY_LEN], frames: &[Frame]) -> [u8; KEY_LEN] {
    // HMAC pads keys shorter than the 64-byte SHA-256 block with zeros, so
    // initialising from the padded block is the same MAC and cannot fail.
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    block.zeroize();
    for f in frames {
        mac.update(f.mac_input());
    }
    mac.finalize().into_bytes().into()
}

/// Compares two MACs in constant time.
pub fn mac_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}
