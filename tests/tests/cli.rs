//! `teectl` driven end to end on the simulator backend, as a user, a script
//! or a boot unit would drive it.

use std::process::Stdio;
use std::time::Duration;

use hakeys_e2e::Board;

const NOT_INITIALISED: i32 = 3;
const USAGE: i32 = 2;
const REFUSED: i32 = 4;
const REJECTED: i32 = 5;
const STORAGE: i32 = 6;

/// The board's sealing key (device public key) as uncompressed SEC1 hex,
/// from the DER of its PEM (the last 65 bytes of the SubjectPublicKeyInfo).
fn sealing_key_hex(b: &Board) -> String {
    use base64::Engine as _;
    let pem = String::from_utf8(b.ok(&["pubkey"], b"")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    der[der.len() - 65..]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn status_json(b: &Board) -> serde_json::Value {
    serde_json::from_slice(&b.ok(&["status", "--json"], b"")).expect("status --json is JSON")
}

#[test]
fn walkthrough_init_seal_unseal_offline_seal_attest() {
    let b = Board::new();
    assert_eq!(status_json(&b)["initialised"], false);
    let out = b.ok(&["init"], b"");
    assert!(String::from_utf8_lossy(&out).contains("initialised"));
    let again = String::from_utf8(b.ok(&["init"], b"")).unwrap();
    assert!(again.contains("already initialised"), "{again}");
    let st = status_json(&b);
    assert_eq!(
        (
            st["initialised"].clone(),
            st["epoch"].clone(),
            st["min_epoch"].clone()
        ),
        (true.into(), 1.into(), 1.into())
    );

    // Binary secrets come back byte-exact: NULs, newlines, high bytes.
    let secret: Vec<u8> = (0u8..=255).chain(*b"\n\n\0end\n").collect();
    let blob = b.seal("ha/core", &secret);
    let line = String::from_utf8(blob.clone()).unwrap();
    assert!(line.starts_with("hakeys:v1:") && line.ends_with('\n') && line.lines().count() == 1);
    assert_eq!(b.ok(&["unseal"], &blob), secret);
    // The YAML-indented form and the bare form are accepted too.
    assert_eq!(
        b.ok(&["unseal"], format!("    {}", line.trim()).as_bytes()),
        secret
    );

    // Offline sealing to the board's public key, with no state at all.
    let pem = b.ok(&["pubkey"], b"");
    assert!(pem.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    let laptop = Board::new();
    let pem_path = laptop.dir.path().join("board.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let offline = laptop.ok(
        &[
            "seal",
            "--namespace",
            "addon/mosquitto",
            "--to",
            pem_path.to_str().unwrap(),
        ],
        b"from-laptop",
    );
    assert!(
        !laptop.state().exists(),
        "offline sealing must not create simulator state"
    );
    assert_eq!(b.ok(&["unseal"], &offline), b"from-laptop");
    // Another board cannot open it.
    let other = Board::new();
    other.ok(&["init"], b"");
    other.run(&["unseal"], &offline).fails_with(REJECTED);
    other.run(&["unseal"], &blob).fails_with(REJECTED);

    // Attestation: verifies with the board's attestation key and the right
    // challenge only; the sealing key (the device key) signs nothing.
    let attestation_pem = laptop.dir.path().join("attestation.pem");
    let apem = b.ok(&["pubkey", "--attestation"], b"");
    assert!(apem.starts_with(b"-----BEGIN PUBLIC KEY-----") && apem != pem);
    std::fs::write(&attestation_pem, &apem).unwrap();
    let ev = b.ok(&["attest", "--challenge", "0011aabb"], b"");
    assert!(ev.starts_with(b"hakeys-evidence:v1:"));
    let v = b.ok(
        &[
            "verify",
            "--pubkey",
            attestation_pem.to_str().unwrap(),
            "--challenge",
            "0011aabb",
        ],
        &ev,
    );
    let v = String::from_utf8_lossy(&v);
    assert!(
        v.contains("verified: engine 1.2.0 epoch 1 oldest accepted epoch 1; boot phase ended;"),
        "{v}"
    );
    assert!(v.contains("backend simulator (a claim)"), "{v}");
    let sealing = String::from_utf8(pem.clone()).unwrap();
    let sealing_hex = sealing_key_hex(&b);
    assert!(
        v.contains(&format!("sealing key {sealing_hex}")),
        "{v} {sealing}"
    );
    b.run(
        &[
            "verify",
            "--pubkey",
            attestation_pem.to_str().unwrap(),
            "--challenge",
            "0011aabc",
        ],
        &ev,
    )
    .fails_with(REJECTED);
    b.run(
        &[
            "verify",
            "--pubkey",
            pem_path.to_str().unwrap(),
            "--challenge",
            "0011aabb",
        ],
        &ev,
    )
    .fails_with(REJECTED);
    let other_pem = laptop.dir.path().join("other.pem");
    std::fs::write(&other_pem, other.ok(&["pubkey", "--attestation"], b"")).unwrap();
    b.run(
        &[
            "verify",
            "--pubkey",
            other_pem.to_str().unwrap(),
            "--challenge",
            "0011aabb",
        ],
        &ev,
    )
    .fails_with(REJECTED);
}

#[test]
fn every_error_class_has_its_exit_code_and_one_line() {
    let b = Board::new();
    b.run(&["seal", "--namespace", "ha/core"], b"x")
        .fails_with(NOT_INITIALISED);
    b.run(&["pubkey"], b"").fails_with(NOT_INITIALISED);
    b.ok(&["init"], b"");
    let blob = b.seal("ha/core", b"s3cret-value");
    // Usage and bad input.
    b.run(&["seal", "--namespace", "Bad Namespace"], b"x")
        .fails_with(USAGE);
    b.run(&["seal", "--namespace", "ha/core"], b"")
        .fails_with(USAGE);
    b.run(&["seal", "--namespace", "ha/core"], &[1u8; 4097])
        .fails_with(USAGE);
    b.run(&["retire", "--below", "5"], b"").fails_with(USAGE);
    b.run(&["attest", "--challenge", "zz"], b"")
        .fails_with(USAGE);
    b.run(&["attest", "--challenge", &"00".repeat(65)], b"")
        .fails_with(USAGE);
    assert_eq!(b.run(&["frobnicate"], b"").code(), USAGE);
    // Refused by policy.
    b.run(&["unseal", "--namespace", "ha/other"], &blob)
        .fails_with(REFUSED);
    // Not authentic.
    b.run(&["unseal"], b"not a blob").fails_with(REJECTED);
    b.run(&["unseal"], b"hakeys:v1:!!!").fails_with(REJECTED);
    b.run(&["unseal"], b"").fails_with(REJECTED);
    let text = String::from_utf8(blob.clone()).unwrap();
    let cut = &text.trim()[..text.len() - 9];
    b.run(&["unseal"], cut.as_bytes()).fails_with(REJECTED);
}

#[test]
fn tampered_blobs_are_rejected_and_never_echoed() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let secret = b"correct horse battery staple";
    let blob = b.seal("ha/core", secret);
    let text = String::from_utf8(blob).unwrap();
    let body = text.trim().strip_prefix("hakeys:v1:").unwrap();
    // Change each base64 character of the blob once (a few dozen runs of the real binary).
    for i in (0..body.len()).step_by(3) {
        let mut chars: Vec<char> = body.chars().collect();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let t: String = chars.into_iter().collect();
        let r = b.run(&["unseal"], format!("hakeys:v1:{t}").as_bytes());
        let err = r.fails_with(if r.code() == REFUSED {
            REFUSED
        } else {
            REJECTED
        });
        assert!(!err.contains("correct horse"), "secret leaked to stderr");
    }
}

#[test]
fn rotate_rewrap_retire_end_to_end() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let old = b.seal("ha/core", b"v1");
    assert_eq!(b.ok(&["rotate"], b""), b"epoch 2 (oldest accepted: 1)\n");
    let new = b.ok(&["rewrap"], &old);
    assert_eq!(b.ok(&["unseal"], &old), b"v1");
    assert_eq!(
        b.ok(&["retire", "--below", "2"], b""),
        b"epoch 2 (oldest accepted: 2)\n"
    );
    let err = b.run(&["unseal"], &old).fails_with(REFUSED);
    assert!(err.contains("retired"), "{err}");
    assert_eq!(b.ok(&["unseal"], &new), b"v1");
    b.run(&["retire", "--below", "1"], b"").fails_with(USAGE);
    let st = status_json(&b);
    assert_eq!(
        (st["epoch"].clone(), st["min_epoch"].clone()),
        (2.into(), 2.into())
    );
}

#[test]
fn boot_done_locks_boot_namespaces_until_the_next_boot() {
    let mut b = Board::new();
    b.ok(&["init"], b"");
    let luks = b.seal("boot/luks-data", b"luks-key-bytes");
    let ha = b.seal("ha/core", b"ha");
    assert_eq!(b.ok(&["unseal"], &luks), b"luks-key-bytes");
    b.ok(&["boot-done"], b"");
    let err = b.run(&["unseal"], &luks).fails_with(REFUSED);
    assert!(err.contains("boot"), "{err}");
    assert_eq!(b.ok(&["unseal"], &ha), b"ha");
    assert_eq!(status_json(&b)["boot_locked"], true);
    // Each teectl call is a new process: the lock holds across them ...
    b.run(&["unseal"], &luks).fails_with(REFUSED);
    // ... and ends with the boot.
    b.reboot();
    assert_eq!(status_json(&b)["boot_locked"], false);
    assert_eq!(b.ok(&["unseal"], &luks), b"luks-key-bytes");
}

#[test]
fn unseal_pipes_into_a_consumer_byte_exact() {
    // The boot use: `teectl unseal < key.blob | consumer --key-file -`.
    let b = Board::new();
    b.ok(&["init"], b"");
    let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let blob_path = b.dir.path().join("key.blob");
    std::fs::write(&blob_path, b.seal("boot/luks-data", &key)).unwrap();
    let mut unseal = b
        .command(&["unseal"])
        .stdin(std::fs::File::open(&blob_path).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sum = std::process::Command::new("sha256sum")
        .stdin(unseal.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(unseal.wait().unwrap().success());
    let want = std::process::Command::new("sha256sum")
        .stdin({
            let p = b.dir.path().join("key.raw");
            std::fs::write(&p, &key).unwrap();
            std::fs::File::open(p).unwrap()
        })
        .output()
        .unwrap();
    assert_eq!(sum.stdout, want.stdout);
}

#[test]
fn storage_problems_are_reported_not_papered_over() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let blob = b.seal("ha/core", b"x");
    // Another simulated SoC key: the RPMB key no longer matches.
    let huk = b.state().join("huk");
    let original = std::fs::read(&huk).unwrap();
    std::fs::write(&huk, [0x5a; 32]).unwrap();
    let err = b.run(&["unseal"], &blob).fails_with(STORAGE);
    assert!(err.contains("authentication"), "{err}");
    b.run(&["init"], b"").fails_with(STORAGE);
    std::fs::write(&huk, &original).unwrap();
    assert_eq!(b.ok(&["unseal"], &blob), b"x");
    // A lost hardware key is not silently replaced.
    std::fs::remove_file(&huk).unwrap();
    let r = b.run(&["status"], b"");
    let err = r.fails_with(7);
    assert!(err.contains("missing"), "{err}");
    std::fs::write(&huk, &original).unwrap();
    // A state directory other users can read is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(b.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.run(&["status"], b"").fails_with(7);
    std::fs::set_permissions(b.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(b.ok(&["unseal"], &blob), b"x");
}

#[test]
fn concurrent_callers_share_one_device() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let blob = b.seal("ha/core", b"shared");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = if i % 2 == 0 {
                b.command(&["unseal"])
            } else {
                b.command(&["seal", "--namespace", "ha/core"])
            };
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(if i % 2 == 0 { &blob } else { b"new" })
                .unwrap();
            child
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kill `teectl args` at spread-out moments, `rounds` times, checking after
/// each kill that the device still works and the secret still opens.
fn kill_repeatedly(b: &Board, args: &[&str], rounds: u32, blob: &[u8], check: impl Fn(&Board)) {
    for i in 0..rounds {
        let mut child = b
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(u64::from(i) * 397 % 15_000));
        let _ = child.kill();
        let _ = child.wait();
        let st = status_json(b);
        assert!(st["epoch"].as_u64() >= st["min_epoch"].as_u64(), "{st}");
        if !blob.is_empty() {
            assert_eq!(b.ok(&["unseal"], blob), b"survivor", "round {i}");
        }
        check(b);
    }
}

#[test]
fn a_kill_during_init_rotate_or_retire_leaves_a_working_state() {
    // init: killed at any moment, the device is either untouched or fully
    // initialised; a later init completes it.
    for i in 0..12u64 {
        let b = Board::new();
        let mut child = b
            .command(&["init"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(i * 1_100));
        let _ = child.kill();
        let _ = child.wait();
        let st = status_json(&b);
        if st["initialised"] == true {
            b.ok(&["pubkey"], b"");
        }
        b.ok(&["init"], b"");
        let blob = b.seal("ha/core", b"ok");
        assert_eq!(b.ok(&["unseal"], &blob), b"ok");
    }
    let b = Board::new();
    b.ok(&["init"], b"");
    let blob = b.seal("ha/core", b"survivor");
    kill_repeatedly(&b, &["rotate"], 25, &blob, |_| {});
    let epoch = status_json(&b)["epoch"].as_u64().unwrap();
    assert!(epoch >= 1);
    // Retire only down to the blob's epoch (1) so it must keep opening;
    // then a blob at the current epoch survives retire kills.
    let current = b.seal("ha/core", b"survivor");
    let below = epoch.to_string();
    kill_repeatedly(&b, &["retire", "--below", &below], 20, &current, |b| {
        let st = status_json(b);
        assert!(
            st["min_epoch"] == 1 || st["min_epoch"].as_u64() == Some(epoch),
            "{st}"
        );
    });
}

/// Lose objects of the simulator's RPMB image, as a storage failure outside
/// the power-cut contract would: zero every copy of the hakeys blocks at
/// `addresses` (block format 2 names its address in byte 5), in place and
/// in rpmb-sim's journal (which would otherwise re-apply the last write).
fn lose_blocks(b: &Board, addresses: &[u8]) {
    let path = b.state().join("rpmb.img");
    let mut img = std::fs::read(&path).unwrap();
    let mut lost = 0;
    for i in 0..img.len() - 256 {
        if &img[i..i + 5] == b"HKSS\x02" && addresses.contains(&img[i + 5]) {
            img[i..i + 256].fill(0);
            lost += 1;
        }
    }
    assert!(lost >= addresses.len(), "found the blocks to lose");
    std::fs::write(&path, img).unwrap();
}

#[test]
fn lost_state_is_exit_6_and_no_command_makes_a_new_key_unasked() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let pem = b.ok(&["pubkey"], b"");
    let blob = b.seal("ha/core", b"precious");
    b.ok(&["rotate"], b"");
    lose_blocks(&b, &[1, 2]); // both state slots; the marker stays
    let image = std::fs::read(b.state().join("rpmb.img")).unwrap();
    for args in [&["status"][..], &["init"], &["pubkey"], &["rotate"]] {
        let err = b.run(args, b"").fails_with(STORAGE);
        for want in ["lost", "no new key was made", "restor", "--new-identity"] {
            assert!(
                err.contains(want),
                "teectl {args:?}: {want:?} missing: {err}"
            );
        }
    }
    b.run(&["unseal"], &blob).fails_with(STORAGE);
    assert!(
        std::fs::read(b.state().join("rpmb.img")).unwrap() == image,
        "nothing was written"
    );

    // A new identity only with the explicit confirmation.
    let err = b.run(&["init", "--new-identity"], b"").fails_with(USAGE);
    assert!(err.contains("--yes-destroy-every-sealed-secret"), "{err}");
    assert_eq!(
        b.run(&["init", "--yes-destroy-every-sealed-secret"], b"")
            .code(),
        USAGE
    );
    b.run(&["status"], b"").fails_with(STORAGE);
    let r = b.run(
        &[
            "init",
            "--new-identity",
            "--yes-destroy-every-sealed-secret",
        ],
        b"",
    );
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert!(r.stderr().contains("WARNING"), "{}", r.stderr());
    assert!(String::from_utf8_lossy(r.stdout()).starts_with("new identity"));
    let st = status_json(&b);
    assert_eq!(
        (st["initialised"].clone(), st["epoch"].clone()),
        (true.into(), 1.into())
    );
    assert_ne!(b.ok(&["pubkey"], b""), pem);
    b.run(&["unseal"], &blob).fails_with(REJECTED);
    let fresh = b.seal("ha/core", b"new");
    assert_eq!(b.ok(&["unseal"], &fresh), b"new");
}

#[test]
fn a_new_identity_on_a_working_device_replaces_it() {
    let b = Board::new();
    b.ok(&["init"], b"");
    let pem = b.ok(&["pubkey"], b"");
    let blob = b.seal("ha/core", b"old");
    b.ok(&["rotate"], b"");
    b.ok(
        &[
            "init",
            "--new-identity",
            "--yes-destroy-every-sealed-secret",
        ],
        b"",
    );
    assert_ne!(b.ok(&["pubkey"], b""), pem);
    assert_eq!(status_json(&b)["epoch"], 1);
    b.run(&["unseal"], &blob).fails_with(REJECTED);
    // Plain init on it changes nothing.
    let again = String::from_utf8(b.ok(&["init"], b"")).unwrap();
    assert!(again.contains("already initialised"), "{again}");
}
