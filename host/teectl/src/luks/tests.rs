//! `encrypt-data-done.hdr` is the first 32 KiB (both header copies) of a
//! data partition from the QEMU power-cut test (`cargo xtask qemu-data`),
//! written by cryptsetup 2.7.5: a cut came after the last block of
//! `hakeys-encrypt-data`'s encryption was committed and before the header
//! was finished, and `cryptsetup reencrypt --resume-only` then failed. Its
//! key slot areas are not included; the key was a test key.

use super::*;

const FIXTURE: &[u8] = include_bytes!("encrypt-data-done.hdr");
/// The partition's size in that test, and where its moved segment is.
const DEVICE_SIZE: u64 = 333_447_168;
const MOVED: (u64, u64) = (316_669_952, 16_777_216);
const DATA_OFFSET: u64 = 16_777_216;

/// A sparse image of the partition: the fixture's header, a plaintext
/// pattern in the moved segment, encrypted-looking bytes in the data area.
fn image(header: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.img");
    let mut f = File::create(&path).unwrap();
    f.set_len(DEVICE_SIZE).unwrap();
    f.write_all(header).unwrap();
    // The reencryption keyslot's area (offset 290816 in the fixture).
    f.seek(SeekFrom::Start(290_816)).unwrap();
    f.write_all(&[0x5a; 4096]).unwrap();
    f.seek(SeekFrom::Start(DATA_OFFSET)).unwrap();
    f.write_all(&[0xd7; 65536]).unwrap();
    f.seek(SeekFrom::Start(MOVED.0)).unwrap();
    f.write_all(&vec![b'p'; MOVED.1 as usize]).unwrap();
    (dir, path)
}

fn read_range(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// What finish may write: the header copies, the reencryption keyslot's
/// area, the moved segment (the rest of the image is the data area).
fn fingerprint(path: &Path) -> Vec<u8> {
    let mut h = Sha256::new();
    for (off, len) in [
        (0, 32768),
        (290_816, 4096),
        (MOVED.0, MOVED.1 as usize),
        (DATA_OFFSET, 65536),
    ] {
        h.update(read_range(path, off, len));
    }
    h.finalize().to_vec()
}

fn headers(path: &Path) -> Headers {
    Headers::read(&mut File::open(path).unwrap()).unwrap()
}

/// The fixture with its current JSON replaced by `edit`'s result (both
/// copies rewritten, valid).
fn edited(edit: impl Fn(&mut Value)) -> Vec<u8> {
    let (_d, path) = image(FIXTURE);
    let h = headers(&path);
    let mut json = h.current().json.clone();
    edit(&mut json);
    let seq = h.current().seqid;
    let mut out = build_copy(&h.primary.as_ref().unwrap().bytes, 0, seq, &json).unwrap();
    out.extend(build_copy(&h.secondary.as_ref().unwrap().bytes, 16384, seq, &json).unwrap());
    out
}

#[test]
fn the_fixture_reads_as_an_encryption_to_finish() {
    let (_d, path) = image(FIXTURE);
    let h = headers(&path);
    assert!(h.primary.is_some() && h.secondary.is_some());
    assert_eq!(h.current().bytes.len(), 16384);
    assert_eq!(state(&h.current().json), State::Finish);
    assert_eq!(check(&path).unwrap(), State::Finish);
}

#[test]
fn finish_leaves_the_header_cryptsetup_writes_at_the_end() {
    let (_d, path) = image(FIXTURE);
    let before = headers(&path);
    let data_before = read_range(&path, DATA_OFFSET, 65536);
    assert_eq!(finish(&path).unwrap(), State::Finish);

    let after = headers(&path);
    let (p, s) = (
        after.primary.as_ref().unwrap(),
        after.secondary.as_ref().unwrap(),
    );
    assert_eq!(p.seqid, before.current().seqid + 1);
    assert_eq!(s.seqid, p.seqid);
    assert_eq!(p.json, s.json);
    let j = &p.json;
    assert_eq!(state(j), State::Clean);
    // What a conversion that was not cut leaves (qemu-data's board A).
    let keys = |k: &str| {
        j[k].as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("keyslots"), ["0"]);
    assert_eq!(keys("segments"), ["0"]);
    assert_eq!(keys("digests"), ["0"]);
    assert_eq!(j["digests"]["0"]["keyslots"], serde_json::json!(["0"]));
    assert_eq!(j["digests"]["0"]["segments"], serde_json::json!(["0"]));
    assert_eq!(
        j["config"],
        serde_json::json!({"json_size": "12288", "keyslots_size": "16744448"})
    );
    assert_eq!(j["segments"]["0"]["size"], "dynamic");
    assert_eq!(j["keyslots"]["0"], before.current().json["keyslots"]["0"]);
    // The binary fields other than the sequence number and checksum stay.
    for (new, old) in [
        (p, before.primary.as_ref().unwrap()),
        (s, before.secondary.as_ref().unwrap()),
    ] {
        assert_eq!(new.bytes[..OFF_SEQID], old.bytes[..OFF_SEQID]);
        assert_eq!(
            new.bytes[OFF_SEQID + 8..OFF_CSUM],
            old.bytes[OFF_SEQID + 8..OFF_CSUM]
        );
    }

    // The plaintext copy is gone (random, not the pattern), the resilience
    // area is zeros, the data area untouched.
    let moved = read_range(&path, MOVED.0, MOVED.1 as usize);
    assert!(moved
        .chunks(4096)
        .all(|c| c.iter().filter(|&&b| b == b'p').count() < 128));
    assert_eq!(read_range(&path, 290_816, 4096), vec![0; 4096]);
    assert_eq!(read_range(&path, DATA_OFFSET, 65536), data_before);

    // Again: nothing to do, nothing written.
    let sum = Sha256::digest(read_range(&path, 0, 32768));
    assert_eq!(finish(&path).unwrap(), State::Clean);
    assert_eq!(Sha256::digest(read_range(&path, 0, 32768)), sum);
}

#[test]
fn a_damaged_primary_is_read_from_the_secondary_and_rewritten() {
    let mut hdr = FIXTURE.to_vec();
    hdr[5000] ^= 0x20; // in the primary's JSON: its checksum fails
    let (_d, path) = image(&hdr);
    let h = headers(&path);
    assert!(h.primary.is_none() && h.secondary.is_some());
    assert_eq!(finish(&path).unwrap(), State::Finish);
    let after = headers(&path);
    let p = after.primary.as_ref().expect("primary rebuilt");
    assert_eq!(&p.bytes[..6], MAGIC_PRIMARY);
    assert_eq!(be64(&p.bytes, OFF_HDR_OFFSET), 0);
    // Its own salt, not the secondary's.
    assert_ne!(
        p.bytes[OFF_SALT..OFF_SALT + SALT_LEN],
        after.secondary.as_ref().unwrap().bytes[OFF_SALT..OFF_SALT + SALT_LEN]
    );
    assert_eq!(state(&p.json), State::Clean);
}

#[test]
fn the_newer_copy_is_in_force() {
    // A primary one sequence number ahead that is clean: nothing to do.
    let (_d, path) = image(FIXTURE);
    let h = headers(&path);
    let clean = finished_json(&h.current().json).unwrap().json;
    let p = build_copy(
        &h.primary.as_ref().unwrap().bytes,
        0,
        h.current().seqid + 1,
        &clean,
    )
    .unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    write_at(&mut f, 0, &p).unwrap();
    assert_eq!(check(&path).unwrap(), State::Clean);
    // The other way round: the old primary, a newer unfinished secondary.
    let mut hdr = FIXTURE.to_vec();
    let s = build_copy(
        &hdr[16384..],
        16384,
        h.current().seqid + 1,
        &h.current().json,
    )
    .unwrap();
    hdr[16384..].copy_from_slice(&s);
    let p = build_copy(&hdr[..16384], 0, h.current().seqid, &clean).unwrap();
    hdr[..16384].copy_from_slice(&p);
    let (_d2, path2) = image(&hdr);
    assert_eq!(check(&path2).unwrap(), State::Finish);
}

#[test]
fn an_encryption_with_blocks_left_is_refused_and_untouched() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a segment in reencryption",
            edited(|j| {
                j["segments"]["0"]["flags"] = serde_json::json!(["in-reencryption"]);
            }),
        ),
        (
            "old data left (a linear segment)",
            edited(|j| {
                let mut lin = j["segments"]["1"].clone();
                lin.as_object_mut().unwrap().remove("flags");
                j["segments"]["4"] = lin;
            }),
        ),
        (
            "not an encryption",
            edited(|j| j["keyslots"]["1"]["mode"] = "reencrypt".into()),
        ),
        (
            "the segment is not the final one",
            edited(|j| j["segments"]["0"]["encryption"] = "aes-cbc-essiv:sha256".into()),
        ),
        (
            "bound to another digest",
            edited(|j| j["digests"]["0"]["segments"] = serde_json::json!(["2"])),
        ),
    ];
    for (what, hdr) in cases {
        let (_d, path) = image(&hdr);
        assert_eq!(check(&path).unwrap(), State::Resume, "{what}");
        let before = fingerprint(&path);
        let Err(Failure(code, msg)) = finish(&path) else {
            panic!("{what}: finished")
        };
        assert_eq!(code, exit::REFUSED, "{what}");
        assert!(msg.contains("resume"), "{what}: {msg}");
        assert_eq!(fingerprint(&path), before, "{what}");
    }
}

#[test]
fn not_luks2_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext4.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let Err(Failure(code, msg)) = check(&path) else {
        panic!("accepted")
    };
    assert_eq!(code, exit::USAGE);
    assert!(msg.contains("not a LUKS2 device"), "{msg}");
    // Both copies damaged: the same.
    let mut hdr = FIXTURE.to_vec();
    hdr[5000] ^= 1;
    hdr[16384 + 5000] ^= 1;
    let (_d, path) = image(&hdr);
    assert!(finish(&path).is_err());
    let Err(Failure(_, msg)) = check(&path) else {
        panic!("accepted")
    };
    assert!(msg.contains("not a LUKS2 device"), "{msg}");
    // Missing file.
    let Err(Failure(code, _)) = check(&dir.path().join("none")) else {
        panic!("accepted")
    };
    assert_eq!(code, exit::USAGE);
}

#[test]
fn a_moved_segment_outside_the_data_area_is_refused() {
    let hdr = edited(|j| j["segments"]["3"]["offset"] = "4096".into());
    let (_d, path) = image(&hdr);
    let before = fingerprint(&path);
    let Err(Failure(code, msg)) = finish(&path) else {
        panic!("finished")
    };
    assert_eq!(code, exit::USAGE);
    assert!(msg.contains("outside the data area"), "{msg}");
    assert_eq!(fingerprint(&path), before);
}

#[test]
fn a_header_cryptsetup_would_reject_is_never_written() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            // cryptsetup caps keyslots_size at 128 MiB and 4 KiB multiples.
            "an oversized keyslots area",
            edited(|j| j["config"]["keyslots_size"] = "268402688".into()),
            "keyslots_size",
        ),
        (
            "a keyslot bound to no digest",
            edited(|j| j["digests"]["0"]["keyslots"] = serde_json::json!([])),
            "keyslot 0 is bound to 0 digests",
        ),
        (
            "another requirement left",
            edited(|j| {
                j["config"]["requirements"]["mandatory"] =
                    serde_json::json!(["online-reencrypt-v2", "opal"])
            }),
            "requirements remain",
        ),
    ];
    for (what, hdr, why) in cases {
        let (_d, path) = image(&hdr);
        assert_eq!(check(&path).unwrap(), State::Finish, "{what}");
        let before = fingerprint(&path);
        let Err(Failure(code, msg)) = finish(&path) else {
            panic!("{what}: finished")
        };
        assert_eq!(code, exit::USAGE, "{what}");
        assert!(
            msg.contains(why) && msg.contains("nothing was changed"),
            "{what}: {msg}"
        );
        assert_eq!(fingerprint(&path), before, "{what}");
    }
}

#[test]
fn the_finished_fixture_passes_the_checks() {
    let h = {
        let (_d, path) = image(FIXTURE);
        headers(&path)
    };
    let done = finished_json(&h.current().json).unwrap();
    validate(&done.json, 16384).unwrap();
    assert_eq!(done.moved, Some(MOVED));
    assert_eq!(done.reenc_area, Some((290_816, 4096)));
    // The unfinished header is not a valid finished one.
    assert!(validate(&h.current().json, 16384).is_err());
}
