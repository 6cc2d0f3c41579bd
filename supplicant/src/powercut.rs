//! Test-only fault injection: a simulated power cut at the N-th
//! authenticated RPMB write.
//!
//! Off unless the supplicant is started with `--cut-at-write N --cut-mode
//! before|after` (only `cargo xtask qemu-powercut`'s guest script does
//! that; no environment variable or configuration file turns it on). The
//! writes counted are RPMB `DATA_REQUEST`s whose first frame is an
//! authenticated data write (request type 0x0003), from the supplicant's
//! start, one-based: the same count as the `rpmb_write_requests` statistic.
//! OP-TEE 4.10.0 sends exactly one block per such request
//! (`docs/optee-rpmb-atomicity.md`).
//!
//! - [`CutMode::Before`]: the device never sees the frame, as when the
//!   power fails before the eMMC accepted the write.
//! - [`CutMode::After`]: the device applies the write and commits it
//!   durably, then the power fails before the response reaches OP-TEE.
//!
//! Either way the machine then stops: the [`Halt`] action powers the VM
//! off (`main.rs`), and the supplicant never answers the request. A
//! supplicant that has halted refuses every later request without touching
//! the device (on the VM nothing comes later; in tests, this shows that
//! nothing after the cut reaches the device).

use std::fmt;
use std::str::FromStr;

/// When, relative to the device, the power fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Before the device applies the write.
    Before,
    /// After the device applied and committed the write, before OP-TEE
    /// sees the response.
    After,
}

impl FromStr for CutMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "before" => Ok(CutMode::Before),
            "after" => Ok(CutMode::After),
            other => Err(format!("--cut-mode takes before or after, not {other:?}")),
        }
    }
}

impl fmt::Display for CutMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CutMode::Before => "before",
            CutMode::After => "after",
        })
    }
}

/// What happens at the cut: on the VM, power off (never returns); in
/// tests, record it. Called once, after the device work of the mode (none
/// for `Before`, the committed write for `After`).
pub trait Halt {
    /// Stop the machine at authenticated write number `write`.
    fn halt(&mut self, write: u64, mode: CutMode);
}

/// An armed power cut.
pub struct PowerCut {
    /// The one-based number of the authenticated write to cut at.
    pub at_write: u64,
    pub mode: CutMode,
    pub halt: Box<dyn Halt>,
}

impl PowerCut {
    /// Parse `--cut-at-write` and `--cut-mode` (both or neither).
    pub fn from_args(
        at_write: Option<&str>,
        mode: Option<&str>,
        halt: Box<dyn Halt>,
    ) -> Result<Option<PowerCut>, String> {
        match (at_write, mode) {
            (None, None) => Ok(None),
            (Some(n), Some(m)) => {
                let at_write = match n.parse::<u64>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(format!("--cut-at-write takes a number >= 1, not {n:?}")),
                };
                Ok(Some(PowerCut {
                    at_write,
                    mode: m.parse()?,
                    halt,
                }))
            }
            _ => Err("--cut-at-write and --cut-mode go together".into()),
        }
    }
}
