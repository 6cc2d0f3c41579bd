//! `rpmb-sim`: a software eMMC RPMB partition (JEDEC eMMC 5.1 semantics)
//! that keeps its state in one crash-safe image file.
//!
//! It is the RPMB chip when there is none: the simulator backend stores its
//! state on it through [`client`], and a tee-supplicant can forward OP-TEE's
//! RPMB frames to [`RpmbDevice::process_rpmb_request`] (or to
//! `rpmb-sim serve` over a pipe) frame by frame.
//!
//! * [`frame`]: the 512-byte frame, its fields and the MAC.
//! * [`RpmbDevice`]: the device: request handling, result codes, the commit
//!   protocol and crash recovery over a [`storage::Storage`].
//! * [`client`]: the host side (what OP-TEE does), checking every response.
//! * [`serve`]: the raw frame stream of `rpmb-sim serve`.
//! * [`storage`]: file, in-memory and power-cut-simulating backends.
//!
//! `SPEC.md` next to this crate specifies the image format, the commit and
//! recovery rules, the frame semantics and the stream protocol.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod client;
mod device;
mod error;
pub mod frame;
pub mod fuzzing;
pub mod image;
pub mod serve;
pub mod storage;

pub use client::Transport;
pub use device::{
    format_storage, CreateOptions, DeviceInfo, RpmbDevice, DEFAULT_CID, DEFAULT_REL_WR_SEC_C,
    DEFAULT_SIZE_MULT,
};
pub use error::Error;
pub use frame::{Frame, ResultCode, BLOCK_LEN, FRAME_LEN, KEY_LEN, NONCE_LEN};
