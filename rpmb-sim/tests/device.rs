//! Device semantics: every result code, the response fields OP-TEE checks,
//! replay and tamper rejection with nothing changed, the request shapes.

mod common;

use common::{keyed_device, patch_write_counter, small_opts, Rng, KEY, OTHER_KEY};
use rpmb_sim::client::{self, build_write_frames, ClientError, Transport};
use rpmb_sim::frame::*;
use rpmb_sim::storage::{CrashSim, MemStorage};
use rpmb_sim::{Error, Frame, RpmbDevice};

fn result_read() -> Frame {
    Frame::new_request(REQ_RESULT_READ)
}

/// Sends a write (plus result read) and returns the single response.
fn write_raw(dev: &mut RpmbDevice, frames: Vec<Frame>) -> Frame {
    let mut req = frames;
    req.push(result_read());
    let resp = dev.process(&req).expect("process");
    assert_eq!(resp.len(), 1, "one response to a write + result read");
    resp.into_iter().next().unwrap()
}

fn counter_of(dev: &mut RpmbDevice) -> u32 {
    client::read_counter(dev, &KEY, &[9; 16]).expect("counter")
}

#[test]
fn ok_write_then_read_back_single_and_multi_block() {
    let (mut dev, _mem) = keyed_device(2); // 4 blocks per write
    let mut rng = Rng(1);
    let blocks: Vec<[u8; 256]> = (0..4).map(|_| rng.block()).collect();
    let c = client::write_blocks(&mut dev, &KEY, 100, &blocks).expect("write");
    assert_eq!(c, 1);
    let c = client::write_blocks(&mut dev, &KEY, 511, &blocks[..1]).expect("write last block");
    assert_eq!(c, 2);
    let got = client::read_blocks(&mut dev, &KEY, 100, 4, &[3; 16]).expect("read");
    assert_eq!(got, blocks);
    let got = client::read_blocks(&mut dev, &KEY, 511, 1, &[4; 16]).expect("read");
    assert_eq!(got[0], blocks[0]);
    let info = dev.info();
    assert_eq!(info.write_counter, 2);
    assert_eq!(info.used_blocks, 5);
    assert!(info.key_programmed);
}

#[test]
fn response_fields_are_what_optee_checks() {
    let (mut dev, _mem) = keyed_device(1);
    let nonce = [0xA5; 16];

    // Counter read: type, result, counter, nonce echoed, MAC.
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(&nonce);
    let r = dev.process(&[req]).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].req_resp(), RESP_READ_COUNTER);
    assert_eq!(r[0].result(), 0);
    assert_eq!(r[0].write_counter(), 0);
    assert_eq!(r[0].nonce(), nonce);
    assert_eq!(r[0].key_mac(), client::mac(&KEY, &r));

    // Write result: type, result, counter + 1, address, MAC.
    let frames = build_write_frames(&KEY, 7, 0, &[[1; 256], [2; 256]]);
    let resp = write_raw(&mut dev, frames);
    assert_eq!(resp.req_resp(), RESP_WRITE_DATA);
    assert_eq!(resp.result(), 0);
    assert_eq!(resp.write_counter(), 1);
    assert_eq!(resp.address(), 7);
    assert_eq!(
        resp.key_mac(),
        client::mac(&KEY, std::slice::from_ref(&resp))
    );

    // Read of 3 blocks: each frame has type, address (start), block count,
    // nonce, result; the MAC over all three is in the last one.
    let mut req = Frame::new_request(REQ_READ_DATA);
    req.set_nonce(&nonce);
    req.set_address(6);
    req.set_block_count(3);
    let r = dev.process(&[req]).unwrap();
    assert_eq!(r.len(), 3);
    for f in &r {
        assert_eq!(f.req_resp(), RESP_READ_DATA);
        assert_eq!(f.address(), 6);
        assert_eq!(f.block_count(), 3);
        assert_eq!(f.nonce(), nonce);
        assert_eq!(f.result(), 0);
        assert_eq!(f.write_counter(), 0);
    }
    assert_eq!(r[0].data(), [0; 256]);
    assert_eq!(r[1].data(), [1; 256]);
    assert_eq!(r[2].data(), [2; 256]);
    assert_eq!(r[2].key_mac(), client::mac(&KEY, &r));
    assert_eq!(r[0].key_mac(), [0; 32]);
}

#[test]
fn result_ok_program_key_response() {
    let (mut dev, _mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    let mut req = Frame::new_request(REQ_PROGRAM_KEY);
    req.set_key_mac(&KEY);
    let r = dev.process(&[req, result_read()]).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].req_resp(), RESP_PROGRAM_KEY);
    assert_eq!(r[0].result(), ResultCode::Ok.as_u16());
    assert!(dev.info().key_programmed);
    // Program key alone yields no response frame (the host reads the result).
    let (mut dev2, _m) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    assert!(dev2
        .process(&[Frame::new_request(REQ_PROGRAM_KEY)])
        .unwrap()
        .is_empty());
}

#[test]
fn result_general_failure_cases() {
    let (mut dev, mem) = keyed_device(1); // at most 2 blocks
    let before = mem.image();

    // Block count 0.
    let mut f = build_write_frames(&KEY, 0, 0, &[[1; 256]]);
    f[0].set_block_count(0);
    let m = client::mac(&KEY, &f);
    f[0].set_key_mac(&m);
    assert_eq!(write_raw(&mut dev, f).result(), 0x0001);

    // Block count above 2 * rel_wr_sec_c.
    let f = build_write_frames(&KEY, 0, 0, &[[1; 256], [2; 256], [3; 256]]);
    assert_eq!(write_raw(&mut dev, f).result(), 0x0001);

    // Frames disagreeing on the address.
    let mut f = build_write_frames(&KEY, 0, 0, &[[1; 256], [2; 256]]);
    f[1].set_address(1);
    let m = client::mac(&KEY, &f);
    f[1].set_key_mac(&m);
    assert_eq!(write_raw(&mut dev, f).result(), 0x0001);

    // Unknown request type: one general-failure frame.
    let r = dev.process(&[Frame::new_request(0x0042)]).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].result(), 0x0001);
    assert_eq!(r[0].req_resp(), 0);

    // Nothing changed.
    assert_eq!(mem.image(), before);
    assert_eq!(counter_of(&mut dev), 0);

    // A result read on a fresh device (no write-type operation yet).
    let (mut fresh, _m) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    let r = fresh.process(&[result_read()]).unwrap();
    assert_eq!(r[0].result(), 0x0001);
}

#[test]
fn result_auth_failure_wrong_key_and_tampered_frame_change_nothing() {
    let (mut dev, mem) = keyed_device(1);
    client::write_blocks(&mut dev, &KEY, 3, &[[5; 256]]).unwrap();
    let before = mem.image();

    let f = build_write_frames(&OTHER_KEY, 3, 1, &[[6; 256]]);
    let r = write_raw(&mut dev, f);
    assert_eq!(r.result(), ResultCode::AuthFailure.as_u16());
    assert_eq!(r.req_resp(), RESP_WRITE_DATA);

    // Correct MAC, then a data byte of the first frame altered.
    let mut f = build_write_frames(&KEY, 3, 1, &[[6; 256], [7; 256]]);
    f[0].0[300] ^= 1;
    assert_eq!(write_raw(&mut dev, f).result(), 0x0002);

    assert_eq!(mem.image(), before, "image bytes unchanged");
    assert_eq!(counter_of(&mut dev), 1);
    let got = client::read_blocks(&mut dev, &KEY, 3, 1, &[0; 16]).unwrap();
    assert_eq!(got[0], [5; 256]);
}

#[test]
fn result_counter_failure_replay_and_future_counter_change_nothing() {
    let (mut dev, mem) = keyed_device(1);
    let first = build_write_frames(&KEY, 10, 0, &[[0xAA; 256]]);
    assert_eq!(write_raw(&mut dev, first.clone()).result(), 0);
    client::write_blocks(&mut dev, &KEY, 10, &[[0xBB; 256]]).unwrap();
    let before = mem.image();
    let info = dev.info();

    // Replay of the first (valid, MAC'd) write.
    let r = write_raw(&mut dev, first);
    assert_eq!(r.result(), ResultCode::CounterFailure.as_u16());
    assert_eq!(
        r.write_counter(),
        2,
        "the result read reports the current counter"
    );
    // A counter from the future.
    let r = write_raw(&mut dev, build_write_frames(&KEY, 10, 9, &[[0xCC; 256]]));
    assert_eq!(r.result(), 0x0003);

    assert_eq!(mem.image(), before);
    assert_eq!(dev.info(), info);
    let got = client::read_blocks(&mut dev, &KEY, 10, 1, &[0; 16]).unwrap();
    assert_eq!(got[0], [0xBB; 256]);
}

#[test]
fn result_address_failure_for_writes_and_reads() {
    let (mut dev, mem) = keyed_device(1); // 512 blocks
    let before = mem.image();
    let r = write_raw(
        &mut dev,
        build_write_frames(&KEY, 511, 0, &[[1; 256], [2; 256]]),
    );
    assert_eq!(r.result(), ResultCode::AddressFailure.as_u16());
    assert_eq!(r.address(), 511);
    let r = write_raw(&mut dev, build_write_frames(&KEY, 512, 0, &[[1; 256]]));
    assert_eq!(r.result(), 0x0004);
    let r = write_raw(&mut dev, build_write_frames(&KEY, 0xFFFF, 0, &[[1; 256]]));
    assert_eq!(r.result(), 0x0004);
    assert_eq!(mem.image(), before);
    assert_eq!(counter_of(&mut dev), 0);

    let err = client::read_blocks(&mut dev, &KEY, 510, 3, &[1; 16]).unwrap_err();
    assert_eq!(err.result_code(), Some(ResultCode::AddressFailure));
    // Even the failure response is complete and MAC'd.
    let mut req = Frame::new_request(REQ_READ_DATA);
    req.set_address(600);
    req.set_block_count(2);
    let r = dev.process(&[req]).unwrap();
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|f| f.result() == 0x0004 && f.data() == [0; 256]));
    assert_eq!(r[1].key_mac(), client::mac(&KEY, &r));
}

#[test]
fn result_write_failure_key_is_one_time_programmable() {
    let (mut dev, mem) = keyed_device(1);
    let before = mem.image();
    let mut req = Frame::new_request(REQ_PROGRAM_KEY);
    req.set_key_mac(&OTHER_KEY);
    let r = dev.process(&[req, result_read()]).unwrap();
    assert_eq!(r[0].req_resp(), RESP_PROGRAM_KEY);
    assert_eq!(r[0].result(), ResultCode::WriteFailure.as_u16());
    assert_eq!(mem.image(), before);
    // The old key still works, the new one does not.
    assert_eq!(counter_of(&mut dev), 0);
    assert!(matches!(
        client::read_counter(&mut dev, &OTHER_KEY, &[0; 16]),
        Err(ClientError::BadMac)
    ));
    assert!(matches!(
        client::program_key(&mut dev, &OTHER_KEY),
        Err(ClientError::Device { result: 0x0005 })
    ));
}

#[test]
fn result_read_failure_when_the_medium_cannot_be_read() {
    let (dev, mem) = keyed_device(1);
    drop(dev);
    let (sim, handle) = CrashSim::new(mem.image());
    let mut dev = RpmbDevice::open_storage(Box::new(sim)).unwrap();
    handle.set_fail_reads(true);
    let err = client::read_blocks(&mut dev, &KEY, 0, 2, &[1; 16]).unwrap_err();
    assert_eq!(err.result_code(), Some(ResultCode::ReadFailure));
    handle.set_fail_reads(false);
    assert!(client::read_blocks(&mut dev, &KEY, 0, 2, &[1; 16]).is_ok());
}

#[test]
fn result_key_not_programmed_for_everything_but_key_programming() {
    let (mut dev, mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    let before = mem.image();
    let nonce = [7; 16];

    // Counter read: 0x0007 (this is how OP-TEE learns it must program the key).
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(&nonce);
    let r = dev.process(&[req]).unwrap();
    assert_eq!(r[0].result(), 0x0007);
    assert_eq!(r[0].req_resp(), RESP_READ_COUNTER);
    assert_eq!(r[0].nonce(), nonce);
    assert!(matches!(
        client::read_counter(&mut dev, &KEY, &nonce),
        Err(ClientError::Device { result: 0x0007 })
    ));

    // Write.
    let r = write_raw(&mut dev, build_write_frames(&KEY, 0, 0, &[[1; 256]]));
    assert_eq!(r.result(), 0x0007);
    assert_eq!(r.req_resp(), RESP_WRITE_DATA);

    // Read.
    let err = client::read_blocks(&mut dev, &KEY, 0, 2, &nonce).unwrap_err();
    assert_eq!(err.result_code(), Some(ResultCode::KeyNotProgrammed));

    assert_eq!(mem.image(), before);
    // And programming works.
    client::program_key(&mut dev, &KEY).unwrap();
    assert_eq!(counter_of(&mut dev), 0);
}

#[test]
fn result_counter_expired_bit() {
    let (dev, mem) = keyed_device(1);
    drop(dev);
    let mut image = mem.image();
    patch_write_counter(&mut image, 0xFFFF_FFFE);
    let mem = MemStorage::new(image);
    let mut dev = RpmbDevice::open_storage(Box::new(mem.clone())).unwrap();
    assert_eq!(counter_of(&mut dev), 0xFFFF_FFFE);

    // The last possible write succeeds and reports the expired bit.
    let r = write_raw(
        &mut dev,
        build_write_frames(&KEY, 1, 0xFFFF_FFFE, &[[3; 256]]),
    );
    assert_eq!(r.result(), 0x0080, "OK with the counter expired");
    assert_eq!(r.write_counter(), 0xFFFF_FFFF);
    assert!(dev.info().counter_expired);

    // From now on writes fail with write failure + expired, changing nothing.
    let before = mem.image();
    let r = write_raw(
        &mut dev,
        build_write_frames(&KEY, 1, 0xFFFF_FFFF, &[[4; 256]]),
    );
    assert_eq!(r.result(), 0x0085);
    assert_eq!(mem.image(), before);
    assert!(matches!(
        client::write_blocks(&mut dev, &KEY, 1, &[[4; 256]]),
        Err(ClientError::Device { result: 0x0085 })
    ));

    // Reads and counter reads still work and carry the bit.
    let mut req = Frame::new_request(REQ_READ_COUNTER);
    req.set_nonce(&[1; 16]);
    assert_eq!(dev.process(&[req]).unwrap()[0].result(), 0x0080);
    assert_eq!(counter_of(&mut dev), 0xFFFF_FFFF);
    let got = client::read_blocks(&mut dev, &KEY, 1, 1, &[2; 16]).unwrap();
    assert_eq!(got[0], [3; 256]);
}

#[test]
fn one_process_call_can_carry_a_whole_session() {
    let (mut dev, _mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    let mut prog = Frame::new_request(REQ_PROGRAM_KEY);
    prog.set_key_mac(&KEY);
    let mut ctr = Frame::new_request(REQ_READ_COUNTER);
    ctr.set_nonce(&[1; 16]);
    let mut req = vec![prog, result_read(), ctr];
    req.extend(build_write_frames(&KEY, 4, 0, &[[8; 256], [9; 256]]));
    req.push(result_read());
    let mut rd = Frame::new_request(REQ_READ_DATA);
    rd.set_address(4);
    rd.set_block_count(2);
    req.push(rd);
    assert_eq!(rpmb_sim::serve::expected_responses(&req), 5);
    let r = dev.process(&req).unwrap();
    let types: Vec<u16> = r.iter().map(Frame::req_resp).collect();
    assert_eq!(types, [0x0100, 0x0200, 0x0300, 0x0400, 0x0400]);
    assert!(r.iter().all(|f| f.result() == 0));
    assert_eq!(r[4].data(), [9; 256]);
}

#[test]
fn optee_shaped_requests() {
    let (mut dev, _mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    // Key programming: one frame, no result-read frame, one response frame.
    let mut prog = Frame::new_request(REQ_PROGRAM_KEY);
    prog.set_key_mac(&KEY);
    let r = dev.process_rpmb_request(&[prog], 1).unwrap();
    assert_eq!((r.len(), r[0].req_resp(), r[0].result()), (1, 0x0100, 0));
    // Write.
    let r = dev
        .process_rpmb_request(&build_write_frames(&KEY, 2, 0, &[[1; 256], [2; 256]]), 1)
        .unwrap();
    assert_eq!(
        (r[0].req_resp(), r[0].result(), r[0].write_counter()),
        (0x0300, 0, 1)
    );
    // Read as OP-TEE sends it: block count 0 in the frame, count from the buffer.
    let mut rd = Frame::new_request(REQ_READ_DATA);
    rd.set_address(2);
    rd.set_nonce(&[5; 16]);
    let r = dev.process_rpmb_request(&[rd.clone()], 2).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].block_count(), 2);
    assert_eq!(r[1].data(), [2; 256]);
    assert_eq!(r[1].key_mac(), client::mac(&KEY, &r));
    // Shapes tee-supplicant rejects.
    assert!(matches!(
        dev.process_rpmb_request(&[rd.clone()], 0),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        dev.process_rpmb_request(&[rd, Frame::new_request(REQ_READ_COUNTER)], 1),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        dev.process_rpmb_request(&[Frame::new_request(REQ_READ_COUNTER)], 2),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        dev.process_rpmb_request(&[], 1),
        Err(Error::Protocol(_))
    ));
    assert!(matches!(
        dev.process_rpmb_request(&[Frame::new_request(9)], 1),
        Err(Error::Protocol(_))
    ));
    assert!(!dev.is_poisoned());
}

/// A transport that lets a test alter responses in flight.
struct Tamper<'a> {
    dev: &'a mut RpmbDevice,
    f: fn(&mut Vec<Frame>),
}

impl Transport for Tamper<'_> {
    fn transact(&mut self, request: &[Frame]) -> Result<Vec<Frame>, Error> {
        let mut r = self.dev.process(request)?;
        (self.f)(&mut r);
        Ok(r)
    }
}

struct Broken;
impl Transport for Broken {
    fn transact(&mut self, _request: &[Frame]) -> Result<Vec<Frame>, Error> {
        Err(Error::Protocol("link down".into()))
    }
}

#[test]
fn client_distinguishes_every_failure() {
    let (mut dev, _mem) = keyed_device(1);
    client::write_blocks(&mut dev, &KEY, 0, &[[1; 256]]).unwrap();

    // A response with a flipped bit: in the MAC'd data, in the nonce.
    type Case = (fn(&mut Vec<Frame>), fn(&ClientError) -> bool);
    let tampers: [Case; 2] = [
        (|r| r[0].0[300] ^= 1, |e| matches!(e, ClientError::BadMac)),
        (
            |r| r[0].0[OFF_NONCE] ^= 1,
            |e| matches!(e, ClientError::NonceMismatch),
        ),
    ];
    for (f, expected) in tampers {
        let mut t = Tamper { dev: &mut dev, f };
        let e = client::read_blocks(&mut t, &KEY, 0, 1, &[1; 16]).unwrap_err();
        assert!(expected(&e), "{e:?}");
        let e = client::read_counter(&mut t, &KEY, &[1; 16]).unwrap_err();
        assert!(expected(&e), "{e:?}");
    }
    let mut t = Tamper {
        dev: &mut dev,
        f: |r| r.clear(),
    };
    assert!(matches!(
        client::read_counter(&mut t, &KEY, &[1; 16]),
        Err(ClientError::UnexpectedResponse(_))
    ));
    assert!(matches!(
        client::read_counter(&mut Broken, &KEY, &[1; 16]),
        Err(ClientError::Transport(_))
    ));
    let e = client::write_blocks_at_counter(&mut dev, &KEY, 0, 0, &[[1; 256]]).unwrap_err();
    assert!(matches!(e, ClientError::Device { result: 0x0003 }));
    assert!(e.to_string().contains("counter failure"));
}

#[test]
fn frame_fields_sit_at_the_jedec_offsets() {
    let mut f = Frame::new_request(0x0102);
    f.set_key_mac(&[0xAB; 32]);
    f.set_data(&[0xCD; 256]);
    f.set_nonce(&[0xEF; 16]);
    f.set_write_counter(0x0102_0304);
    f.set_address(0x0506);
    f.set_block_count(0x0708);
    f.set_result(0x090A);
    let b = f.as_bytes();
    assert!(b[..196].iter().all(|&x| x == 0));
    assert!(b[196..228].iter().all(|&x| x == 0xAB));
    assert!(b[228..484].iter().all(|&x| x == 0xCD));
    assert!(b[484..500].iter().all(|&x| x == 0xEF));
    assert_eq!(&b[500..512], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x01, 0x02]);
    assert_eq!(f.mac_input(), &b[228..512]);
    assert!(Frame::from_slice(&[0; 511]).is_none());
    let dbg = format!("{f:?}");
    assert!(
        dbg.contains("req_resp") && !dbg.contains("key") && !dbg.contains("data"),
        "{dbg}"
    );
}

#[test]
fn state_survives_reopen_and_result_register_is_persisted_for_commits() {
    let dir = std::env::temp_dir().join(format!("rpmb-sim-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.img");
    let _ = std::fs::remove_file(&path);
    RpmbDevice::create(&path, &small_opts(1)).unwrap();
    {
        let mut dev = RpmbDevice::open(&path).unwrap();
        client::program_key(&mut dev, &KEY).unwrap();
        client::write_blocks(&mut dev, &KEY, 9, &[[0x99; 256], [0x98; 256]]).unwrap();
        // A failed write is not persisted (the result register is volatile
        // for failures, as nothing on the device may change).
        let r = write_raw(&mut dev, build_write_frames(&OTHER_KEY, 9, 1, &[[0; 256]]));
        assert_eq!(r.result(), 2);
    }
    let mut dev = RpmbDevice::open(&path).unwrap();
    let r = dev.process(&[result_read()]).unwrap();
    assert_eq!(
        (r[0].req_resp(), r[0].result(), r[0].address()),
        (0x0300, 0, 9)
    );
    assert_eq!(r[0].write_counter(), 1);
    let got = client::read_blocks(&mut dev, &KEY, 9, 2, &[0; 16]).unwrap();
    assert_eq!(got, vec![[0x99; 256], [0x98; 256]]);
    assert_eq!(dev.info().used_blocks, 2);
    drop(dev);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Structured inputs for the fuzz entry points: mostly valid request
/// types, small block counts and addresses near the end of the device, so
/// the oracle in `process_arbitrary` (no panic, response counts, reopen
/// equals live state) is exercised on deep paths. `RPMB_SIM_FUZZ_ITERS`
/// raises the iteration count for a longer local run.
#[test]
fn fuzz_entry_points_smoke() {
    let iters: u64 = std::env::var("RPMB_SIM_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut rng = Rng(77);
    for _ in 0..iters {
        let mut data = vec![rng.next() as u8];
        for _ in 0..rng.below(12) {
            let ctl = rng.next() as u8;
            data.push(ctl);
            for _ in 0..=(ctl & 7) {
                let mut f = [0u8; 512];
                for chunk in f.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next().to_le_bytes());
                }
                if rng.below(8) != 0 {
                    f[510..512].copy_from_slice(&(1 + rng.below(5) as u16).to_be_bytes());
                    f[506..508].copy_from_slice(&(rng.below(5) as u16).to_be_bytes());
                    f[504..506].copy_from_slice(&(rng.below(520) as u16).to_be_bytes());
                    f[508..510].fill(0);
                    if rng.below(2) == 0 {
                        f[500..504].fill(0);
                    }
                }
                let keep = if rng.below(10) == 0 {
                    rng.below(512) as usize
                } else {
                    512
                };
                data.extend_from_slice(&f[..keep]);
            }
        }
        rpmb_sim::fuzzing::process_arbitrary(&data);
        let patch_len = rng.below(64) as usize;
        let patch: Vec<u8> = (0..patch_len).map(|_| rng.next() as u8).collect();
        rpmb_sim::fuzzing::open_arbitrary_image(&patch);
    }
}
