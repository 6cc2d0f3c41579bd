//! Recovery end to end on the simulator, two state directories as two
//! boards (issue 10): `reseal` while the old board lives; `recovery-key`,
//! `escrow` and `recover` when it is dead; whole files and directories;
//! wrong keys, tampered escrows, another board's escrow, retired epochs;
//! and an independent implementation (engine/tests/reference_impl.py) that
//! opens the escrow and the blobs with the recovery private key. No error
//! output ever carries a secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use hakeys_e2e::{run_with_stdin, teectl_bin, Board, Run};

const USAGE: i32 = 2;
const REFUSED: i32 = 4;
const REJECTED: i32 = 5;
const OUTPUT: i32 = 8;

/// Every secret these tests seal; none may appear in any error output.
const SECRETS: &[&[u8]] = &[
    b"mqtt: p@ss\nword \"quoted\" #not-a-comment",
    b"plain-secret-one",
    b"offline-secret-for-a",
    b"p\xc3\xa4ssw\xc3\xb6rd \xf0\x9f\x98\x80",
    b"epoch-one-secret",
    b"epoch-two-secret",
    b"epoch-three-secret",
    b"\x00\xffbinary-luks-key\x01\x02\n",
    b"ctl\x00\x1b\x7f\xe2\x80\xa8\xef\xbb\xbf end\t",
];

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Runs and checks of this test: every stderr is checked for secrets.
struct T {
    /// A scratch directory for keys, escrows, files.
    dir: tempfile::TempDir,
    /// Things that must never appear on stderr besides [`SECRETS`] (the
    /// recovery code, private key PEM bodies).
    also_secret: std::cell::RefCell<Vec<String>>,
}

impl T {
    fn new() -> T {
        T {
            dir: tempfile::tempdir().expect("tempdir"),
            also_secret: Default::default(),
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn check(&self, r: &Run) {
        let err = r.stderr();
        for s in SECRETS {
            let s = String::from_utf8_lossy(s);
            assert!(!err.contains(&*s), "stderr carries a secret: {err}");
        }
        for s in self.also_secret.borrow().iter() {
            assert!(
                !err.contains(s.as_str()),
                "stderr carries key material: {err}"
            );
        }
    }

    /// `teectl` on `board`.
    fn on(&self, board: &Board, args: &[&str], stdin: &[u8]) -> Run {
        let r = board.run(args, stdin);
        self.check(&r);
        r
    }

    /// `teectl` with no key engine: its --state-dir names a directory that
    /// must not come to exist.
    fn offline(&self, args: &[&str], stdin: &[u8]) -> Run {
        let none = self.dir.path().join("no-state");
        let mut c = Command::new(teectl_bin());
        c.args(["--state-dir", path(&none)])
            .args(args)
            .env_remove("TEECTL_STATE_DIR");
        let r = Run(run_with_stdin(&mut c, stdin), args.join(" "));
        assert!(!none.exists(), "teectl {args:?} touched simulator state");
        self.check(&r);
        r
    }

    fn ok_offline(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        self.offline(args, stdin).success()
    }

    /// A recovery key made by `teectl recovery-key new` in `name`; returns
    /// the directory and the printed recovery code.
    fn recovery_key(&self, name: &str) -> (PathBuf, String) {
        let dir = self.p(name);
        let out =
            String::from_utf8(self.ok_offline(&["recovery-key", "new", "--out", path(&dir)], b""))
                .expect("UTF-8");
        let code = out
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 63 && l.matches('-').count() == 7)
            .unwrap_or_else(|| panic!("no recovery code in {out}"))
            .to_string();
        let pem = std::fs::read_to_string(dir.join("recovery-key.pem")).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        self.also_secret.borrow_mut().extend([code.clone(), body]);
        (dir, code)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.p(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `teectl reseal --to <to> ARGS` on `board`, nothing on stdin.
    fn reseal(&self, board: &Board, to: &Path, args: &[&str]) -> Run {
        self.on(
            board,
            &[&["reseal", "--to", path(to)][..], args].concat(),
            b"",
        )
    }

    /// `teectl recover --escrow <escrow> --key <key> ARGS` offline.
    fn recover(&self, escrow: &Path, key: &Path, args: &[&str], stdin: &[u8]) -> Run {
        let base = ["recover", "--escrow", path(escrow), "--key", path(key)];
        self.offline(&[&base[..], args].concat(), stdin)
    }

    /// `board`'s escrow to the recovery key in `k`, in escrow.txt.
    fn escrow(&self, board: &Board, k: &Path) -> PathBuf {
        let pem = k.join("recovery.pem");
        self.write(
            "escrow.txt",
            &self
                .on(board, &["escrow", "--to", path(&pem)], b"")
                .success(),
        )
    }

    /// `board`'s public key in a file.
    fn pubkey(&self, board: &Board, name: &str) -> PathBuf {
        self.write(name, &board.ok(&["pubkey"], b""))
    }
}

/// Unseal `blob` on `board` in a boot of its own, so that boot/ secrets
/// open whatever was unsealed before (the first unseal outside boot/ ends
/// a boot phase). A moved boot/ secret arrives sealed offline, which the
/// board refuses until its owner imports it (`rewrap --import-offline`):
/// that refusal is checked, then the import done, as the owner would.
fn unseal_fresh_boot(board: &Board, blob: &[u8]) -> Vec<u8> {
    static BOOT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BOOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut c = board.command(&["unseal"]);
    c.env("HAKEYS_SIM_BOOT_ID", format!("{}-fresh-{n}", board.boot_id));
    let r = Run(run_with_stdin(&mut c, blob), "unseal".into());
    if r.code() != REFUSED {
        return r.success();
    }
    assert!(r.stderr().contains("sealed offline"), "{}", r.stderr());
    let imported = board.ok(&["rewrap", "--import-offline"], blob);
    let mut c = board.command(&["unseal"]);
    c.env(
        "HAKEYS_SIM_BOOT_ID",
        format!("{}-fresh-{n}-imported", board.boot_id),
    );
    Run(run_with_stdin(&mut c, &imported), "unseal".into()).success()
}

fn initialised() -> Board {
    let b = Board::new();
    b.ok(&["init"], b"");
    b
}

/// Run the reference implementation (`engine/tests/reference_impl.py`).
fn reference(args: &[&str]) -> std::process::Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/reference_impl.py"
    );
    let python = std::env::var("HAKEYS_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with `cryptography` is required (cargo xtask deps installs it)")
}

fn reference_ok(args: &[&str]) -> String {
    let out = reference(args);
    assert!(
        out.status.success(),
        "reference_impl.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn has(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------- reseal

#[test]
fn reseal_moves_secrets_to_another_board_while_the_old_one_lives() {
    let t = T::new();
    let a = initialised();
    let b = initialised();
    let b_pem = t.pubkey(&b, "b.pem");
    let a_pem = t.pubkey(&a, "a.pem");
    let ha = a.seal("ha/core", SECRETS[0]);
    let luks = a.seal("boot/luks-data", SECRETS[7]);
    let offline = t.ok_offline(
        &["seal", "-n", "addon/mosquitto", "--to", path(&a_pem)],
        SECRETS[2],
    );

    let to_b = |blob: &[u8], extra: &[&str]| {
        let mut args = vec!["reseal", "--to", path(&b_pem)];
        args.extend_from_slice(extra);
        t.on(&a, &args, blob)
    };
    // boot/ only when asked; while the boot phase lasts it moves.
    let err = to_b(&luks, &[]).fails_with(REFUSED);
    assert!(err.contains("--allow-boot"), "{err}");
    let moved = to_b(&luks, &["--allow-boot"]).success();
    assert!(moved.starts_with(b"hakeys:v1:") && moved.ends_with(b"\n"));
    // It arrives sealed offline: B refuses it in boot/ until imported.
    b.run(&["unseal"], &moved).fails_with(REFUSED);
    let imported = b.ok(&["rewrap", "--import-offline"], &moved);
    assert_eq!(b.ok(&["unseal"], &imported), SECRETS[7]);
    for (blob, secret) in [(&ha, SECRETS[0]), (&offline, SECRETS[2])] {
        let moved = to_b(blob, &[]).success();
        assert_eq!(b.ok(&["unseal"], &moved), secret);
        // It is B's now: A does not open it.
        t.on(&a, &["unseal"], &moved).fails_with(REJECTED);
    }
    // After boot-done the boot key stays where it is.
    a.ok(&["boot-done"], b"");
    let err = to_b(&luks, &["--allow-boot"]).fails_with(REFUSED);
    assert!(err.contains("boot phase"), "{err}");
    // Blobs A cannot open, and damaged ones.
    let foreign = b.seal("ha/core", SECRETS[1]);
    to_b(&foreign, &[]).fails_with(REJECTED);
    to_b(b"hakeys:v1:AAAA", &[]).fails_with(REJECTED);
    // A target that is not a public key.
    let junk = t.write("junk.pem", b"not a key");
    t.on(&a, &["reseal", "--to", path(&junk)], &ha)
        .fails_with(USAGE);
    // The daemon does not offer reseal or escrow.
    let err = t
        .on(&a, &["--via-daemon", "reseal", "--to", path(&b_pem)], &ha)
        .fails_with(USAGE);
    assert!(err.contains("daemon offers only"), "{err}");
    t.on(&a, &["--via-daemon", "escrow", "--to", path(&b_pem)], b"")
        .fails_with(USAGE);
}

// ---------------------------------------------------------------- escrow and recover

#[test]
fn a_dead_board_is_recovered_from_its_escrow_alone() {
    let t = T::new();
    let (keys, code) = t.recovery_key("keys");
    let key = keys.join("recovery-key.pem");
    let public = keys.join("recovery.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let a = initialised();
    let b = initialised();
    let b_pem = t.pubkey(&b, "b.pem");
    let a_pem = t.pubkey(&a, "a.pem");
    let init = String::from_utf8(a.ok(&["init"], b"")).unwrap();
    assert!(
        init.contains("NO ESCROW") && init.contains("teectl escrow --to"),
        "{init}"
    );

    let escrow = t.on(&a, &["escrow", "--to", path(&public)], b"").success();
    let line = String::from_utf8(escrow.clone()).unwrap();
    assert!(
        line.starts_with("hakeys-escrow:v1:") && line.ends_with('\n') && line.lines().count() == 1
    );
    let escrow_file = t.write("escrow.txt", &escrow);
    let fp = reference_ok(&["fingerprint", path(&public)]);
    let init = String::from_utf8(a.ok(&["init"], b"")).unwrap();
    assert!(init.contains(&format!("recovery key {fp}")), "{init}");

    // Secrets of every kind, sealed before and after a rotation (the
    // escrow need not be refreshed: every epoch derives from its root key).
    let mut blobs = vec![
        (a.seal("ha/core", SECRETS[0]), SECRETS[0]),
        (a.seal("boot/luks-data", SECRETS[7]), SECRETS[7]),
        (
            t.ok_offline(
                &["seal", "-n", "addon/mosquitto", "--to", path(&a_pem)],
                SECRETS[2],
            ),
            SECRETS[2],
        ),
    ];
    a.ok(&["rotate"], b"");
    blobs.push((a.seal("ha/core", SECRETS[3]), SECRETS[3]));

    // The board dies.
    std::fs::remove_dir_all(a.state()).unwrap();
    t.on(&a, &["unseal"], &blobs[0].0).fails_with(3);

    let code_file = t.write("code.txt", format!("{code}\n").as_bytes());
    for (blob, secret) in &blobs {
        for k in [&key, &code_file] {
            let moved = t
                .recover(&escrow_file, k, &["--to", path(&b_pem)], blob)
                .success();
            assert!(moved.starts_with(b"hakeys:v1:"));
            assert_eq!(unseal_fresh_boot(&b, &moved), *secret);
            let plain = t.recover(&escrow_file, k, &["--plaintext"], blob).success();
            assert_eq!(&plain, secret, "byte-exact");
        }
        // The independent implementation opens the escrow and the blob with
        // the recovery private key, and reads the recovery code.
        let blob_file = t.write("blob.txt", blob);
        for k in [&key, &code_file] {
            assert_eq!(
                reference_ok(&["recover", path(k), path(&escrow_file), path(&blob_file)]),
                hex(secret)
            );
        }
    }
    let opened = reference_ok(&["open-escrow", path(&key), path(&escrow_file)]);
    let a_sec1 = pem_to_sec1(&std::fs::read_to_string(&a_pem).unwrap());
    assert_eq!(opened, format!("1 1 {}", hex(&a_sec1)));
    assert_eq!(reference_ok(&["recovery-code", path(&key)]), code);
}

#[test]
fn recovery_keys_are_standard_pem_and_never_replaced() {
    let t = T::new();
    let (keys, code) = t.recovery_key("keys");
    let key = keys.join("recovery-key.pem");
    let public = keys.join("recovery.pem");
    let pem_before = std::fs::read(&key).unwrap();
    // Never over an existing key: exit 8, nothing touched.
    let err = t
        .offline(&["recovery-key", "new", "--out", path(&keys)], b"")
        .fails_with(OUTPUT);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), pem_before);
    std::fs::remove_file(&public).unwrap();
    t.offline(&["recovery-key", "new", "--out", path(&keys)], b"")
        .fails_with(OUTPUT);
    assert!(!public.exists(), "no half key pair");
    assert_eq!(std::fs::read(&key).unwrap(), pem_before);

    // OpenSSL's library (through Python's `cryptography`) reads the private
    // key, derives exactly recovery.pem from it; a key it generates works
    // with teectl; and the `openssl` tool agrees where it is installed.
    let (keys, _) = t.recovery_key("keys2");
    let key = keys.join("recovery-key.pem");
    let public = std::fs::read_to_string(keys.join("recovery.pem")).unwrap();
    let derived = Command::new(std::env::var("HAKEYS_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args([
            "-c",
            "import sys; from cryptography.hazmat.primitives import serialization as s; \
             k = s.load_pem_private_key(open(sys.argv[1], 'rb').read(), None); \
             sys.stdout.write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode())",
            path(&key),
        ])
        .output()
        .unwrap();
    assert!(derived.status.success());
    assert_eq!(String::from_utf8(derived.stdout).unwrap(), public);
    let made = t.p("python-key.pem");
    let gen = Command::new(std::env::var("HAKEYS_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args([
            "-c",
            "import sys; from cryptography.hazmat.primitives import serialization as s; \
             from cryptography.hazmat.primitives.asymmetric import ec; \
             k = ec.generate_private_key(ec.SECP256R1()); \
             open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())); \
             open(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))",
            path(&made),
            path(&t.p("python-key.pub.pem")),
        ])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let mut pairs = vec![(made, t.p("python-key.pub.pem"))];
    if has("openssl", &["version"]) {
        let out = Command::new("openssl")
            .args(["pkey", "-in", path(&key), "-pubout"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            public,
            "openssl pkey -pubout"
        );
        let gen = t.p("openssl-key.pem");
        assert!(has(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                path(&gen)
            ]
        ));
        let pubout = t.p("openssl-key.pub.pem");
        assert!(has(
            "openssl",
            &["pkey", "-in", path(&gen), "-pubout", "-out", path(&pubout)]
        ));
        pairs.push((gen, pubout));
        // The SEC1 form (`openssl ec`) is read too.
        let sec1 = t.p("openssl-sec1.pem");
        assert!(has(
            "openssl",
            &["ec", "-in", path(&key), "-out", path(&sec1)]
        ));
        pairs.push((sec1, keys.join("recovery.pem")));
    } else {
        eprintln!(
            "note: no `openssl` tool here; checked through Python's cryptography (OpenSSL) only"
        );
    }
    for (i, (private, public)) in pairs.iter().enumerate() {
        let a = initialised();
        let escrow = t.on(&a, &["escrow", "--to", path(public)], b"").success();
        let escrow_file = t.write(&format!("escrow-{i}.txt"), &escrow);
        let blob = a.seal("ha/core", SECRETS[1]);
        let plain = t
            .recover(&escrow_file, private, &["--plaintext"], &blob)
            .success();
        assert_eq!(plain, SECRETS[1], "key {}", private.display());
    }
    // The code of the first key, typed loosely, still works; a typo does not.
    let loose = t.write(
        "loose.txt",
        code.to_uppercase().replace('-', " ").as_bytes(),
    );
    let mut typo = code.clone().into_bytes();
    typo[9] = if typo[9] == b'z' { b'y' } else { b'z' };
    let typo = t.write("typo.txt", &typo);
    for (k, want) in [(&loose, 0), (&typo, USAGE)] {
        let r = t.recover(Path::new("/dev/null"), k, &["--plaintext"], b"");
        if want == 0 {
            // The key reads; the (empty) escrow is what fails.
            assert_eq!(r.code(), REJECTED, "{}", r.stderr());
        } else {
            let err = r.fails_with(USAGE);
            assert!(err.contains("mistyped"), "{err}");
        }
    }
}

#[test]
fn wrong_keys_tampered_escrows_and_other_boards_are_refused() {
    let t = T::new();
    let (k1, _) = t.recovery_key("k1");
    let (k2, _) = t.recovery_key("k2");
    let a = initialised();
    let b = initialised();
    let escrow_a = t.write(
        "a.txt",
        &t.on(&a, &["escrow", "--to", path(&k1.join("recovery.pem"))], b"")
            .success(),
    );
    let escrow_b = t.write(
        "b.txt",
        &t.on(&b, &["escrow", "--to", path(&k1.join("recovery.pem"))], b"")
            .success(),
    );
    let blob = a.seal("ha/core", SECRETS[1]);
    let recover =
        |escrow: &Path, key: &Path, stdin: &[u8]| t.recover(escrow, key, &["--plaintext"], stdin);
    let key1 = k1.join("recovery-key.pem");
    assert_eq!(recover(&escrow_a, &key1, &blob).success(), SECRETS[1]);

    // Another recovery key: both fingerprints named.
    let err = recover(&escrow_a, &k2.join("recovery-key.pem"), &blob).fails_with(REJECTED);
    assert!(
        err.contains("another recovery key") || err.contains("made for recovery key"),
        "{err}"
    );
    // The public key where the private one belongs.
    let err = recover(&escrow_a, &k1.join("recovery.pem"), &blob).fails_with(USAGE);
    assert!(err.contains("public key"), "{err}");
    // Another board's escrow: the blob does not open.
    let err = recover(&escrow_b, &key1, &blob).fails_with(REJECTED);
    assert!(err.contains("another board"), "{err}");
    // Every tampered character of the escrow line is refused.
    let line = std::fs::read_to_string(&escrow_a).unwrap();
    let prefix = "hakeys-escrow:v1:".len();
    for i in (prefix..line.trim_end().len()).step_by(7) {
        let mut t2 = line.clone().into_bytes();
        t2[i] = if t2[i] == b'A' { b'B' } else { b'A' };
        let f = t.write("tampered.txt", &t2);
        let r = recover(&f, &key1, &blob);
        assert_eq!(r.code(), REJECTED, "char {i}: {}", r.stderr());
    }
    // Not an escrow at all, and a blob where the escrow belongs.
    let blob_file = t.write("blob.txt", &blob);
    recover(&blob_file, &key1, &blob).fails_with(REJECTED);
    // A tampered blob.
    let mut bad = blob.clone();
    bad[20] = if bad[20] == b'A' { b'B' } else { b'A' };
    recover(&escrow_a, &key1, &bad).fails_with(REJECTED);
    // Flags that do not go together, missing files.
    let r = t.recover(&escrow_a, &key1, &[], &blob);
    assert_eq!(r.code(), USAGE, "neither --to nor --plaintext");
    assert!(r.stdout().is_empty());
    let r = t.recover(
        &escrow_a,
        &key1,
        &["--plaintext", "--to", path(&key1)],
        &blob,
    );
    assert_eq!(r.code(), USAGE, "both --to and --plaintext");
    t.recover(Path::new("/nonexistent"), &key1, &["--plaintext"], &blob)
        .fails_with(USAGE);
    t.recover(
        &escrow_a,
        Path::new("/nonexistent"),
        &["--plaintext"],
        &blob,
    )
    .fails_with(USAGE);
}

#[test]
fn the_recovery_key_is_enrolled_once_and_replaced_only_in_the_boot_phase() {
    let t = T::new();
    let (k1, _) = t.recovery_key("k1");
    let (k2, _) = t.recovery_key("k2");
    let (p1, p2) = (k1.join("recovery.pem"), k2.join("recovery.pem"));
    let mut a = initialised();
    t.on(&a, &["escrow", "--to", path(&p1)], b"").success();
    // The boot phase ends (the first unseal outside boot/).
    let blob = a.seal("ha/core", SECRETS[1]);
    a.ok(&["unseal"], &blob);
    let err = t
        .on(&a, &["escrow", "--to", path(&p2)], b"")
        .fails_with(REFUSED);
    let (f1, f2) = (
        reference_ok(&["fingerprint", path(&p1)]),
        reference_ok(&["fingerprint", path(&p2)]),
    );
    assert!(
        err.contains(&f1) && err.contains(&f2) && err.contains("--replace-recovery-key"),
        "{err}"
    );
    let err = t
        .on(
            &a,
            &["escrow", "--to", path(&p2), "--replace-recovery-key"],
            b"",
        )
        .fails_with(REFUSED);
    assert!(err.contains("boot phase"), "{err}");
    // Again to the enrolled key: fine, any time.
    t.on(&a, &["escrow", "--to", path(&p1)], b"").success();
    // The next boot, before boot-done: replaced.
    a.reboot();
    let x2 = t
        .on(
            &a,
            &["escrow", "--to", path(&p2), "--replace-recovery-key"],
            b"",
        )
        .success();
    let init = String::from_utf8(a.ok(&["init"], b"")).unwrap();
    assert!(init.contains(&f2), "{init}");
    let x2 = t.write("x2.txt", &x2);
    let plain = t
        .recover(&x2, &k2.join("recovery-key.pem"), &["--plaintext"], &blob)
        .success();
    assert_eq!(plain, SECRETS[1]);
    t.on(&a, &["escrow", "--to", path(&p1)], b"")
        .fails_with(REFUSED);
}

#[test]
fn an_escrow_made_before_a_retire_still_opens_the_retired_epoch() {
    let t = T::new();
    let (k, _) = t.recovery_key("k");
    let key = k.join("recovery-key.pem");
    let public = k.join("recovery.pem");
    let a = initialised();
    let e1 = a.seal("ha/core", SECRETS[4]);
    let before = t.write(
        "before.txt",
        &t.on(&a, &["escrow", "--to", path(&public)], b"").success(),
    );
    a.ok(&["rotate"], b"");
    let e2 = a.seal("ha/core", SECRETS[5]);
    a.ok(&["retire", "--below", "2"], b"");
    let after = t.write(
        "after.txt",
        &t.on(&a, &["escrow", "--to", path(&public)], b"").success(),
    );
    a.ok(&["rotate"], b"");
    let e3 = a.seal("ha/core", SECRETS[6]);

    // The board: epoch 1 is retired, for unseal and for reseal.
    t.on(&a, &["unseal"], &e1).fails_with(REFUSED);
    let b = initialised();
    let b_pem = t.pubkey(&b, "b.pem");
    t.on(&a, &["reseal", "--to", path(&b_pem)], &e1)
        .fails_with(REFUSED);

    let open = |escrow: &Path, blob: &[u8]| t.recover(escrow, &key, &["--plaintext"], blob);
    // The escrow made before the retire still opens epoch 1; the one made
    // after refuses it, as the board does.
    assert_eq!(open(&before, &e1).success(), SECRETS[4]);
    let err = open(&after, &e1).fails_with(REFUSED);
    assert!(
        err.contains("retired") && err.contains("before that retire"),
        "{err}"
    );
    // Both open epoch 2, and epoch 3 sealed after both (no refresh needed).
    for x in [&before, &after] {
        assert_eq!(open(x, &e2).success(), SECRETS[5]);
        assert_eq!(open(x, &e3).success(), SECRETS[6]);
    }
    // The reference implementation applies the same floor (exit 4).
    let e1_file = t.write("e1.txt", &e1);
    assert_eq!(
        reference(&["recover", path(&key), path(&after), path(&e1_file)])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        reference_ok(&["recover", path(&key), path(&before), path(&e1_file)]),
        hex(SECRETS[4])
    );
}

// ---------------------------------------------------------------- whole files

/// Everything of `text` but its blobs (each replaced by `BLOB`).
fn skeleton(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8(text.to_vec()).unwrap();
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("hakeys:v1:") {
        out.push_str(&rest[..i]);
        out.push_str("BLOB");
        let tail = &rest[i + 10..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// The blob text lines of `text`, in order.
fn blob_tokens(text: &[u8]) -> Vec<Vec<u8>> {
    let s = String::from_utf8(text.to_vec()).unwrap();
    s.match_indices("hakeys:v1:")
        .map(|(i, _)| {
            let tail = &s[i..];
            let end = 10
                + tail[10..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)))
                    .unwrap_or(tail.len() - 10);
            tail.as_bytes()[..end].to_vec()
        })
        .collect()
}

fn trimmed(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// A sealed secrets.yaml of board `a`, and the secret of each blob in order.
fn secrets_yaml(t: &T, a: &Board) -> (Vec<u8>, Vec<&'static [u8]>) {
    let a_pem = t.pubkey(a, "a-for-yaml.pem");
    let b = |ns: &str, s: &[u8]| trimmed(&a.seal(ns, s));
    let offline =
        trimmed(&t.ok_offline(&["seal", "-n", "addon/x", "--to", path(&a_pem)], SECRETS[2]));
    let text = format!(
        "# Home Assistant secrets, sealed\n\
         mqtt_password: {}   # the broker\r\n\
         \n\
         api_key: '{}'\n\
         unicode: \"{}\"\n\
         control: {}\n\
         plain_value: not a blob # stays\n\
         list:\n  - {}\n",
        b("ha/core", SECRETS[0]),
        b("ha/core", SECRETS[1]),
        b("ha/core", SECRETS[3]),
        b("ha/core", SECRETS[8]),
        offline,
    );
    (
        text.into_bytes(),
        vec![SECRETS[0], SECRETS[1], SECRETS[3], SECRETS[8], SECRETS[2]],
    )
}

#[test]
fn whole_files_convert_every_blob_and_keep_every_other_byte() {
    let t = T::new();
    let (k, _) = t.recovery_key("k");
    let key = k.join("recovery-key.pem");
    let a = initialised();
    let b = initialised();
    let b_pem = t.pubkey(&b, "b.pem");
    let escrow = t.escrow(&a, &k);
    let (text, secrets) = secrets_yaml(&t, &a);
    let input = t.write("secrets.yaml", &text);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o640)).unwrap();

    let opens_on_b = |out: &Path| {
        let got = std::fs::read(out).unwrap();
        assert_eq!(skeleton(&got), skeleton(&text), "every non-blob byte kept");
        let toks = blob_tokens(&got);
        assert_eq!(toks.len(), secrets.len());
        for (tok, s) in toks.iter().zip(&secrets) {
            assert_eq!(b.ok(&["unseal"], tok), *s);
        }
        assert_eq!(
            std::fs::metadata(out).unwrap().permissions().mode() & 0o777,
            0o640,
            "the input's mode"
        );
    };
    // reseal --in/--out on the living board.
    let out = t.p("for-b.yaml");
    let reseal = || {
        let args = ["--in", path(&input), "--out", path(&out)];
        t.reseal(&a, &b_pem, &args)
    };
    assert!(String::from_utf8_lossy(&reseal().success()).contains("5 blobs"));
    opens_on_b(&out);
    // Never over an existing file without --force; with it, replaced.
    let before = std::fs::read(&out).unwrap();
    reseal().fails_with(OUTPUT);
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // recover --to on a dead board's file, in place with --force.
    std::fs::remove_dir_all(a.state()).unwrap();
    let inplace = t.write("inplace.yaml", &text);
    std::fs::set_permissions(&inplace, std::fs::Permissions::from_mode(0o640)).unwrap();
    let recover = |args: &[&str]| t.recover(&escrow, &key, args, b"");
    let to_b = ["--to", path(&b_pem)];
    let to_inplace = [
        &to_b[..],
        &["--in", path(&inplace), "--out", path(&inplace)],
    ]
    .concat();
    recover(&to_inplace).fails_with(OUTPUT);
    recover(&[&to_inplace[..], &["--force"]].concat()).success();
    opens_on_b(&inplace);

    // Plaintext into a file: only when explicitly allowed; mode 0600;
    // every value a YAML double-quoted string.
    let plain = t.p("plain.yaml");
    let err =
        recover(&["--plaintext", "--in", path(&input), "--out", path(&plain)]).fails_with(USAGE);
    assert!(err.contains("--allow-plaintext-files"), "{err}");
    assert!(!plain.exists());
    let allowed = ["--plaintext", "--allow-plaintext-files"];
    recover(&[&allowed[..], &["--in", path(&input), "--out", path(&plain)]].concat()).success();
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let got = String::from_utf8(std::fs::read(&plain).unwrap()).unwrap();
    let want = "# Home Assistant secrets, sealed\n\
         mqtt_password: \"mqtt: p@ss\\nword \\\"quoted\\\" #not-a-comment\"   # the broker\r\n\
         \n\
         api_key: \"plain-secret-one\"\n\
         unicode: \"p\\u00e4ssw\\u00f6rd \\U0001f600\"\n\
         control: \"ctl\\x00\\x1b\\x7f\\u2028\\ufeff end\\t\"\n\
         plain_value: not a blob # stays\n\
         list:\n  - \"offline-secret-for-a\"\n";
    assert_eq!(got, want);
    yaml_reads_back(
        &plain,
        &[
            ("mqtt_password", SECRETS[0]),
            ("api_key", SECRETS[1]),
            ("unicode", SECRETS[3]),
            ("control", SECRETS[8]),
        ],
    );

    // A blob where a plaintext cannot go safely, or a secret that is not
    // text: refused, nothing written, the line named, no content.
    let awkward = t.write(
        "awkward.yaml",
        format!(
            "ok: {}\nnote: \"see {}\"\n",
            trimmed(&blob_tokens(&text)[1]),
            trimmed(&blob_tokens(&text)[1])
        )
        .as_bytes(),
    );
    let out2 = t.p("awkward-plain.yaml");
    let err = recover(
        &[
            &allowed[..],
            &["--in", path(&awkward), "--out", path(&out2)],
        ]
        .concat(),
    )
    .fails_with(USAGE);
    assert!(
        err.contains("line 2") && err.contains("whole YAML value"),
        "{err}"
    );
    assert!(!out2.exists());

    // One bad blob anywhere: nothing written, exit 5, its line named.
    let mut lines: Vec<String> = String::from_utf8(text.clone())
        .unwrap()
        .split('\n')
        .map(String::from)
        .collect();
    lines[3] = lines[3].replacen("hakeys:v1:SE", "hakeys:v1:SF", 1);
    let broken = t.write("broken.yaml", lines.join("\n").as_bytes());
    let out3 = t.p("broken-out.yaml");
    let err = recover(&[&to_b[..], &["--in", path(&broken), "--out", path(&out3)]].concat())
        .fails_with(REJECTED);
    assert!(err.contains("line 4"), "{err}");
    assert!(!out3.exists());
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left");
}

/// PyYAML (what Home Assistant's YAML loader builds on; `cargo xtask deps`
/// installs it) reads `file` and finds `values`.
fn yaml_reads_back(file: &Path, values: &[(&str, &[u8])]) {
    let python = std::env::var("HAKEYS_PYTHON").unwrap_or_else(|_| "python3".into());
    assert!(
        has(&python, &["-c", "import yaml"]),
        "PyYAML is required (python3-yaml; cargo xtask deps installs it)"
    );
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys, yaml; d = yaml.safe_load(open(sys.argv[1], encoding='utf-8')); \
             [sys.stdout.write(k + ' ' + d[k].encode('utf-8').hex() + '\\n') for k in sys.argv[2:]]",
            path(file),
        ])
        .args(values.iter().map(|(k, _)| *k))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let want: String = values
        .iter()
        .map(|(k, v)| format!("{k} {}\n", hex(v)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn directories_of_blob_files_convert_whole() {
    let t = T::new();
    let (k, _) = t.recovery_key("k");
    let key = k.join("recovery-key.pem");
    let a = initialised();
    let b = initialised();
    let b_pem = t.pubkey(&b, "b.pem");
    let escrow = t.escrow(&a, &k);
    let src = t.p("blobs");
    std::fs::create_dir(&src).unwrap();
    let luks = a.seal("boot/luks-data", SECRETS[7]);
    let luks_bin = base64::engine::general_purpose::STANDARD
        .decode(trimmed(&luks).trim_start_matches("hakeys:v1:"))
        .unwrap();
    std::fs::write(src.join("luks-data.blob"), &luks_bin).unwrap();
    std::fs::write(src.join("mqtt.blob"), a.seal("ha/core", SECRETS[0])).unwrap();
    std::fs::write(src.join("notes.txt"), b"not a blob file").unwrap();
    std::fs::write(src.join(".hidden.blob"), b"ignored").unwrap();

    // reseal --dir (boot/ needs --allow-boot: without it nothing is written).
    let out = t.p("for-b");
    let reseal = |extra: &[&str]| {
        let dir = ["--dir", path(&src), "--out", path(&out)];
        t.reseal(&a, &b_pem, &[extra, &dir].concat())
    };
    reseal(&[]).fails_with(REFUSED);
    assert!(!out.exists());
    reseal(&["--allow-boot"]).success();
    let check_b = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["luks-data.blob", "mqtt.blob"]);
        let bin = std::fs::read(dir.join("luks-data.blob")).unwrap();
        assert!(bin.starts_with(b"HKSB"), "binary stays binary");
        assert_eq!(unseal_fresh_boot(&b, &bin), SECRETS[7]);
        let text = std::fs::read(dir.join("mqtt.blob")).unwrap();
        assert!(text.starts_with(b"hakeys:v1:") && text.ends_with(b"\n"));
        assert_eq!(b.ok(&["unseal"], &text), SECRETS[0]);
    };
    check_b(&out);
    reseal(&["--allow-boot"]).fails_with(OUTPUT);

    // The board dies: recover the directory to B, and as plaintext files.
    std::fs::remove_dir_all(a.state()).unwrap();
    // `recover` of the directory `src` into `out`, with `extra` before.
    let recover = |extra: &[&str], out: &Path| {
        let dir = ["--dir", path(&src), "--out", path(out)];
        t.recover(&escrow, &key, &[extra, &dir].concat(), b"")
    };
    let to_b = ["--to", path(&b_pem)];
    let out2 = t.p("recovered");
    recover(&to_b, &out2).success();
    check_b(&out2);
    let plain = t.p("plain");
    recover(&["--plaintext"], &plain).fails_with(USAGE);
    recover(&["--plaintext", "--allow-plaintext-files"], &plain).success();
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (name, secret) in [("luks-data", SECRETS[7]), ("mqtt", SECRETS[0])] {
        let p = plain.join(name);
        assert_eq!(std::fs::read(&p).unwrap(), secret, "byte-exact, binary too");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // --force into the existing directory replaces its files.
    let dir = ["--dir", path(&src), "--out", path(&out2), "--force"];
    t.recover(&escrow, &key, &[&to_b[..], &dir].concat(), b"")
        .success();
    check_b(&out2);
    // A damaged .blob file: nothing written.
    std::fs::write(src.join("zz-damaged.blob"), b"hakeys:v1:SEtTQgEBAAAA\n").unwrap();
    let out3 = t.p("never");
    let err = recover(&to_b, &out3).fails_with(REJECTED);
    assert!(err.contains("zz-damaged.blob"), "{err}");
    assert!(!out3.exists());
}

#[test]
fn recover_waits_for_a_slowly_typed_code_whatever_the_engine_timeout() {
    let t = T::new();
    let (k, code) = t.recovery_key("k");
    let a = initialised();
    let escrow = t.escrow(&a, &k);
    let blob = a.seal("ha/core", SECRETS[1]);
    // A pipe that gets the code only after the engine timeout has passed.
    let fifo = t.p("code.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(2500));
            std::fs::write(&fifo, format!("{code}\n")).unwrap();
        })
    };
    let r = t.offline(
        &[
            "--timeout",
            "1",
            "recover",
            "--escrow",
            path(&escrow),
            "--key",
            path(&fifo),
            "--plaintext",
        ],
        &blob,
    );
    writer.join().unwrap();
    assert_eq!(r.success(), SECRETS[1]);
}

#[test]
fn a_v1_state_directory_escrows_and_recovers() {
    let t = T::new();
    let (k, _) = t.recovery_key("k");
    let (board, blobs) = Board::from_v1_fixture();
    let escrow = t.escrow(&board, &k);
    std::fs::remove_dir_all(board.state()).unwrap();
    for v in &blobs {
        let plain = t
            .recover(
                &escrow,
                &k.join("recovery-key.pem"),
                &["--plaintext"],
                &v.blob,
            )
            .success();
        assert_eq!(plain, v.secret, "{}", v.namespace);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The uncompressed point inside a P-256 SubjectPublicKeyInfo PEM (its last
/// 65 bytes).
fn pem_to_sec1(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    der[der.len() - 65..].to_vec()
}
