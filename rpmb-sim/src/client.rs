//! The host side of the RPMB protocol (what OP-TEE does): builds and MACs
//! requests, checks responses (result, type, MAC, nonce, counter, address).
//!
//! The checks follow what OP-TEE's `tee_rpmb_resp_unpack_verify` verifies:
//! the result comes first (a failed operation's response need not carry a
//! valid MAC), then the response type, the address, the write counter, the
//! nonce and the MAC.

use std::fmt;
use std::io::Read;

use crate::frame::{
    frame_mac, mac_eq, Frame, ResultCode, BLOCK_LEN, KEY_LEN, NONCE_LEN, REQ_PROGRAM_KEY,
    REQ_READ_COUNTER, REQ_READ_DATA, REQ_RESULT_READ, REQ_WRITE_DATA, RESP_PROGRAM_KEY,
    RESP_READ_COUNTER, RESP_READ_DATA, RESP_WRITE_DATA, RESULT_CODE_MASK,
};
use crate::{Error, RpmbDevice};

/// Something that carries one eMMC transaction: request frames in,
/// response frames out (see [`RpmbDevice::process`] for the frame
/// sequence rules).
pub trait Transport {
    /// Sends `request` and returns the response frames.
    fn transact(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error>;
}

impl Transport for RpmbDevice {
    fn transact(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        self.process(request)
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transact(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        (**self).transact(request)
    }
}

/// Why a client operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The device answered with a result other than OK. `result` is the
    /// raw result field (the counter-expired bit 0x0080 included).
    Device {
        /// The raw result field.
        result: u16,
    },
    /// The response MAC does not verify with the key.
    BadMac,
    /// The response does not echo the request's nonce.
    NonceMismatch,
    /// The response is well authenticated but not the expected one (type,
    /// frame count, address, counter).
    UnexpectedResponse(String),
    /// The transport failed.
    Transport(Error),
}

impl ClientError {
    /// The device result code, if this is a device error.
    pub fn result_code(&self) -> Option<ResultCode> {
        match self {
            ClientError::Device { result } => ResultCode::from_u16(*result),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Device { result } => {
                let name = ResultCode::from_u16(*result).map_or("unknown result", |c| c.name());
                write!(f, "device result {result:#06x} ({name})")
            }
            ClientError::BadMac => write!(f, "response MAC does not verify"),
            ClientError::NonceMismatch => write!(f, "response nonce does not match the request"),
            ClientError::UnexpectedResponse(m) => write!(f, "unexpected response: {m}"),
            ClientError::Transport(e) => write!(f, "transport: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for ClientError {
    fn from(e: Error) -> Self {
        ClientError::Transport(e)
    }
}

/// The RPMB MAC: HMAC-SHA256 over bytes 228..512 of each frame.
pub fn mac(key: &[u8; KEY_LEN], frames: &[Frame]) -> [u8; KEY_LEN] {
    frame_mac(key, frames)
}

/// A fresh nonce from the kernel's random source (`/dev/urandom`), or, if
/// that cannot be read, a hash of the time, the process id and a counter.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .is_ok()
    {
        return n;
    }
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(t.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d: [u8; 32] = h.finalize().into();
    n.copy_from_slice(d.get(..NONCE_LEN).unwrap_or(&[0; NONCE_LEN]));
    n
}

fn one(resp: Vec<Frame>) -> Result<Frame, ClientError> {
    let n = resp.len();
    let mut it = resp.into_iter();
    match (it.next(), n) {
        (Some(f), 1) => Ok(f),
        _ => Err(ClientError::UnexpectedResponse(format!(
            "{n} response frames, expected 1"
        ))),
    }
}

fn check_result(f: &Frame) -> Result<(), ClientError> {
    if f.result() & RESULT_CODE_MASK != ResultCode::Ok.as_u16() {
        return Err(ClientError::Device { result: f.result() });
    }
    Ok(())
}

fn check_type(f: &Frame, want: u16) -> Result<(), ClientError> {
    if f.req_resp() != want {
        return Err(ClientError::UnexpectedResponse(format!(
            "response type {:#06x}, expected {want:#06x}",
            f.req_resp()
        )));
    }
    Ok(())
}

/// Programs the authentication key (program-key request + result read).
pub fn program_key<T: Transport + ?Sized>(
    dev: &mut T,
    key: &[u8; KEY_LEN],
) -> Result<(), ClientError> {
    let mut req = Frame::new_request(REQ_PROGRAM_KEY);
    req.set_key_mac(key);
    let resp = one(dev.transact(&[req, Frame::new_request(REQ_RESULT_READ)])?)?;
    check_result(&resp)?;
    check_type(&resp, RESP_PROGRAM_KEY)
}

/// Reads the write counter with `nonce`, verifying result, type, nonce and
/// MAC.
pub fn read_counter<T: Transport + ?Sized>(
    dev: &mut T,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<u32, ClientError> {
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(nonce);
    let resp = one(dev.transact(&[req])?)?;
    check_result(&resp)?;
    check_type(&resp, RESP_READ_COUNTER)?;
    if !mac_eq_nonce(&resp.nonce(), nonce) {
        return Err(ClientError::NonceMismatch);
    }
    if !mac_eq(&mac(key, std::slice::from_ref(&resp)), &resp.key_mac()) {
        return Err(ClientError::BadMac);
    }
    Ok(resp.write_counter())
}

fn mac_eq_nonce(a: &[u8; NONCE_LEN], b: &[u8; NONCE_LEN]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// Builds the frames of an authenticated write of `data` at `address` with
/// write counter `counter`, MAC'd with `key` (in the last frame).
pub fn build_write_frames(
    key: &[u8; KEY_LEN],
    address: u16,
    counter: u32,
    data: &[[u8; BLOCK_LEN]],
) -> Vec<Frame> {
    let count = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let mut frames: Vec<Frame> = data
        .iter()
        .map(|blk| {
            let mut f = Frame::new_request(REQ_WRITE_DATA);
            f.set_data(blk);
            f.set_write_counter(counter);
            f.set_address(address);
            f.set_block_count(count);
            f
        })
        .collect();
    let m = mac(key, &frames);
    if let Some(last) = frames.last_mut() {
        last.set_key_mac(&m);
    }
    frames
}

/// Writes `data` (1..=max_write_blocks blocks) at `address`, given the
/// current write counter; returns the new counter. Verifies the result
/// read response: result, type, MAC, counter + 1, address.
pub fn write_blocks_at_counter<T: Transport + ?Sized>(
    dev: &mut T,
    key: &[u8; KEY_LEN],
    address: u16,
    counter: u32,
    data: &[[u8; BLOCK_LEN]],
) -> Result<u32, ClientError> {
    let mut req = build_write_frames(key, address, counter, data);
    req.push(Frame::new_request(REQ_RESULT_READ));
    let resp = one(dev.transact(&req)?)?;
    check_result(&resp)?;
    check_type(&resp, RESP_WRITE_DATA)?;
    if !mac_eq(&mac(key, std::slice::from_ref(&resp)), &resp.key_mac()) {
        return Err(ClientError::BadMac);
    }
    if resp.address() != address {
        return Err(ClientError::UnexpectedResponse(format!(
            "write response address {}, expected {address}",
            resp.address()
        )));
    }
    if Some(resp.write_counter()) != counter.checked_add(1) {
        return Err(ClientError::UnexpectedResponse(format!(
            "write counter {} after the write, expected {counter} + 1",
            resp.write_counter()
        )));
    }
    Ok(resp.write_counter())
}

/// Reads the write counter (with a fresh nonce), then writes `data` at
/// `address`; returns the new counter.
pub fn write_blocks<T: Transport + ?Sized>(
    dev: &mut T,
    key: &[u8; KEY_LEN],
    address: u16,
    data: &[[u8; BLOCK_LEN]],
) -> Result<u32, ClientError> {
    let counter = read_counter(dev, key, &fresh_nonce())?;
    write_blocks_at_counter(dev, key, address, counter, data)
}

/// Reads `count` blocks from `address` with `nonce`; verifies result, type,
/// frame count, address, nonce and the MAC over all response frames.
pub fn read_blocks<T: Transport + ?Sized>(
    dev: &mut T,
    key: &[u8; KEY_LEN],
    address: u16,
    count: u16,
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<[u8; BLOCK_LEN]>, ClientError> {
    let mut req = Frame::new_request(REQ_READ_DATA);
    req.set_nonce(nonce);
    req.set_address(address);
    req.set_block_count(count);
    let resp = dev.transact(&[req])?;
    let Some(last) = resp.last() else {
        return Err(ClientError::UnexpectedResponse("no response frames".into()));
    };
    check_result(last)?;
    if resp.len() != usize::from(count.max(1)) {
        return Err(ClientError::UnexpectedResponse(format!(
            "{} response frames, expected {}",
            resp.len(),
            count.max(1)
        )));
    }
    for f in &resp {
        check_type(f, RESP_READ_DATA)?;
    }
    if last.address() != address {
        return Err(ClientError::UnexpectedResponse(format!(
            "read response address {}, expected {address}",
            last.address()
        )));
    }
    if !mac_eq_nonce(&last.nonce(), nonce) {
        return Err(ClientError::NonceMismatch);
    }
    if !mac_eq(&mac(key, &resp), &last.key_mac()) {
        return Err(ClientError::BadMac);
    }
    Ok(resp.iter().map(Frame::data).collect())
}
