use std::collections::HashMap;

use rpmb_sim::frame::{REQ_READ_COUNTER, REQ_READ_DATA};
use rpmb_sim::{client, CreateOptions, Frame, RpmbDevice, FRAME_LEN};

use super::*;

#[derive(Default)]
struct FakeShm {
    next: u64,
    regions: HashMap<u64, Vec<u8>>,
}

impl SharedMemory for FakeShm {
    fn alloc(&mut self, size: usize) -> Result<u64, u32> {
        self.next += 1;
        self.regions.insert(self.next, vec![0; size]);
        Ok(self.next)
    }
    fn free(&mut self, id: u64) -> Result<(), u32> {
        self.regions
            .remove(&id)
            .map(drop)
            .ok_or(teec::ERROR_BAD_PARAMETERS)
    }
    fn read(&self, id: u64, offset: usize, out: &mut [u8]) -> Result<(), u32> {
        let r = self.regions.get(&id).ok_or(teec::ERROR_BAD_PARAMETERS)?;
        out.copy_from_slice(
            r.get(offset..offset + out.len())
                .ok_or(teec::ERROR_BAD_PARAMETERS)?,
        );
        Ok(())
    }
    fn fits(&self, id: u64, offset: usize, len: usize) -> bool {
        self.regions
            .get(&id)
            .is_some_and(|r| offset.checked_add(len).is_some_and(|end| end <= r.len()))
    }

    fn write(&mut self, id: u64, offset: usize, data: &[u8]) -> Result<(), u32> {
        let r = self
            .regions
            .get_mut(&id)
            .ok_or(teec::ERROR_BAD_PARAMETERS)?;
        r.get_mut(offset..offset + data.len())
            .ok_or(teec::ERROR_BAD_PARAMETERS)?
            .copy_from_slice(data);
        Ok(())
    }
}

fn supplicant(ta_dir: Option<PathBuf>) -> Supplicant<FakeShm> {
    let (dev, _mem) = RpmbDevice::new_in_memory(&CreateOptions::default()).unwrap();
    Supplicant::new(FakeShm::default(), ta_dir.into_iter().collect(), Some(dev))
}

fn value(a: u64, b: u64) -> Param {
    Param {
        attr: attr::VALUE_INOUT,
        a,
        b,
        c: 0,
    }
}

fn memref(kind: u64, id: u64, size: usize) -> Param {
    Param {
        attr: kind,
        a: 0,
        b: size as u64,
        c: id,
    }
}

fn alloc(s: &mut Supplicant<FakeShm>, size: usize) -> u64 {
    let mut p = [value(0, size as u64)];
    assert_eq!(s.handle(func::SHM_ALLOC, &mut p), teec::SUCCESS);
    p[0].c
}

#[test]
fn uuid_text_form() {
    let o = [
        0x31, 0x3c, 0x2b, 0xc6, 0x6a, 0xdc, 0x4e, 0xb7, 0x89, 0x2e, 0x1a, 0x75, 0xe6, 0x1b, 0x45,
        0xdf,
    ];
    assert_eq!(uuid_string(&o), "313c2bc6-6adc-4eb7-892e-1a75e61b45df");
}

#[test]
fn load_ta_two_steps_like_optee() {
    let dir = std::env::temp_dir().join(format!("hakeys-supp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uuid = [
        0x31u8, 0x3c, 0x2b, 0xc6, 0x6a, 0xdc, 0x4e, 0xb7, 0x89, 0x2e, 0x1a, 0x75, 0xe6, 0x1b, 0x45,
        0xdf,
    ];
    std::fs::write(
        dir.join(format!("{}.ta", uuid_string(&uuid))),
        b"signed TA bytes",
    )
    .unwrap();
    let mut s = supplicant(Some(dir.clone()));
    let a = u64::from_le_bytes(uuid[..8].try_into().unwrap());
    let b = u64::from_le_bytes(uuid[8..].try_into().unwrap());
    // 1. No buffer: the size comes back.
    let mut p = [
        value(a, b),
        Param {
            attr: attr::MEMREF_OUTPUT,
            a: 0,
            b: 0,
            c: u64::MAX,
        },
    ];
    assert_eq!(s.handle(func::LOAD_TA, &mut p), teec::SUCCESS);
    assert_eq!(p[1].b, 15);
    // 2. With a buffer of that size: the bytes.
    let id = alloc(&mut s, 15);
    let mut p = [value(a, b), memref(attr::MEMREF_OUTPUT, id, 15)];
    assert_eq!(s.handle(func::LOAD_TA, &mut p), teec::SUCCESS);
    let mut got = [0u8; 15];
    s.shm.read(id, 0, &mut got).unwrap();
    assert_eq!(&got, b"signed TA bytes");
    assert_eq!(s.stats.tas_loaded, 1);
    // An unknown TA is "item not found".
    let mut p = [value(1, 2), memref(attr::MEMREF_OUTPUT, id, 15)];
    assert_eq!(s.handle(func::LOAD_TA, &mut p), teec::ERROR_ITEM_NOT_FOUND);
    std::fs::remove_dir_all(dir).unwrap();
}

fn rpmb_call(
    s: &mut Supplicant<FakeShm>,
    cmd: u16,
    frames: &[Frame],
    resp_len: usize,
) -> (u32, Vec<u8>) {
    let mut req = Vec::new();
    req.extend_from_slice(&cmd.to_ne_bytes());
    req.extend_from_slice(&0u16.to_ne_bytes());
    req.extend_from_slice(&(frames.len() as u16).to_ne_bytes());
    for f in frames {
        req.extend_from_slice(f.as_bytes());
    }
    // Straight from the fake (not SHM_ALLOC), so that it also works after a
    // power cut, when the supplicant serves nothing.
    let req_id = s.shm.alloc(req.len()).unwrap();
    s.shm.write(req_id, 0, &req).unwrap();
    let resp_id = s.shm.alloc(resp_len.max(1)).unwrap();
    let mut p = [
        memref(attr::MEMREF_INPUT, req_id, req.len()),
        memref(attr::MEMREF_OUTPUT, resp_id, resp_len),
    ];
    let ret = s.handle(func::RPMB, &mut p);
    let mut out = vec![0u8; resp_len];
    s.shm.read(resp_id, 0, &mut out).unwrap();
    (ret, out)
}

#[test]
fn rpmb_dev_info_and_frames_reach_the_device() {
    let mut s = supplicant(None);
    let (ret, info) = rpmb_call(&mut s, 1, &[], 19);
    assert_eq!(ret, teec::SUCCESS);
    let dev = s.rpmb.as_ref().unwrap().info();
    assert_eq!(&info[..16], &dev.cid);
    assert_eq!(
        (info[16], info[17], info[18]),
        (dev.size_mult, dev.rel_wr_sec_c, 0)
    );

    // Key not programmed: a counter read answers 0x0007 in the frame.
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(&[7; 16]);
    let (ret, resp) = rpmb_call(&mut s, 0, &[req], FRAME_LEN);
    assert_eq!(ret, teec::SUCCESS);
    let f = Frame::from_slice(&resp).unwrap();
    assert_eq!(f.result(), 0x0007);

    // Program the key and write through the device directly, then read
    // two blocks through the supplicant as OP-TEE does (count from the
    // response size) and check the device's MAC over them.
    let key = [0x42u8; 32];
    let dev = s.rpmb.as_mut().unwrap();
    client::program_key(dev, &key).unwrap();
    client::write_blocks(dev, &key, 3, &[[0xab; 256], [0xcd; 256]]).unwrap();
    let mut req = Frame::new_request(REQ_READ_DATA);
    req.set_address(3);
    req.set_nonce(&[9; 16]);
    let (ret, resp) = rpmb_call(&mut s, 0, &[req], 2 * FRAME_LEN);
    assert_eq!(ret, teec::SUCCESS);
    let frames: Vec<Frame> = resp
        .chunks_exact(FRAME_LEN)
        .filter_map(Frame::from_slice)
        .collect();
    assert_eq!(frames[0].data(), [0xab; 256]);
    assert_eq!(frames[1].data(), [0xcd; 256]);
    assert_eq!(client::mac(&key, &frames), frames[1].key_mac());
    assert_eq!(s.stats.rpmb_transactions, 2);
}

#[test]
fn malformed_requests_are_refused_not_panicked_on() {
    let mut s = supplicant(None);
    let id = alloc(&mut s, 4096);
    // Wrong parameter counts and types.
    assert_eq!(s.handle(func::LOAD_TA, &mut []), teec::ERROR_BAD_PARAMETERS);
    assert_eq!(
        s.handle(func::SHM_ALLOC, &mut [memref(attr::MEMREF_INPUT, id, 1)]),
        teec::ERROR_BAD_PARAMETERS
    );
    assert_eq!(
        s.handle(func::SHM_FREE, &mut [value(0, 999)]),
        teec::ERROR_BAD_PARAMETERS
    );
    // RPMB: short header, ragged frames, out-of-range memrefs, unknown cmd.
    let mut p = [
        memref(attr::MEMREF_INPUT, id, 3),
        memref(attr::MEMREF_OUTPUT, id, 512),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    let mut p = [
        memref(attr::MEMREF_INPUT, id, 6 + 100),
        memref(attr::MEMREF_OUTPUT, id, 512),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    let mut p = [
        memref(attr::MEMREF_INPUT, id, 6 + 512),
        memref(attr::MEMREF_OUTPUT, id, 100_000),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    let mut p = [
        memref(attr::MEMREF_INPUT, 77, 6 + 512),
        memref(attr::MEMREF_OUTPUT, id, 512),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    s.shm.write(id, 0, &[9, 0, 0, 0, 0, 0]).unwrap();
    let mut p = [
        memref(attr::MEMREF_INPUT, id, 6 + 512),
        memref(attr::MEMREF_OUTPUT, id, 512),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    // Unimplemented services.
    assert_eq!(s.handle(func::FS, &mut []), teec::ERROR_NOT_SUPPORTED);
    assert_eq!(s.handle(10, &mut []), teec::ERROR_NOT_SUPPORTED);
    // Free works once.
    assert_eq!(s.handle(func::SHM_FREE, &mut [value(0, id)]), teec::SUCCESS);
    assert_eq!(
        s.handle(func::SHM_FREE, &mut [value(0, id)]),
        teec::ERROR_BAD_PARAMETERS
    );
}

/// Records the cut instead of powering off.
#[derive(Clone, Default)]
struct Recorder(std::rc::Rc<std::cell::RefCell<Vec<(u64, CutMode)>>>);

impl Halt for Recorder {
    fn halt(&mut self, write: u64, mode: CutMode) {
        self.0.borrow_mut().push((write, mode));
    }
}

fn armed(at_write: u64, mode: CutMode) -> (Supplicant<FakeShm>, Recorder) {
    let mut s = supplicant(None);
    let rec = Recorder::default();
    s.cut = Some(PowerCut {
        at_write,
        mode,
        halt: Box::new(rec.clone()),
    });
    (s, rec)
}

const KEY: [u8; 32] = [0x5a; 32];

/// One authenticated write of `fill` at `address` through the supplicant,
/// as OP-TEE sends it (the write frame alone, one response frame).
fn write_through(s: &mut Supplicant<FakeShm>, address: u16, fill: u8) -> (u32, Vec<u8>) {
    let counter = s.rpmb.as_ref().unwrap().info().write_counter;
    let frames = client::build_write_frames(&KEY, address, counter, &[[fill; 256]]);
    rpmb_call(s, 0, &frames, FRAME_LEN)
}

/// Key programmed, write 1 (0x11 at block 5) through, write 2 (0x22 at
/// block 6) cut in `mode`: no response reaches OP-TEE and the machine
/// stops.
fn cut_at_write_2(mode: CutMode) -> (Supplicant<FakeShm>, Recorder) {
    let (mut s, rec) = armed(2, mode);
    client::program_key(s.rpmb.as_mut().unwrap(), &KEY).unwrap();
    assert_eq!(write_through(&mut s, 5, 0x11).0, teec::SUCCESS);
    let (ret, resp) = write_through(&mut s, 6, 0x22);
    assert_ne!(ret, teec::SUCCESS);
    assert_eq!(resp, vec![0u8; FRAME_LEN], "no response reaches OP-TEE");
    assert_eq!(*rec.0.borrow(), vec![(2, mode)]);
    assert!(s.halted);
    (s, rec)
}

fn device_block(s: &mut Supplicant<FakeShm>, address: u16) -> [u8; 256] {
    let dev = s.rpmb.as_mut().unwrap();
    client::read_blocks(dev, &KEY, address, 1, &[1; 16]).unwrap()[0]
}

/// Reads, counter reads and key programming are not counted; the cut
/// fires at the N-th authenticated write, once.
#[test]
fn power_cut_counts_only_authenticated_writes() {
    for mode in [CutMode::Before, CutMode::After] {
        let (mut s, rec) = armed(3, mode);
        // Key programming goes through the supplicant, uncounted.
        let mut pk = Frame::new_request(rpmb_sim::frame::REQ_PROGRAM_KEY);
        pk.set_key_mac(&KEY);
        assert_eq!(rpmb_call(&mut s, 0, &[pk], FRAME_LEN).0, teec::SUCCESS);
        let mut rc = Frame::new_request(REQ_READ_COUNTER);
        rc.set_nonce(&[3; 16]);
        assert_eq!(rpmb_call(&mut s, 0, &[rc], FRAME_LEN).0, teec::SUCCESS);
        assert_eq!(rpmb_call(&mut s, 1, &[], 19).0, teec::SUCCESS);
        for (i, fill) in [(1u64, 0x11u8), (2, 0x22)] {
            let (ret, resp) = write_through(&mut s, 10 + i as u16, fill);
            assert_eq!(ret, teec::SUCCESS);
            let f = Frame::from_slice(&resp).unwrap();
            assert_eq!((f.result(), f.write_counter()), (0, i as u32));
        }
        let mut rd = Frame::new_request(REQ_READ_DATA);
        rd.set_address(11);
        rd.set_nonce(&[4; 16]);
        assert_eq!(rpmb_call(&mut s, 0, &[rd], FRAME_LEN).0, teec::SUCCESS);
        assert!(rec.0.borrow().is_empty(), "no cut before write 3");
        assert!(!s.halted);
        assert_eq!(s.stats.rpmb_write_requests, 2);
    }
}

/// `before`: the device never sees write N; the response is never written
/// and nothing after the cut reaches the device.
#[test]
fn power_cut_before_the_device_applies_the_write() {
    let (mut s, rec) = cut_at_write_2(CutMode::Before);
    // The device: write 1 applied, write 2 not.
    assert_eq!(s.rpmb.as_ref().unwrap().info().write_counter, 1);
    assert_eq!(device_block(&mut s, 5), [0x11; 256]);
    assert_eq!(device_block(&mut s, 6), [0; 256]);
    // Halted: a retry of the same write (OP-TEE would retry) never arrives.
    let frames = client::build_write_frames(&KEY, 6, 1, &[[0x22; 256]]);
    assert_ne!(rpmb_call(&mut s, 0, &frames, FRAME_LEN).0, teec::SUCCESS);
    assert_eq!(s.rpmb.as_ref().unwrap().info().write_counter, 1);
    assert_eq!(rec.0.borrow().len(), 1, "the machine stops once");
    assert_eq!(s.stats.rpmb_write_requests, 2);
}

/// `after`: the device applies and commits write N; the response never
/// reaches OP-TEE.
#[test]
fn power_cut_after_the_device_applied_the_write() {
    let (mut s, _) = cut_at_write_2(CutMode::After);
    assert_eq!(s.rpmb.as_ref().unwrap().info().write_counter, 2);
    assert_eq!(device_block(&mut s, 6), [0x22; 256]);
    // Nothing later reaches the device.
    let frames = client::build_write_frames(&KEY, 7, 2, &[[0x33; 256]]);
    assert_ne!(rpmb_call(&mut s, 0, &frames, FRAME_LEN).0, teec::SUCCESS);
    assert_eq!(s.rpmb.as_ref().unwrap().info().write_counter, 2);
}

/// `after` on a file image: the write is on disk when the machine stops
/// (a reopened image, as at the next boot, holds it).
#[test]
fn power_cut_after_is_durable_on_a_file_image() {
    let dir = std::env::temp_dir().join(format!("hakeys-supp-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("rpmb.img");
    RpmbDevice::create(&img, &CreateOptions::default()).unwrap();
    let mut s = supplicant(None);
    s.rpmb = Some(RpmbDevice::open(&img).unwrap());
    let rec = Recorder::default();
    s.cut = Some(PowerCut {
        at_write: 1,
        mode: CutMode::After,
        halt: Box::new(rec.clone()),
    });
    client::program_key(s.rpmb.as_mut().unwrap(), &KEY).unwrap();
    assert_ne!(write_through(&mut s, 9, 0x44).0, teec::SUCCESS);
    drop(s);
    let mut dev = RpmbDevice::open(&img).unwrap();
    assert_eq!(dev.info().write_counter, 1);
    assert_eq!(
        client::read_blocks(&mut dev, &KEY, 9, 1, &[2; 16]).unwrap()[0],
        [0x44; 256]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn power_cut_options_go_together_and_are_checked() {
    let none = || Box::new(Recorder::default()) as Box<dyn Halt>;
    assert!(PowerCut::from_args(None, None, none()).unwrap().is_none());
    let c = PowerCut::from_args(Some("7"), Some("after"), none())
        .unwrap()
        .unwrap();
    assert_eq!((c.at_write, c.mode), (7, CutMode::After));
    for (n, m) in [
        (Some("1"), None),
        (None, Some("before")),
        (Some("0"), Some("before")),
        (Some("x"), Some("before")),
        (Some("1"), Some("during")),
    ] {
        assert!(PowerCut::from_args(n, m, none()).is_err(), "{n:?} {m:?}");
    }
}

#[test]
fn rpmb_lengths_from_optee_are_checked_before_anything_is_sized_from_them() {
    let mut s = supplicant(None);
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(&[7; 16]);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0u16.to_ne_bytes());
    bytes.extend_from_slice(&0u16.to_ne_bytes());
    bytes.extend_from_slice(&1u16.to_ne_bytes());
    bytes.extend_from_slice(req.as_bytes());
    let req_id = s.shm.alloc(bytes.len()).unwrap();
    s.shm.write(req_id, 0, &bytes).unwrap();
    let resp_id = s.shm.alloc(FRAME_LEN).unwrap();
    // A response length far beyond the shared memory region (a multiple
    // of the frame size, so only the region check can refuse it): before
    // the check, the supplicant sized a buffer of this length first.
    let huge = (usize::MAX / 2 / FRAME_LEN) * FRAME_LEN;
    let mut p = [
        memref(attr::MEMREF_INPUT, req_id, bytes.len()),
        memref(attr::MEMREF_OUTPUT, resp_id, huge),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    // A request longer than its region is refused the same way.
    let mut p = [
        memref(attr::MEMREF_INPUT, req_id, bytes.len() + FRAME_LEN),
        memref(attr::MEMREF_OUTPUT, resp_id, FRAME_LEN),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::ERROR_BAD_PARAMETERS);
    // And the well-formed call still works.
    let mut p = [
        memref(attr::MEMREF_INPUT, req_id, bytes.len()),
        memref(attr::MEMREF_OUTPUT, resp_id, FRAME_LEN),
    ];
    assert_eq!(s.handle(func::RPMB, &mut p), teec::SUCCESS);
}
