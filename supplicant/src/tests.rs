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
    Supplicant {
        shm: FakeShm::default(),
        ta_dirs: ta_dir.into_iter().collect(),
        rpmb: Some(dev),
        stats: Stats::default(),
    }
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
    let req_id = alloc(s, req.len());
    s.shm.write(req_id, 0, &req).unwrap();
    let resp_id = alloc(s, resp_len.max(1));
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
