//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rpmb_sim::client;
use rpmb_sim::storage::MemStorage;
use rpmb_sim::{CreateOptions, RpmbDevice, DEFAULT_CID};

pub const KEY: [u8; 32] = [0x11; 32];
pub const OTHER_KEY: [u8; 32] = [0x22; 32];

pub fn hex_decode(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub fn small_opts(rel_wr_sec_c: u8) -> CreateOptions {
    CreateOptions {
        size_mult: 1,
        cid: DEFAULT_CID,
        rel_wr_sec_c,
    }
}

/// An in-memory device of 512 blocks with `KEY` programmed.
pub fn keyed_device(rel_wr_sec_c: u8) -> (RpmbDevice, MemStorage) {
    let (mut dev, mem) = RpmbDevice::new_in_memory(&small_opts(rel_wr_sec_c)).expect("device");
    client::program_key(&mut dev, &KEY).expect("program key");
    (dev, mem)
}

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn block(&mut self) -> [u8; 256] {
        let mut b = [0u8; 256];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        b
    }
}

/// Independent reading of the state slots as SPEC.md describes them:
/// returns (slot offset, seq) of the current state record.
pub fn current_state_slot(image: &[u8]) -> (usize, u64) {
    use sha2::{Digest, Sha256};
    let mut best: Option<(usize, u64)> = None;
    for (i, off) in [4096usize, 8192].into_iter().enumerate() {
        let rec = &image[off..off + 96];
        let sum: [u8; 32] = Sha256::digest(&rec[..64]).into();
        if &rec[..8] != b"RPMBSTAT" || rec[64..96] != sum {
            continue;
        }
        let seq = u64::from_le_bytes(rec[8..16].try_into().unwrap());
        if seq % 2 != i as u64 {
            continue;
        }
        if best.is_none_or(|(_, s)| seq > s) {
            best = Some((off, seq));
        }
    }
    best.expect("a valid state record")
}

/// Sets the write counter in the current state record (as a factory tool
/// following SPEC.md would), re-computing its checksum.
pub fn patch_write_counter(image: &mut [u8], counter: u32) {
    use sha2::{Digest, Sha256};
    let (off, _) = current_state_slot(image);
    image[off + 20..off + 24].copy_from_slice(&counter.to_le_bytes());
    let sum: [u8; 32] = Sha256::digest(&image[off..off + 64]).into();
    image[off + 64..off + 96].copy_from_slice(&sum);
}
