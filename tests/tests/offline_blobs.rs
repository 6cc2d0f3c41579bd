//! Issue 13 through `teectl`, as a user drives it: blobs sealed offline to a
//! board's public key are refused in `boot/` and imported deliberately;
//! `unseal --json` says which kind it opened; offline blobs carry a
//! generation that `retire` ends, and the unmarked ones keep opening until
//! `retire --unmarked-offline`; `teectl` cannot leave a core dump.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hakeys_e2e::Board;

const USAGE: i32 = 2;
const REFUSED: i32 = 4;

/// Seal `secret` offline (a laptop: no state) to the key file `pem`.
fn seal_offline(laptop: &Board, pem: &std::path::Path, ns: &str, secret: &[u8]) -> Vec<u8> {
    let blob = laptop.ok(
        &["seal", "--namespace", ns, "--to", pem.to_str().unwrap()],
        secret,
    );
    assert!(!laptop.state().exists(), "offline sealing made no state");
    blob
}

fn unseal_json(b: &Board, blob: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&b.ok(&["unseal", "--json"], blob)).expect("unseal --json is JSON")
}

/// An initialised board, and a laptop (a board of its own that is never
/// initialised) with the board's `pubkey_command` output in board.pem.
fn board_and_laptop(pubkey_command: &[&str]) -> (Board, Board, std::path::PathBuf) {
    let b = Board::new();
    b.ok(&["init"], b"");
    let laptop = Board::new();
    let pem = laptop.dir.path().join("board.pem");
    std::fs::write(&pem, b.ok(pubkey_command, b"")).unwrap();
    (b, laptop, pem)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn offline_blobs_are_refused_in_boot_and_imported_deliberately() {
    let (b, laptop, pem) = board_and_laptop(&["pubkey"]);

    // An evil maid with the public key plants a data-partition key.
    let planted = seal_offline(&laptop, &pem, "boot/luks-data", b"attacker's key");
    let r = b.run(&["unseal"], &planted);
    r.fails_with(REFUSED);
    assert!(r.stderr().contains("sealed offline"), "{}", r.stderr());
    b.run(&["unseal", "--json"], &planted).fails_with(REFUSED);
    b.run(
        &["reseal", "--to", pem.to_str().unwrap(), "--allow-boot"],
        &planted,
    )
    .fails_with(REFUSED);
    // rewrap would launder it into a device blob: only when asked for.
    let r = b.run(&["rewrap"], &planted);
    r.fails_with(REFUSED);
    assert!(r.stderr().contains("--import-offline"), "{}", r.stderr());
    let imported = b.ok(&["rewrap", "--import-offline"], &planted);
    let j = unseal_json(&b, &imported);
    assert_eq!(
        (
            j["namespace"].as_str(),
            j["kind"].as_str(),
            j["epoch"].as_u64()
        ),
        (Some("boot/luks-data"), Some("device"), Some(1))
    );
    assert_eq!(b.ok(&["unseal"], &imported), b"attacker's key");

    // Elsewhere offline blobs open as before, and --json says what they are.
    let offline = seal_offline(&laptop, &pem, "addon/mosquitto", b"mqtt");
    assert_eq!(b.ok(&["unseal"], &offline), b"mqtt");
    let j = unseal_json(&b, &offline);
    assert_eq!(
        j,
        serde_json::json!({
            "namespace": "addon/mosquitto",
            "kind": "offline",
            "epoch": 0,
            "plaintext": b64(b"mqtt"),
        })
    );
    let device = b.seal("ha/core", b"\x00binary\xff");
    let j = unseal_json(&b, &device);
    assert_eq!(
        j,
        serde_json::json!({
            "namespace": "ha/core",
            "kind": "device",
            "epoch": 1,
            "plaintext": b64(b"\x00binary\xff"),
        })
    );
    // --device-only refuses the offline one, with or without --json.
    b.run(&["unseal", "--device-only"], &offline)
        .fails_with(REFUSED);
    b.run(&["unseal", "--device-only", "--json"], &offline)
        .fails_with(REFUSED);
    assert_eq!(
        b.ok(&["unseal", "--device-only"], &device),
        b"\x00binary\xff"
    );
    // A rewrap outside boot/ needs no flag (as before).
    let rewrapped = b.ok(&["rewrap"], &offline);
    assert_eq!(unseal_json(&b, &rewrapped)["kind"], "device");
}

#[test]
fn offline_blobs_carry_a_generation_that_retire_ends() {
    let (b, laptop, bare) = board_and_laptop(&["pubkey"]);
    // Sealed today (a bare PEM): unmarked.
    let unmarked = seal_offline(&laptop, &bare, "ha/core", b"unmarked");
    assert_eq!(unseal_json(&b, &unmarked)["epoch"], 0);

    // The sealing key file names the board's epoch; blobs carry it.
    let file1 = laptop.dir.path().join("board-e1.pem");
    let text = b.ok(&["pubkey", "--with-epoch"], b"");
    assert!(text.starts_with(b"hakeys-sealing-epoch: 1\n-----BEGIN PUBLIC KEY-----"));
    std::fs::write(&file1, &text).unwrap();
    let gen1 = seal_offline(&laptop, &file1, "ha/core", b"generation one");
    assert_eq!(unseal_json(&b, &gen1)["epoch"], 1);

    b.ok(&["rotate"], b"");
    let file2 = laptop.dir.path().join("board-e2.pem");
    std::fs::write(&file2, b.ok(&["pubkey", "--with-epoch"], b"")).unwrap();
    let gen2 = seal_offline(&laptop, &file2, "ha/core", b"generation two");
    b.ok(&["retire", "--below", "2"], b"");
    // A leaked blob of a retired generation no longer opens; the rest do.
    b.run(&["unseal"], &gen1).fails_with(REFUSED);
    assert_eq!(b.ok(&["unseal"], &gen2), b"generation two");
    assert_eq!(b.ok(&["unseal"], &unmarked), b"unmarked");

    // The owner ends the unmarked ones when ready (rewrap what is wanted first).
    let kept = b.ok(&["rewrap"], &unmarked);
    let out = b.ok(&["retire", "--unmarked-offline"], b"");
    assert!(String::from_utf8_lossy(&out).contains("unmarked"));
    b.run(&["unseal"], &unmarked).fails_with(REFUSED);
    assert_eq!(b.ok(&["unseal"], &kept), b"unmarked");
    assert_eq!(b.ok(&["unseal"], &gen2), b"generation two");
    // Both at once, and neither: usage.
    b.ok(&["rotate"], b"");
    b.ok(&["retire", "--below", "3", "--unmarked-offline"], b"");
    b.run(&["unseal"], &gen2).fails_with(REFUSED);
    // (clap's own usage message, several lines.)
    assert_eq!(b.run(&["retire"], b"").code(), USAGE);
    // A sealing key file whose epoch line is mistyped is refused, never
    // taken for a bare key.
    let bad = laptop.dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        String::from_utf8(text)
            .unwrap()
            .replace("hakeys-sealing-epoch: 1", "hakeys-sealing-epoch 1"),
    )
    .unwrap();
    laptop
        .run(
            &[
                "seal",
                "--namespace",
                "ha/core",
                "--to",
                bad.to_str().unwrap(),
            ],
            b"x",
        )
        .fails_with(USAGE);
}

/// The owner of `/proc/PID/status`: the process's uid while it is
/// dumpable, root's once it is not (proc(5)).
fn proc_owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .ok()
        .map(|m| m.uid())
}

#[test]
fn teectl_forbids_core_dumps_before_reading_anything() {
    // Run teectl as a user other than root, blocked reading the secret on
    // stdin; a process that is not dumpable has its /proc files owned by
    // root, whoever runs it.
    let board = Board::new();
    board.ok(&["init"], b"");
    let b = Board::new();
    let key = b.dir.path().join("key.pem");
    std::fs::write(&key, board.ok(&["pubkey"], b"")).unwrap();
    let mut perms = std::fs::metadata(b.dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(b.dir.path(), perms).unwrap();
    let mut cmd = b.command(&[
        "seal",
        "--namespace",
        "ha/core",
        "--to",
        key.to_str().unwrap(),
    ]);
    let me = rustix::process::getuid().as_raw();
    let runs_as = if me == 0 {
        cmd.uid(65534).gid(65534);
        65534
    } else {
        me
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run teectl");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut owner = proc_owner(pid);
    while owner != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        owner = proc_owner(pid);
    }
    assert_ne!(runs_as, 0);
    assert_eq!(
        owner,
        Some(0),
        "teectl (uid {runs_as}) is still dumpable while it waits for the secret"
    );
    child.stdin.take().unwrap().write_all(b"pw").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"hakeys:v1:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `teectl unseal --json` through the daemon (which reports no kind yet):
/// the kind and epoch come from the header of the very blob the daemon
/// opened, so they are the authenticated ones.
#[test]
fn unseal_json_through_the_daemon_says_which_kind_it_opened() {
    use std::os::unix::fs::PermissionsExt;
    let (b, laptop, pem) = board_and_laptop(&["pubkey", "--with-epoch"]);
    let offline = seal_offline(&laptop, &pem, "ha/core", b"from the laptop");
    let device = b.seal("ha/core", b"from the board");

    // teed on the board's state, a policy that lets this user (whoever
    // runs the tests) unseal ha/*; everything in a directory of its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uid = rustix::process::getuid().as_raw();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[rule]]\nuid = {uid}\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\", \"status\"]\n"
        ),
    )
    .unwrap();
    let socket = run.join("teed.sock");
    let log = std::fs::File::create(dir.path().join("teed.log")).unwrap();
    let mut teed = hakeys_e2e::teed_sim(&b.state(), &socket, &policy, &b.boot_id)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn teed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let log = std::fs::read_to_string(dir.path().join("teed.log")).unwrap_or_default();
        assert!(teed.try_wait().unwrap().is_none(), "teed exited:\n{log}");
        assert!(Instant::now() < deadline, "teed did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let via = |blob: &[u8], extra: &[&str]| {
        let mut c = std::process::Command::new(hakeys_e2e::teectl_bin());
        c.arg("--via-daemon")
            .arg("--socket")
            .arg(&socket)
            .arg("unseal")
            .args(extra);
        hakeys_e2e::Run(hakeys_e2e::run_with_stdin(&mut c, blob), "unseal".into())
    };
    let j: serde_json::Value =
        serde_json::from_slice(&via(&offline, &["--json"]).success()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({
            "namespace": "ha/core",
            "kind": "offline",
            "epoch": 1,
            "plaintext": b64(b"from the laptop"),
        })
    );
    let j: serde_json::Value =
        serde_json::from_slice(&via(&device, &["--json"]).success()).unwrap();
    assert_eq!(
        (j["kind"].as_str(), j["epoch"].as_u64()),
        (Some("device"), Some(1))
    );
    via(&offline, &["--device-only"]).fails_with(REFUSED);
    assert_eq!(
        via(&device, &["--device-only"]).success(),
        b"from the board"
    );
    let _ = teed.kill();
    let _ = teed.wait();
}
