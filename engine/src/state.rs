//! The engine's persistent state record (format in `engine/SPEC.md`).
//!
//! One fixed-size record holds the root key, the device key, the current
//! epoch and the oldest accepted epoch; the slot around it (`slots.rs`)
//! adds the enrolled recovery key's fingerprint. Every change is one
//! atomic replacement of a whole slot through [`crate::SecureStorage`], so
//! a crash leaves either the old or the new state, each of which works.

use p256::SecretKey;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::escrow::Fingerprint;

/// The fingerprint field's value when no recovery key is enrolled.
pub const NO_RECOVERY_KEY: Fingerprint = [0; hakeys_proto::RECOVERY_FINGERPRINT_LEN];

/// Version byte of the record layout.
pub const STATE_VERSION: u8 = 1;
/// Encoded length of a version-1 record.
pub const STATE_LEN: usize = 73;

/// The decoded state. Key material is wiped when it is dropped.
///
/// The recovery key's fingerprint and the offline flag are kept in the slot
/// record around the state record (`engine/SPEC.md` §1.3), not in the
/// record itself, whose format stays version 1.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct State {
    pub(crate) root_key: [u8; 32],
    pub(crate) device_key: [u8; 32],
    pub(crate) epoch: u32,
    pub(crate) min_epoch: u32,
    /// The enrolled recovery key's fingerprint; all zero: none.
    pub(crate) recovery: Fingerprint,
    /// Whether unmarked kind-2 blobs (generation 0, `engine/SPEC.md` §2)
    /// are refused; set once by `retire-unmarked`, never cleared. Kept in
    /// the slot record (format 4), like the recovery key.
    pub(crate) unmarked_offline_retired: bool,
}

/// The stored record does not decode: wrong length, unknown version, an
/// invalid device key or impossible epochs.
#[derive(Debug, PartialEq, Eq)]
pub struct CorruptState;

impl core::fmt::Display for CorruptState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the stored state record does not decode")
    }
}

impl core::error::Error for CorruptState {}

impl State {
    /// The current epoch (new blobs are sealed under it).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The oldest epoch still accepted.
    pub fn min_epoch(&self) -> u32 {
        self.min_epoch
    }

    /// The fingerprint of the enrolled recovery key, if any.
    pub fn recovery_key(&self) -> Option<&Fingerprint> {
        (self.recovery != NO_RECOVERY_KEY).then_some(&self.recovery)
    }

    /// Whether unmarked blobs sealed offline (generation 0) are refused.
    pub fn unmarked_offline_retired(&self) -> bool {
        self.unmarked_offline_retired
    }

    /// Whether `self` and `other` are the same state, recovery key and
    /// offline flag included.
    pub(crate) fn same_as(&self, other: &State) -> bool {
        self.encode() == other.encode()
            && self.recovery == other.recovery
            && self.unmarked_offline_retired == other.unmarked_offline_retired
    }

    pub(crate) fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[0] = STATE_VERSION;
        out[1..33].copy_from_slice(&self.root_key);
        out[33..65].copy_from_slice(&self.device_key);
        out[65..69].copy_from_slice(&self.epoch.to_be_bytes());
        out[69..73].copy_from_slice(&self.min_epoch.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<State, CorruptState> {
        let b: &[u8; STATE_LEN] = bytes.try_into().map_err(|_| CorruptState)?;
        if b[0] != STATE_VERSION {
            return Err(CorruptState);
        }
        let mut st = State {
            root_key: [0; 32],
            device_key: [0; 32],
            epoch: u32::from_be_bytes([b[65], b[66], b[67], b[68]]),
            min_epoch: u32::from_be_bytes([b[69], b[70], b[71], b[72]]),
            recovery: NO_RECOVERY_KEY,
            unmarked_offline_retired: false,
        };
        st.root_key.copy_from_slice(&b[1..33]);
        st.device_key.copy_from_slice(&b[33..65]);
        if st.min_epoch == 0
            || st.min_epoch > st.epoch
            || SecretKey::from_slice(&st.device_key).is_err()
        {
            return Err(CorruptState);
        }
        Ok(st)
    }
}
