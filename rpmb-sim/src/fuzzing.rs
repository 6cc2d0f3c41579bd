//! Entry points for the cargo-fuzz targets in `rpmb-sim/fuzz_targets/`.
//!
//! They live in the library (behind no feature) so that they build, and are
//! smoke-tested, with the crate. Both run on an in-memory image. Unlike the
//! rest of the crate they panic on purpose: an `assert!` here is the fuzz
//! oracle (a property that failed), everything else must never panic.

use crate::client;
use crate::frame::{Frame, FRAME_LEN, REQ_READ_COUNTER, REQ_READ_DATA, REQ_WRITE_DATA};
use crate::serve::{expected_responses, group_len};
use crate::storage::MemStorage;
use crate::{CreateOptions, RpmbDevice, DEFAULT_CID};

/// The key the harness programs (when asked to) and MACs writes with.
pub const FUZZ_KEY: [u8; 32] = [0x5a; 32];

/// Largest read block count the harness lets through (keeps runs fast).
const MAX_READ_BLOCKS: u16 = 600;

fn take_frame(rest: &mut &[u8]) -> Frame {
    let take = rest.len().min(FRAME_LEN);
    let mut f = Frame::zeroed();
    if let (Some(dst), Some(src)) = (f.0.get_mut(..take), rest.get(..take)) {
        dst.copy_from_slice(src);
    }
    *rest = rest.get(take..).unwrap_or(&[]);
    f
}

/// Feeds arbitrary bytes to a fresh in-memory device as frame transactions.
///
/// Byte 0: bit 0 programs [`FUZZ_KEY`] first; bits 4..5 choose
/// `rel_wr_sec_c` 1..=4. Then repeated transactions: one control byte
/// (bits 0..2: frames - 1; bit 3: set write frames' counter to the
/// device's counter; bit 4: make the frames of each write request agree on
/// type, block count, address and counter, and MAC them with [`FUZZ_KEY`];
/// bit 5: use
/// [`RpmbDevice::process_rpmb_request`] instead of [`RpmbDevice::process`])
/// followed by up to 8 frames of 512 bytes (the last may be short, zero
/// padded).
///
/// Checked properties: no panic; `process` never fails on an in-memory
/// image and returns exactly the number of frames the stream rules give;
/// reopening the image afterwards yields the same key state, write counter
/// and used-block count as the live device.
pub fn process_arbitrary(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let opts = CreateOptions {
        size_mult: 1,
        cid: DEFAULT_CID,
        rel_wr_sec_c: 1 + (flags >> 4) % 4,
    };
    let Ok((mut dev, mem)) = RpmbDevice::new_in_memory(&opts) else {
        return;
    };
    dev.set_durable(false);
    if flags & 1 != 0 {
        assert!(client::program_key(&mut dev, &FUZZ_KEY).is_ok());
    }
    let mut transactions = 0;
    while let Some((&ctl, tail)) = rest.split_first() {
        rest = tail;
        transactions += 1;
        if transactions > 64 {
            break;
        }
        let nframes = usize::from(ctl & 0x07) + 1;
        let mut frames = Vec::with_capacity(nframes);
        while frames.len() < nframes && !rest.is_empty() {
            frames.push(take_frame(&mut rest));
        }
        if frames.is_empty() {
            frames.push(Frame::zeroed());
        }
        let counter = dev.info().write_counter;
        for f in frames.iter_mut() {
            if f.req_resp() == REQ_READ_DATA && f.block_count() > MAX_READ_BLOCKS {
                f.set_block_count(f.block_count() % MAX_READ_BLOCKS);
            }
            if ctl & 0x08 != 0 && f.req_resp() == REQ_WRITE_DATA {
                f.set_write_counter(counter);
            }
        }
        if ctl & 0x10 != 0 {
            let mut i = 0;
            while let Some(first) = frames.get(i) {
                let n = group_len(first).min(frames.len() - i);
                if first.req_resp() == REQ_WRITE_DATA {
                    let (bc, addr, ctr) =
                        (first.block_count(), first.address(), first.write_counter());
                    if let Some(group) = frames.get_mut(i..i + n) {
                        for f in group.iter_mut() {
                            f.set_req_resp(REQ_WRITE_DATA);
                            f.set_block_count(bc);
                            f.set_address(addr);
                            f.set_write_counter(ctr);
                        }
                        let mac = client::mac(&FUZZ_KEY, group);
                        if let Some(last) = group.last_mut() {
                            last.set_key_mac(&mac);
                        }
                    }
                }
                i += n;
            }
        }
        if ctl & 0x20 != 0 {
            let n = frames
                .first()
                .map_or(1, |f| usize::from(f.block_count()).max(1));
            // Rejected shapes are errors by design; nothing else may fail.
            let _ = dev.process_rpmb_request(&frames, n);
            assert!(!dev.is_poisoned());
        } else {
            let expected = expected_responses(&frames);
            let got = dev.process(&frames);
            assert!(matches!(&got, Ok(r) if r.len() == expected));
        }
    }
    let info = dev.info();
    drop(dev);
    let reopened = RpmbDevice::open_storage(Box::new(MemStorage::new(mem.image())));
    assert!(reopened.is_ok());
    if let Ok(re) = reopened {
        let ri = re.info();
        assert_eq!(ri.key_programmed, info.key_programmed);
        assert_eq!(ri.write_counter, info.write_counter);
        assert_eq!(ri.used_blocks, info.used_blocks);
    }
}

/// Opens an image whose metadata (superblock, state slots, journal) has
/// been patched with arbitrary bytes: the recovery code must reject it with
/// an error or open it; an image that opens must serve a counter read and a
/// one-block read without panicking.
///
/// Input: repeated patches `[offset_hi, offset_lo, len, bytes...]` applied
/// to a valid image that has a programmed key and one committed write; the
/// offset is taken modulo the metadata size (superblock through journal).
pub fn open_arbitrary_image(data: &[u8]) {
    let opts = CreateOptions {
        size_mult: 1,
        cid: DEFAULT_CID,
        rel_wr_sec_c: 2,
    };
    let Ok((mut dev, mem)) = RpmbDevice::new_in_memory(&opts) else {
        return;
    };
    dev.set_durable(false);
    let _ = client::program_key(&mut dev, &FUZZ_KEY);
    let _ = client::write_blocks_at_counter(&mut dev, &FUZZ_KEY, 3, 0, &[[7u8; 256], [9u8; 256]]);
    let meta_len = dev.layout().data_offset as usize;
    drop(dev);
    let mut image = mem.image();
    let mut rest = data;
    while rest.len() >= 3 {
        let off = usize::from(u16::from_be_bytes([rest[0], rest[1]])) * 4 % meta_len.max(1);
        let len = usize::from(rest[2]);
        rest = &rest[3..];
        let n = len.min(rest.len());
        if let (Some(dst), Some(src)) = (image.get_mut(off..off + n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        rest = rest.get(n..).unwrap_or(&[]);
    }
    if let Ok(mut dev) = RpmbDevice::open_storage(Box::new(MemStorage::new(image))) {
        dev.set_durable(false);
        let mut read = Frame::new_request(REQ_READ_DATA);
        read.set_address(3);
        let out = dev.process(&[Frame::new_request(REQ_READ_COUNTER), read]);
        assert!(matches!(out, Ok(r) if r.len() == 2));
    }
}
