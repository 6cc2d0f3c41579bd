//! The image file format, version 1 (SPEC.md is the normative text).
//!
//! All integers in the image are little-endian. Every record carries a
//! SHA-256 checksum over its preceding bytes.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::frame::{BLOCK_LEN, KEY_LEN};
use crate::Error;

/// Format version written and understood by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every region.
pub const REGION_ALIGN: u64 = 4096;
/// Superblock magic.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"RPMBSIM\0";
/// State record magic.
pub const STATE_MAGIC: [u8; 8] = *b"RPMBSTAT";
/// Journal record magic.
pub const JOURNAL_MAGIC: [u8; 8] = *b"RPMBJRNL";
/// Offset of the superblock.
pub const SUPERBLOCK_OFFSET: u64 = 0;
/// Offsets of the two state slots.
pub const STATE_SLOT_OFFSETS: [u64; 2] = [4096, 8192];
/// Offset of the journal region.
pub const JOURNAL_OFFSET: u64 = 12288;
/// Bytes of the superblock that are defined (the rest of its region is 0).
pub const SUPERBLOCK_LEN: usize = 128;
/// Length of a state record.
pub const STATE_LEN: usize = 96;
/// Length of a journal record's header (before the data blocks).
pub const JOURNAL_HEADER_LEN: usize = 128;
/// Length of a checksum.
pub const CHECKSUM_LEN: usize = 32;
/// Bytes in one `size_mult` unit (128 KiB).
pub const SIZE_UNIT: u64 = 128 * 1024;

/// `last_op` value: no write-type operation recorded yet.
pub const LAST_OP_NONE: u16 = 0;

fn sha256(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    Sha256::digest(bytes).into()
}

fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}
fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}
fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}
fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(off..off + v.len()) {
        d.copy_from_slice(v);
    }
}
fn get<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = b.get(off..off + N) {
        a.copy_from_slice(s);
    }
    a
}

/// Where everything is, derived from `size_mult` and `rel_wr_sec_c` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// RPMB size in 128 KiB units.
    pub size_mult: u8,
    /// Reliable write sector count (512-byte sectors).
    pub rel_wr_sec_c: u8,
    /// Largest block count of one authenticated write: `2 * rel_wr_sec_c`.
    pub max_write_blocks: u16,
    /// Number of 256-byte blocks: `size_mult * 512`.
    pub capacity_blocks: u32,
    /// Offset of the journal region.
    pub journal_offset: u64,
    /// Length of the journal region.
    pub journal_len: u64,
    /// Offset of the data region.
    pub data_offset: u64,
    /// Length of the data region: `size_mult * 128 KiB`.
    pub data_len: u64,
    /// Total image length.
    pub total_len: u64,
}

impl Layout {
    /// The layout for these parameters (not validated).
    pub fn new(size_mult: u8, rel_wr_sec_c: u8) -> Layout {
        let max_write_blocks = 2 * u16::from(rel_wr_sec_c);
        let journal_len = round_up(
            (JOURNAL_HEADER_LEN + CHECKSUM_LEN) as u64
                + u64::from(max_write_blocks) * BLOCK_LEN as u64,
            REGION_ALIGN,
        );
        let data_offset = JOURNAL_OFFSET + journal_len;
        let data_len = u64::from(size_mult) * SIZE_UNIT;
        Layout {
            size_mult,
            rel_wr_sec_c,
            max_write_blocks,
            capacity_blocks: u32::from(size_mult) * (SIZE_UNIT / BLOCK_LEN as u64) as u32,
            journal_offset: JOURNAL_OFFSET,
            journal_len,
            data_offset,
            data_len,
            total_len: data_offset + data_len,
        }
    }

    /// Offset of data block `addr`.
    pub fn block_offset(&self, addr: u32) -> u64 {
        self.data_offset + u64::from(addr) * BLOCK_LEN as u64
    }
}

/// The immutable device configuration stored in the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// RPMB size in 128 KiB units (1..=128).
    pub size_mult: u8,
    /// Reliable write sector count (1..=255).
    pub rel_wr_sec_c: u8,
    /// The eMMC CID register.
    pub cid: [u8; 16],
}

/// Valid `size_mult` range.
pub const SIZE_MULT_RANGE: std::ops::RangeInclusive<u8> = 1..=128;
/// Valid `rel_wr_sec_c` range.
pub const REL_WR_SEC_C_RANGE: std::ops::RangeInclusive<u8> = 1..=255;

impl Superblock {
    /// Encodes the 128 defined bytes.
    pub fn encode(&self) -> [u8; SUPERBLOCK_LEN] {
        let l = Layout::new(self.size_mult, self.rel_wr_sec_c);
        let mut b = [0u8; SUPERBLOCK_LEN];
        put(&mut b, 0, &SUPERBLOCK_MAGIC);
        put(&mut b, 8, &FORMAT_VERSION.to_le_bytes());
        put(&mut b, 12, &(SUPERBLOCK_LEN as u32).to_le_bytes());
        b[16] = self.size_mult;
        b[17] = self.rel_wr_sec_c;
        put(&mut b, 20, &self.cid);
        put(&mut b, 40, &STATE_SLOT_OFFSETS[0].to_le_bytes());
        put(&mut b, 48, &STATE_SLOT_OFFSETS[1].to_le_bytes());
        put(&mut b, 56, &l.journal_offset.to_le_bytes());
        put(&mut b, 64, &l.journal_len.to_le_bytes());
        put(&mut b, 72, &l.data_offset.to_le_bytes());
        put(&mut b, 80, &l.data_len.to_le_bytes());
        put(&mut b, 88, &l.total_len.to_le_bytes());
        let sum = sha256(&b[..96]);
        put(&mut b, 96, &sum);
        b
    }

    /// Decodes and validates a superblock (strictly: every derived field
    /// must equal what the layout rules give).
    pub fn decode(b: &[u8], image: &str) -> Result<(Superblock, Layout), Error> {
        let b = b
            .get(..SUPERBLOCK_LEN)
            .ok_or_else(|| Error::corrupt(image, "superblock truncated"))?;
        if get::<8>(b, 0) != SUPERBLOCK_MAGIC {
            return Err(Error::corrupt(image, "not an rpmb-sim image (bad magic)"));
        }
        let version = le32(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                image: image.to_string(),
                version,
            });
        }
        let sum: [u8; 32] = get(b, 96);
        if sha256(b.get(..96).unwrap_or(&[])) != sum {
            return Err(Error::corrupt(image, "superblock checksum mismatch"));
        }
        if le32(b, 12) != SUPERBLOCK_LEN as u32 {
            return Err(Error::corrupt(image, "superblock length field"));
        }
        let sb = Superblock {
            size_mult: b.get(16).copied().unwrap_or(0),
            rel_wr_sec_c: b.get(17).copied().unwrap_or(0),
            cid: get(b, 20),
        };
        if !SIZE_MULT_RANGE.contains(&sb.size_mult) {
            return Err(Error::corrupt(image, "size_mult out of range"));
        }
        if !REL_WR_SEC_C_RANGE.contains(&sb.rel_wr_sec_c) {
            return Err(Error::corrupt(image, "rel_wr_sec_c out of range"));
        }
        if le16(b, 18) != 0 || le32(b, 36) != 0 {
            return Err(Error::corrupt(image, "reserved superblock bytes not zero"));
        }
        let l = Layout::new(sb.size_mult, sb.rel_wr_sec_c);
        let fields = [
            (40, STATE_SLOT_OFFSETS[0]),
            (48, STATE_SLOT_OFFSETS[1]),
            (56, l.journal_offset),
            (64, l.journal_len),
            (72, l.data_offset),
            (80, l.data_len),
            (88, l.total_len),
        ];
        for (off, want) in fields {
            if le64(b, off) != want {
                return Err(Error::corrupt(
                    image,
                    format!(
                        "superblock layout field at byte {off} disagrees with the layout rules"
                    ),
                ));
            }
        }
        Ok((sb, l))
    }
}

/// The mutable device state: one state record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Commit sequence number; stored in slot `seq % 2`.
    pub seq: u64,
    /// Whether the authentication key is programmed.
    pub key_programmed: bool,
    /// The write counter.
    pub write_counter: u32,
    /// The authentication key (zero while not programmed).
    pub key: Zeroizing<[u8; KEY_LEN]>,
    /// Request type of the last committed write-type operation
    /// (`LAST_OP_NONE`, 0x0001 or 0x0003).
    pub last_op: u16,
    /// Its result code (without the counter-expired bit).
    pub last_result: u16,
    /// Its address (0x0003 only).
    pub last_address: u16,
}

impl State {
    /// The state of a freshly created image.
    pub fn initial() -> State {
        State {
            seq: 0,
            key_programmed: false,
            write_counter: 0,
            key: Zeroizing::new([0; KEY_LEN]),
            last_op: LAST_OP_NONE,
            last_result: 0,
            last_address: 0,
        }
    }

    /// Encodes the 96-byte record.
    pub fn encode(&self) -> Zeroizing<[u8; STATE_LEN]> {
        let mut b = Zeroizing::new([0u8; STATE_LEN]);
        put(&mut b[..], 0, &STATE_MAGIC);
        put(&mut b[..], 8, &self.seq.to_le_bytes());
        put(
            &mut b[..],
            16,
            &u32::from(self.key_programmed).to_le_bytes(),
        );
        put(&mut b[..], 20, &self.write_counter.to_le_bytes());
        put(&mut b[..], 24, &self.key[..]);
        put(&mut b[..], 56, &self.last_op.to_le_bytes());
        put(&mut b[..], 58, &self.last_result.to_le_bytes());
        put(&mut b[..], 60, &self.last_address.to_le_bytes());
        let sum = sha256(&b[..64]);
        put(&mut b[..], 64, &sum);
        b
    }

    /// Decodes a record; `None` if it is not a valid record.
    pub fn decode(b: &[u8]) -> Option<State> {
        let b = b.get(..STATE_LEN)?;
        if get::<8>(b, 0) != STATE_MAGIC {
            return None;
        }
        let sum: [u8; 32] = get(b, 64);
        if sha256(b.get(..64)?) != sum {
            return None;
        }
        let flags = le32(b, 16);
        if flags > 1 || le16(b, 62) != 0 {
            return None;
        }
        let last_op = le16(b, 56);
        if !matches!(last_op, LAST_OP_NONE | 0x0001 | 0x0003) {
            return None;
        }
        let key = Zeroizing::new(get::<KEY_LEN>(b, 24));
        Some(State {
            seq: le64(b, 8),
            key_programmed: flags == 1,
            write_counter: le32(b, 20),
            key,
            last_op,
            last_result: le16(b, 58),
            last_address: le16(b, 60),
        })
    }

    /// The slot a record with this sequence number lives in.
    pub fn slot_offset(seq: u64) -> u64 {
        STATE_SLOT_OFFSETS[(seq % 2) as usize]
    }
}

/// Encodes a journal record: header, `data` (whole blocks), checksum.
pub fn encode_journal(new_state: &State, address: u16, data: &[u8]) -> Zeroizing<Vec<u8>> {
    let blocks = (data.len() / BLOCK_LEN) as u16;
    let mut rec = Zeroizing::new(vec![0u8; JOURNAL_HEADER_LEN + data.len() + CHECKSUM_LEN]);
    let b: &mut [u8] = &mut rec;
    put(b, 0, &JOURNAL_MAGIC);
    put(b, 8, &new_state.seq.to_le_bytes());
    put(b, 16, &address.to_le_bytes());
    put(b, 18, &blocks.to_le_bytes());
    put(b, 24, &new_state.encode()[..]);
    put(b, JOURNAL_HEADER_LEN, data);
    let end = JOURNAL_HEADER_LEN + data.len();
    let sum = sha256(b.get(..end).unwrap_or(&[]));
    put(b, end, &sum);
    rec
}

/// The fixed part of a journal record, before the data is read.
#[derive(Clone, Copy, Debug)]
pub struct JournalHeader {
    /// Sequence number of the state the record commits.
    pub seq: u64,
    /// First block written.
    pub address: u16,
    /// Number of blocks.
    pub blocks: u16,
}

/// Parses a journal header; `None` if it cannot start a valid record for
/// this layout.
pub fn decode_journal_header(b: &[u8], layout: &Layout) -> Option<JournalHeader> {
    let b = b.get(..JOURNAL_HEADER_LEN)?;
    if get::<8>(b, 0) != JOURNAL_MAGIC {
        return None;
    }
    let h = JournalHeader {
        seq: le64(b, 8),
        address: le16(b, 16),
        blocks: le16(b, 18),
    };
    if h.blocks == 0 || h.blocks > layout.max_write_blocks {
        return None;
    }
    if u32::from(h.address) + u32::from(h.blocks) > layout.capacity_blocks {
        return None;
    }
    Some(h)
}

/// Verifies a complete journal record (header + data + checksum) and
/// returns the state it commits.
pub fn verify_journal(record: &[u8], h: &JournalHeader) -> Option<State> {
    let end = JOURNAL_HEADER_LEN + usize::from(h.blocks) * BLOCK_LEN;
    let sum: [u8; 32] = get(record, end);
    if record.len() != end + CHECKSUM_LEN || sha256(record.get(..end)?) != sum {
        return None;
    }
    if le32(record, 20) != 0 || record.get(120..128)?.iter().any(|&x| x != 0) {
        return None;
    }
    let st = State::decode(record.get(24..24 + STATE_LEN)?)?;
    if st.seq != h.seq || !st.key_programmed {
        return None;
    }
    Some(st)
}
