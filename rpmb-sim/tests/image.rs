//! The image file: golden bytes of format version 1, the layout as SPEC.md
//! states it, creation, the exclusive lock and damaged images.

mod common;

use std::path::{Path, PathBuf};

use common::{current_state_slot, hex_decode, small_opts, KEY};
use rpmb_sim::client;
use rpmb_sim::storage::MemStorage;
use rpmb_sim::{CreateOptions, Error, RpmbDevice, DEFAULT_CID};
use sha2::{Digest, Sha256};

const GOLDEN: &str = include_str!("vectors/image_v1.hex");

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/image_v1.hex")
}

/// The scenario the golden image records: 512 blocks, rel_wr_sec_c 1,
/// default CID, key 0x11.., block 5 = 0xAB.., then blocks 6..=7 = 0xCD.., 0xEF...
fn golden_scenario() -> Vec<u8> {
    let (mut dev, mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    client::program_key(&mut dev, &KEY).unwrap();
    client::write_blocks_at_counter(&mut dev, &KEY, 5, 0, &[[0xAB; 256]]).unwrap();
    client::write_blocks_at_counter(&mut dev, &KEY, 6, 1, &[[0xCD; 256], [0xEF; 256]]).unwrap();
    drop(dev);
    mem.image()
}

/// "len N" then "OFFSET HEX" for every 32-byte row that is not all zero.
fn render(image: &[u8]) -> String {
    let mut s = format!("len {}\n", image.len());
    for (i, row) in image.chunks(32).enumerate() {
        if row.iter().any(|&b| b != 0) {
            let hex: String = row.iter().map(|b| format!("{b:02x}")).collect();
            s.push_str(&format!("{:08x} {hex}\n", i * 32));
        }
    }
    s
}

fn parse(text: &str) -> Vec<u8> {
    let mut lines = text.lines();
    let len: usize = lines
        .next()
        .and_then(|l| l.strip_prefix("len "))
        .expect("len line")
        .parse()
        .unwrap();
    let mut img = vec![0u8; len];
    for l in lines {
        let (off, hex) = l.split_once(' ').unwrap();
        let off = usize::from_str_radix(off, 16).unwrap();
        let bytes = hex_decode(hex);
        img[off..off + bytes.len()].copy_from_slice(&bytes);
    }
    img
}

#[test]
fn golden_v1_image_is_reproduced_byte_for_byte() {
    let now = render(&golden_scenario());
    if std::env::var_os("RPMB_SIM_REGEN_FIXTURES").is_some() {
        std::fs::write(golden_path(), &now).unwrap();
    }
    assert!(
        now == GOLDEN,
        "the image format drifted from tests/vectors/image_v1.hex (bump the format \
         version and keep loading v1 instead of regenerating)"
    );
}

#[test]
fn golden_v1_image_still_loads() {
    let mut dev = RpmbDevice::open_storage(Box::new(MemStorage::new(parse(GOLDEN)))).unwrap();
    let info = dev.info();
    assert!(info.key_programmed);
    assert_eq!(info.write_counter, 2);
    assert_eq!(info.used_blocks, 3);
    assert_eq!(info.cid, DEFAULT_CID);
    let got = client::read_blocks(&mut dev, &KEY, 5, 3, &[1; 16]).unwrap();
    assert_eq!(got, vec![[0xAB; 256], [0xCD; 256], [0xEF; 256]]);
    let r = dev
        .process(&[rpmb_sim::Frame::new_request(
            rpmb_sim::frame::REQ_RESULT_READ,
        )])
        .unwrap();
    assert_eq!(
        (r[0].result(), r[0].address(), r[0].write_counter()),
        (0, 6, 2)
    );
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn layout_is_the_one_spec_md_states() {
    let img = parse(GOLDEN);
    // Superblock.
    assert_eq!(&img[0..8], b"RPMBSIM\0");
    assert_eq!(u32::from_le_bytes(img[8..12].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(img[12..16].try_into().unwrap()), 128);
    assert_eq!((img[16], img[17]), (1, 1));
    assert_eq!(&img[20..36], &DEFAULT_CID);
    assert_eq!(le64(&img, 40), 4096);
    assert_eq!(le64(&img, 48), 8192);
    assert_eq!(le64(&img, 56), 12288);
    assert_eq!(
        le64(&img, 64),
        4096,
        "journal: round_up(128 + 2*256 + 32, 4096)"
    );
    assert_eq!(le64(&img, 72), 16384);
    assert_eq!(le64(&img, 80), 131072);
    assert_eq!(le64(&img, 88), 16384 + 131072);
    assert_eq!(img.len(), 16384 + 131072);
    let sum: [u8; 32] = Sha256::digest(&img[..96]).into();
    assert_eq!(&img[96..128], &sum);
    // State: key programming was seq 1 (slot 1), the writes seq 2 and 3.
    let (off, seq) = current_state_slot(&img);
    assert_eq!((off, seq), (8192, 3));
    let st = &img[off..off + 96];
    assert_eq!(
        u32::from_le_bytes(st[16..20].try_into().unwrap()),
        1,
        "flags"
    );
    assert_eq!(
        u32::from_le_bytes(st[20..24].try_into().unwrap()),
        2,
        "counter"
    );
    assert_eq!(&st[24..56], &KEY);
    assert_eq!(&st[56..62], &[3, 0, 0, 0, 6, 0], "last op, result, address");
    // Journal: the last write.
    let j = &img[12288..];
    assert_eq!(&j[0..8], b"RPMBJRNL");
    assert_eq!(le64(j, 8), 3);
    assert_eq!(&j[16..20], &[6, 0, 2, 0], "address 6, 2 blocks");
    assert_eq!(&j[24..120], st, "embedded state record");
    assert!(j[128..384].iter().all(|&b| b == 0xCD));
    assert!(j[384..640].iter().all(|&b| b == 0xEF));
    let sum: [u8; 32] = Sha256::digest(&j[..640]).into();
    assert_eq!(&j[640..672], &sum);
    // Data.
    assert!(img[16384 + 5 * 256..16384 + 6 * 256]
        .iter()
        .all(|&b| b == 0xAB));
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rpmb-sim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn create_refuses_to_overwrite_and_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmpdir("create");
    let p = d.join("x.img");
    RpmbDevice::create(&p, &CreateOptions::default()).unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 16384 + 2 * 1024 * 1024);
    let before = std::fs::read(&p).unwrap();
    match RpmbDevice::create(&p, &small_opts(1)) {
        Err(Error::AlreadyExists(q)) => assert_eq!(q, p),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let other = d.join("other");
    std::fs::write(&other, b"not an image").unwrap();
    assert!(matches!(
        RpmbDevice::create(&other, &small_opts(1)),
        Err(Error::AlreadyExists(_))
    ));
    let no_size = CreateOptions {
        size_mult: 0,
        ..small_opts(1)
    };
    let no_sectors = CreateOptions {
        rel_wr_sec_c: 0,
        ..small_opts(1)
    };
    for opts in [no_size, no_sectors] {
        assert!(matches!(
            RpmbDevice::create(&d.join("y.img"), &opts),
            Err(Error::InvalidOptions(_))
        ));
    }
    assert!(RpmbDevice::create(&d.join("no/such/dir.img"), &small_opts(1)).is_err());
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["other", "x.img"], "no temporary files left");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn second_open_fails_while_the_first_holds_the_lock() {
    let d = tmpdir("lock");
    let p = d.join("l.img");
    RpmbDevice::create(&p, &small_opts(1)).unwrap();
    let first = RpmbDevice::open(&p).unwrap();
    // flock belongs to the open file description: a second open in the same
    // process conflicts just as another process would.
    let err = RpmbDevice::open(&p).unwrap_err();
    assert!(matches!(&err, Error::Locked(q) if q == &p), "{err:?}");
    assert!(err.to_string().contains("l.img"), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    let _again = RpmbDevice::open(&p).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn damaged_images_are_refused_with_clear_errors() {
    let good = parse(GOLDEN);
    let open = |img: Vec<u8>| RpmbDevice::open_storage(Box::new(MemStorage::new(img)));

    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(open(bad), Err(Error::Corrupt { reason, .. }) if reason.contains("magic")));

    let mut v2 = good.clone();
    v2[8] = 2;
    let sum: [u8; 32] = Sha256::digest(&v2[..96]).into();
    v2[96..128].copy_from_slice(&sum);
    assert!(matches!(
        open(v2),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));

    let mut flipped = good.clone();
    flipped[17] = 2;
    assert!(
        matches!(open(flipped), Err(Error::Corrupt { reason, .. }) if reason.contains("checksum"))
    );

    let truncated = good[..good.len() - 1].to_vec();
    assert!(
        matches!(open(truncated), Err(Error::Corrupt { reason, .. }) if reason.contains("needs"))
    );
    assert!(matches!(
        open(good[..50].to_vec()),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(open(Vec::new()), Err(Error::Corrupt { .. })));

    let mut no_state = good.clone();
    no_state[4096 + 30] ^= 1;
    no_state[8192 + 30] ^= 1;
    assert!(
        matches!(open(no_state), Err(Error::Corrupt { reason, .. }) if reason.contains("state"))
    );

    // A damaged newest state record falls back to the older one; the
    // journal then brings back the write it committed (seq 3 = 2 + 1).
    let mut torn = good.clone();
    torn[8192 + 40] ^= 0xFF;
    let dev = open(torn).unwrap();
    assert_eq!(dev.info().write_counter, 2);

    // A journal record with a valid checksum that does not follow the
    // state is refused rather than guessed at.
    let (mut dev, mem) = RpmbDevice::new_in_memory(&small_opts(1)).unwrap();
    client::program_key(&mut dev, &KEY).unwrap();
    drop(dev);
    let mut img = mem.image();
    let journal_from_elsewhere = &good[12288..12288 + 672];
    img[12288..12288 + 672].copy_from_slice(journal_from_elsewhere);
    // State here is seq 1; the journal says seq 3: ignored (not seq 1 or 2).
    assert_eq!(open(img.clone()).unwrap().info().write_counter, 0);
    let mut rec = journal_from_elsewhere.to_vec();
    // Make it claim seq 2 (embedded state seq too) with valid checksums.
    rec[8..16].copy_from_slice(&2u64.to_le_bytes());
    rec[24 + 8..24 + 16].copy_from_slice(&2u64.to_le_bytes());
    let s: [u8; 32] = Sha256::digest(&rec[24..24 + 64]).into();
    rec[24 + 64..24 + 96].copy_from_slice(&s);
    let s: [u8; 32] = Sha256::digest(&rec[..640]).into();
    rec[640..672].copy_from_slice(&s);
    img[12288..12288 + 672].copy_from_slice(&rec);
    // Its counter (2) is not the current counter (0) + 1.
    assert!(matches!(open(img), Err(Error::Corrupt { reason, .. }) if reason.contains("journal")));
}
