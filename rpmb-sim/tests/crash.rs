//! Power-cut tests: a write or a key programming cut at every write/sync
//! step, with torn writes, under two disk models, then (sometimes) a second
//! cut during recovery; after reopening the image must hold the old data and
//! counter or the new data and counter, never a mix.

mod common;

use common::{small_opts, Rng, KEY};
use rpmb_sim::client::{self, ClientError};
use rpmb_sim::storage::{CrashHandle, CrashSim, MemStorage};
use rpmb_sim::{ResultCode, RpmbDevice};

/// How the disk looks after the cut.
#[derive(Clone, Copy, Debug)]
enum Model {
    /// Writes land in order; the in-flight one keeps its first n bytes.
    Ordered(usize),
    /// Unsynced writes land whole, not at all or torn (seeded).
    Unordered(u64),
}

fn after_cut(h: &CrashHandle, m: Model) -> Vec<u8> {
    match m {
        Model::Ordered(n) => h.image_after_cut_ordered(n),
        Model::Unordered(seed) => h.image_after_cut_unordered(seed),
    }
}

/// A keyed small device with some history, as an image.
fn base_image(rng: &mut Rng, rel: u8) -> (Vec<u8>, u32) {
    let (mut dev, mem) = RpmbDevice::new_in_memory(&small_opts(rel)).unwrap();
    client::program_key(&mut dev, &KEY).unwrap();
    let max = u64::from(2 * rel);
    let writes = rng.below(4);
    for _ in 0..writes {
        let n = 1 + rng.below(max) as usize;
        let addr = rng.below(512 - n as u64) as u16;
        let data: Vec<[u8; 256]> = (0..n).map(|_| rng.block()).collect();
        client::write_blocks(&mut dev, &KEY, addr, &data).unwrap();
    }
    let c = dev.info().write_counter;
    (mem.image(), c)
}

struct Write {
    addr: u16,
    data: Vec<[u8; 256]>,
}

/// Runs `w` on a device over `image` with a cut after `k` steps (from the
/// end of open). Returns the handle and whether the write was acknowledged.
fn cut_write(
    image: &[u8],
    counter: u32,
    w: &Write,
    k: Option<usize>,
    durable: bool,
) -> (CrashHandle, bool) {
    let (sim, h) = CrashSim::new(image.to_vec());
    let mut dev = RpmbDevice::open_storage(Box::new(sim)).unwrap();
    dev.set_durable(durable);
    let s0 = h.steps();
    h.set_cut_after(k.map(|k| s0 + k));
    let res = client::write_blocks_at_counter(&mut dev, &KEY, w.addr, counter, &w.data);
    match &res {
        Ok(c) => assert_eq!(*c, counter + 1),
        Err(ClientError::Transport(_)) => assert!(dev.is_poisoned()),
        Err(e) => panic!("unexpected failure {e}"),
    }
    (h, res.is_ok())
}

fn data_region(image: &[u8], dev_like: &RpmbDevice) -> Vec<u8> {
    let l = dev_like.layout();
    image[l.data_offset as usize..(l.data_offset + l.data_len) as usize].to_vec()
}

/// Opens `crashed`, checks all-or-nothing against `old` and the write, and
/// that the device works afterwards. Returns true if the write is there.
fn check(
    old: &[u8],
    counter: u32,
    w: &Write,
    crashed: Vec<u8>,
    acknowledged: bool,
    what: &str,
) -> bool {
    let mem = MemStorage::new(crashed);
    let mut dev = RpmbDevice::open_storage(Box::new(mem.clone()))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let recovered = mem.image();
    let got = data_region(&recovered, &dev);
    let mut old_data = data_region(old, &dev);
    let c = client::read_counter(&mut dev, &KEY, &[1; 16])
        .unwrap_or_else(|e| panic!("{what}: counter read failed: {e}"));
    let applied = if c == counter {
        assert!(
            got == old_data,
            "{what}: counter unchanged but data changed"
        );
        false
    } else {
        assert_eq!(c, counter + 1, "{what}: counter moved by more than one");
        let start = usize::from(w.addr) * 256;
        for (i, b) in w.data.iter().enumerate() {
            old_data[start + i * 256..start + (i + 1) * 256].copy_from_slice(b);
        }
        assert!(
            got == old_data,
            "{what}: counter moved but data is not the new data"
        );
        true
    };
    if acknowledged {
        assert!(applied, "{what}: an acknowledged write was lost");
    }
    // The device is healthy: the next write goes through.
    client::write_blocks_at_counter(&mut dev, &KEY, 0, c, &[[0x5A; 256]])
        .unwrap_or_else(|e| panic!("{what}: write after recovery failed: {e}"));
    applied
}

fn steps_of_a_write(image: &[u8], counter: u32, w: &Write, durable: bool) -> usize {
    let (h, ok) = cut_write(image, counter, w, None, durable);
    assert!(ok);
    h.steps()
}

#[test]
fn write_cut_at_every_step_with_torn_writes() {
    let mut rng = Rng(0xC0FFEE);
    let mut cases = 0;
    let mut applied_seen = [false; 2];
    for rel in [1u8, 3] {
        for n in [1usize, 2 * rel as usize] {
            let (old, c) = base_image(&mut rng, rel);
            let w = Write {
                addr: 500 - n as u16,
                data: (0..n).map(|_| rng.block()).collect(),
            };
            let total = steps_of_a_write(&old, c, &w, true);
            assert_eq!(total, 5, "journal, sync, blocks, state, sync");
            for k in 0..=total {
                let mut models: Vec<Model> = [0usize, 1, 64, 100, 511, 512, 513, 700, 100_000]
                    .into_iter()
                    .map(Model::Ordered)
                    .collect();
                models.extend((0..6).map(|s| Model::Unordered(rng.next() ^ s)));
                for m in models {
                    let (h, ok) = cut_write(&old, c, &w, Some(k), true);
                    assert_eq!(ok, k == total);
                    let what = format!("rel {rel} n {n} cut after {k} {m:?}");
                    let applied = check(&old, c, &w, after_cut(&h, m), ok, &what);
                    applied_seen[usize::from(applied)] = true;
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 300);
    assert_eq!(applied_seen, [true, true], "both outcomes occur");
}

#[test]
fn write_without_fsync_is_still_atomic_for_in_order_cuts() {
    let mut rng = Rng(42);
    let (old, c) = base_image(&mut rng, 2);
    let w = Write {
        addr: 17,
        data: (0..3).map(|_| rng.block()).collect(),
    };
    let total = steps_of_a_write(&old, c, &w, false);
    assert_eq!(total, 3, "journal, blocks, state");
    for k in 0..=total {
        for torn in [0usize, 10, 300, 512, 900, 10_000] {
            let (h, ok) = cut_write(&old, c, &w, Some(k), false);
            let what = format!("no-sync cut after {k} torn {torn}");
            check(&old, c, &w, h.image_after_cut_ordered(torn), ok, &what);
        }
    }
}

#[test]
fn randomised_cuts_including_a_second_cut_during_recovery() {
    let mut rng = Rng(0x5EED_0001);
    let mut second_cuts = 0;
    for round in 0..400 {
        let rel = 1 + rng.below(4) as u8;
        let (old, c) = base_image(&mut rng, rel);
        let n = 1 + rng.below(u64::from(2 * rel)) as usize;
        let w = Write {
            addr: rng.below(512 - n as u64 + 1) as u16,
            data: (0..n).map(|_| rng.block()).collect(),
        };
        let k = rng.below(6) as usize;
        let model = |rng: &mut Rng| {
            if rng.below(2) == 0 {
                Model::Ordered(rng.below(n as u64 * 256 + 200) as usize)
            } else {
                Model::Unordered(rng.next())
            }
        };
        let m = model(&mut rng);
        let (h, ok) = cut_write(&old, c, &w, Some(k), true);
        let mut crashed = after_cut(&h, m);
        let what = format!(
            "round {round}: rel {rel} n {n} addr {} cut {k} {m:?}",
            w.addr
        );
        if rng.below(2) == 0 {
            // The power fails again while the image is being recovered.
            let (sim, h2) = CrashSim::new(crashed.clone());
            h2.set_cut_after(Some(rng.below(4) as usize));
            let _ = RpmbDevice::open_storage(Box::new(sim));
            if h2.was_cut() {
                second_cuts += 1;
            }
            crashed = after_cut(&h2, model(&mut rng));
        }
        check(&old, c, &w, crashed, ok, &what);
    }
    assert!(second_cuts > 10, "recovery was cut in {second_cuts} rounds");
}

#[test]
fn key_programming_cut_at_every_step() {
    let (dev, mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    drop(dev);
    let fresh = mem.image();
    let mut rng = Rng(9);
    for k in 0..=2usize {
        let mut models: Vec<Model> = [0usize, 1, 40, 95, 96, 4096]
            .into_iter()
            .map(Model::Ordered)
            .collect();
        models.extend((0..6).map(|_| Model::Unordered(rng.next())));
        for m in models {
            let (sim, h) = CrashSim::new(fresh.clone());
            let mut dev = RpmbDevice::open_storage(Box::new(sim)).unwrap();
            h.set_cut_after(Some(h.steps() + k));
            let ok = client::program_key(&mut dev, &KEY).is_ok();
            assert_eq!(ok, k == 2);
            let mut dev = RpmbDevice::open_storage(Box::new(MemStorage::new(after_cut(&h, m))))
                .unwrap_or_else(|e| panic!("cut {k} {m:?}: {e}"));
            match client::read_counter(&mut dev, &KEY, &[0; 16]) {
                Ok(0) => assert!(dev.info().key_programmed),
                Err(e) => {
                    assert!(!ok, "cut {k} {m:?}: acknowledged key lost");
                    assert_eq!(e.result_code(), Some(ResultCode::KeyNotProgrammed));
                    client::program_key(&mut dev, &KEY).unwrap();
                }
                Ok(other) => panic!("counter {other}"),
            }
        }
    }
}
