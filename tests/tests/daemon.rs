//! The daemon `teed` end to end on the simulator backend: the real `teed`
//! and `teectl` binaries and the Python package `hakeys` (`python/`), with callers run as
//! real, separate users (created here with `useradd` if missing; the tests
//! need root, as in CI, and say so and skip otherwise).
//!
//! No test asserts on timings; where something must happen "eventually"
//! (a reload, a lockout ending) the test polls with a generous deadline.

use base64::Engine as _;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hakeys_e2e::output::{fails, ok, stderr};
use hakeys_e2e::{teectl_bin, teed_bin, teed_sim};
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
const USAGE: i32 = 2;
const REFUSED: i32 = 4;
const REJECTED: i32 = 5;
const UNAVAILABLE: i32 = 7;

// ---------------------------------------------------------------- users --

#[derive(Clone, Debug)]
struct User {
    uid: u32,
    gid: u32,
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A system user for the tests, created once if missing (idempotent; kept
/// for later runs: users are not files, and other test binaries may run
/// concurrently).
fn user(name: &str) -> User {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if id_of(name, "-u").is_none() {
        let st = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group", "--shell"])
            .arg("/usr/sbin/nologin")
            .arg(name)
            .status()
            .expect("run useradd");
        // 9: the user exists (created by a concurrent run).
        assert!(
            st.success() || st.code() == Some(9),
            "useradd {name} failed: {st}"
        );
    }
    User {
        uid: id_of(name, "-u").expect("uid"),
        gid: id_of(name, "-g").expect("gid"),
    }
}

struct Users {
    ha: User,
    addon1: User,
    addon2: User,
    other: User,
}

/// The test users (created if missing).
fn users() -> Users {
    // Not a silent skip: these tests need real users, so they need root.
    assert!(
        is_root(),
        "the daemon tests create users and run callers as them: run them as root (CI does)"
    );
    Users {
        ha: user("hakeys-t-ha"),
        addon1: user("hakeys-t-addon1"),
        addon2: user("hakeys-t-addon2"),
        other: user("hakeys-t-other"),
    }
}

// --------------------------------------------------------------- daemon --

/// `path` if every user can reach and run it, else a copy in `dir` that they can.
fn reachable(path: &Path, dir: &Path) -> PathBuf {
    let open = path.ancestors().skip(1).all(|a| {
        a.as_os_str().is_empty()
            || fs::metadata(a)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
    }) && fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o005 == 0o005)
        .unwrap_or(false);
    if open {
        return path.to_path_buf();
    }
    let copy = dir.join(path.file_name().expect("file name"));
    fs::copy(path, &copy).expect("copy for other users");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// The Python package's source folder (`python/src/hakeys`).
fn python_package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/src/hakeys")
}

/// A copy of the Python package in `dir/hakeys` that every user can read;
/// returns the folder to put on `PYTHONPATH`.
fn reachable_package(dir: &Path) -> PathBuf {
    let to = dir.join("hakeys");
    fs::create_dir(&to).unwrap();
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    for e in fs::read_dir(python_package()).expect("python/src/hakeys") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "py") {
            let copy = to.join(p.file_name().unwrap());
            fs::copy(&p, &copy).unwrap();
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    dir.to_path_buf()
}

/// A simulator board with `teed` serving it.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    teectl: PathBuf,
    /// `PYTHONPATH` for the Python package.
    pythonpath: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn policy_with(rules: &str, limits: &str) -> String {
    format!("version = 1\n{rules}\n[limits]\n{limits}\n")
}

fn rule(uid: u32, namespaces: &[&str], ops: &[&str]) -> String {
    format!(
        "[[rule]]\nuid = {uid}\nnamespaces = {}\noperations = {}\n",
        json!(namespaces),
        json!(ops)
    )
}

const ALL_OPS: [&str; 4] = ["unseal", "seal", "pubkey", "status"];

impl Daemon {
    /// An initialised board, its policy, and teed started on it.
    fn new(policy: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hakeys-teed-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.path().join("run")).unwrap();
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let teectl = reachable(teectl_bin(), &bin);
        let pythonpath = reachable_package(&bin);
        let mut d = Daemon {
            dir,
            child: None,
            teectl,
            pythonpath,
        };
        d.set_policy(policy);
        let init = d.direct(&["init"], b"");
        assert!(init.status.success(), "init: {}", stderr(&init));
        d.start();
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
    fn socket(&self) -> PathBuf {
        self.path("run/teed.sock")
    }
    fn policy(&self) -> PathBuf {
        self.path("policy.toml")
    }

    fn set_policy(&self, text: &str) {
        // Written to a temporary file and renamed, as an editor or a
        // configuration tool would.
        let tmp = self.path("policy.toml.new");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.policy()).unwrap();
    }

    /// `teectl` on the engine directly, as root (teed must not be running).
    fn direct(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(
            Command::new(teectl_bin())
                .args(["--backend", "sim", "--state-dir"])
                .arg(self.state())
                .args(args)
                .env("HAKEYS_SIM_BOOT_ID", "boot-1")
                .env_remove("TEECTL_STATE_DIR")
                .env_remove("HAKEYS_SOCKET"),
            stdin,
        )
    }

    fn teed_command(&self) -> Command {
        teed_sim(&self.state(), &self.socket(), &self.policy(), "boot-1")
    }

    fn log_file(&self) -> fs::File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("teed.log"))
            .unwrap()
    }

    fn start(&mut self) {
        let log = self.log_file();
        let child = self
            .teed_command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn teed");
        self.child = Some(child);
        self.wait_serving();
    }

    fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("teed exited ({st}) while starting:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "teed did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("teed running").id()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn still_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("teed.log")).unwrap_or_default()
    }

    /// Send SIGHUP and wait for teed to say what it made of the policy.
    fn reload(&self) -> String {
        let before = self.log().matches("teed: policy reload").count();
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .filter(|l| l.starts_with("teed: policy reload"))
                .nth(before)
            {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no reload message:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn conn(&self) -> Conn {
        Conn::new(&self.socket())
    }

    /// `python3 -m hakeys` (the Python package), run as `u`.
    fn py(&self, u: &User, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = self.python_as(u);
        c.arg("--socket").arg(self.socket()).args(args);
        run(&mut c, stdin)
    }

    /// `python3 -m hakeys` from the reachable copy of the package, as `u`,
    /// not yet run.
    fn python_as(&self, u: &User) -> Command {
        let mut c = Command::new(PYTHON);
        as_user(&mut c, u)
            .args(["-m", "hakeys"])
            .env("PYTHONPATH", &self.pythonpath)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        c
    }

    /// `teectl --via-daemon`, run as `u`.
    fn teectl(&self, u: &User, args: &[&str], stdin: &[u8]) -> Output {
        let mut c = Command::new(&self.teectl);
        c.arg("--via-daemon")
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        run(as_user(&mut c, u), stdin)
    }

    /// `/proc/PID/status` field of teed, in its unit (kB for memory).
    fn proc_status(&self, field: &str) -> u64 {
        proc_field(self.pid(), field)
    }
}

fn proc_field(pid: u32, field: &str) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn as_user<'a>(c: &'a mut Command, u: &User) -> &'a mut Command {
    c.uid(u.uid)
        .gid(u.gid)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/")
        .current_dir("/")
}

fn run(c: &mut Command, stdin: &[u8]) -> Output {
    hakeys_e2e::run_with_stdin(c, stdin)
}

/// A raw protocol connection (as root).
struct Conn {
    s: UnixStream,
    r: BufReader<UnixStream>,
}

impl Conn {
    fn new(path: &Path) -> Conn {
        let s = UnixStream::connect(path).expect("connect to teed");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        Conn { s, r }
    }

    /// The next answer line, or `None` at end of stream.
    fn answer(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert!(line.ends_with('\n'), "answer without newline: {line:?}");
                Some(serde_json::from_str(&line).expect("answer is JSON"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }

    fn send(&mut self, line: &[u8]) -> Value {
        self.s.write_all(line).unwrap();
        self.s.write_all(b"\n").unwrap();
        self.answer().expect("an answer")
    }

    fn request(&mut self, v: Value) -> Value {
        self.send(v.to_string().as_bytes())
    }

    /// A request that may find the connection closed (`None`).
    fn try_request(&mut self, v: Value) -> Option<Value> {
        self.s.write_all(format!("{v}\n").as_bytes()).ok()?;
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }

    /// Whether the daemon closed this connection.
    fn closed(&mut self) -> bool {
        self.answer().is_none()
    }
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("?")
}

/// A blob with a valid header whose tag does not verify.
fn forged(blob: &str) -> String {
    let b = blob.trim();
    let i = b.len() - 6;
    let c = if &b[i..=i] == "A" { "B" } else { "A" };
    format!("{}{c}{}", &b[..i], &b[i + 1..])
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------- tests --

/// Home Assistant and root may do everything under `ha/`; `limits` is the
/// `[limits]` table's body.
fn ha_and_root_policy(u: &Users, limits: &str) -> String {
    policy_with(
        &format!(
            "{}{}",
            rule(u.ha.uid, &["ha/*"], &ALL_OPS),
            rule(0, &["ha/*"], &ALL_OPS)
        ),
        limits,
    )
}

fn standard_policy(u: &Users, extra: &str) -> String {
    policy_with(
        &format!(
            "{}{}{extra}\n[addons]\none = {}\ntwo = {}\n",
            rule(u.ha.uid, &["ha/*"], &ALL_OPS),
            rule(0, &["ha/*", "shared/*"], &ALL_OPS),
            u.addon1.uid,
            u.addon2.uid
        ),
        "",
    )
}

#[test]
fn callers_outside_the_policy_are_refused() {
    let u = users();
    let d = Daemon::new(&standard_policy(&u, ""));
    // teed never leaves a core dump: no core size, and not dumpable (a
    // non-dumpable process's /proc entries belong to root whatever its
    // user; teed runs as root here, so the limit is what this can see).
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    let blob = String::from_utf8(ok(d.py(&u.ha, &["seal", "ha/core"], b"ha-secret"))).unwrap();
    assert!(blob.starts_with("hakeys:v1:"));
    // The outsider: every operation refused, by the Python client and by teectl.
    for args in [&["status"][..], &["pubkey"], &["unseal"]] {
        let err = fails(d.py(&u.other, args, blob.as_bytes()), REFUSED);
        assert!(err.contains("denied"), "{err}");
    }
    fails(d.py(&u.other, &["seal", "ha/core"], b"x"), REFUSED);
    for args in [&["status"][..], &["pubkey"], &["unseal"]] {
        let err = fails(d.teectl(&u.other, args, blob.as_bytes()), REFUSED);
        assert!(err.starts_with("teectl: denied"), "{err}");
    }
    fails(
        d.teectl(&u.other, &["seal", "-n", "ha/core"], b"x"),
        REFUSED,
    );
    // An add-on is an outsider to Home Assistant's namespaces.
    fails(d.py(&u.addon1, &["unseal"], blob.as_bytes()), REFUSED);
    // The insider is served.
    assert_eq!(ok(d.py(&u.ha, &["unseal"], blob.as_bytes())), b"ha-secret");
    // Audit: who, what, where, result; never the secret or the blob.
    let log = d.log();
    let denied = format!("uid={} gid={} ", u.other.uid, u.other.gid);
    assert!(
        log.lines()
            .any(|l| l.contains(&denied) && l.contains("op=unseal ns=ha/core result=denied")),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains(&format!("uid={} ", u.ha.uid))
            && l.ends_with("op=unseal ns=ha/core result=ok")));
    assert!(
        !log.contains("ha-secret") && !log.contains(blob.trim()),
        "{log}"
    );
}

#[test]
fn an_addon_cannot_unseal_another_addons_blob() {
    let u = users();
    let mut d = Daemon::new(&standard_policy(&u, ""));
    // A boot secret sealed by a boot unit (directly, before teed started).
    d.kill9();
    let luks = ok(d.direct(&["seal", "-n", "boot/luks-data"], b"luks-key"));
    d.start();

    let one = ok(d.py(&u.addon1, &["seal", "addon/one"], b"mqtt\x00pw\n"));
    let one_db = ok(d.teectl(&u.addon1, &["seal", "-n", "addon/one/db"], b"db-pw"));
    let two = ok(d.teectl(&u.addon2, &["seal", "-n", "addon/two"], b"two-pw"));
    // Each opens its own, byte-exact, with either client.
    assert_eq!(ok(d.py(&u.addon1, &["unseal"], &one)), b"mqtt\x00pw\n");
    assert_eq!(ok(d.teectl(&u.addon1, &["unseal"], &one)), b"mqtt\x00pw\n");
    assert_eq!(ok(d.teectl(&u.addon1, &["unseal"], &one_db)), b"db-pw");
    assert_eq!(
        ok(d.py(&u.addon2, &["unseal", "addon/two"], &two)),
        b"two-pw"
    );
    // Not the other's: denied by policy, whichever namespace it claims.
    for (who, blob) in [(&u.addon2, &one), (&u.addon2, &one_db), (&u.addon1, &two)] {
        let err = fails(d.py(who, &["unseal"], blob), REFUSED);
        assert!(err.contains("denied"), "{err}");
        fails(d.teectl(who, &["unseal"], blob), REFUSED);
    }
    let err = fails(d.py(&u.addon2, &["unseal", "addon/two"], &one), REFUSED);
    assert!(err.contains("another namespace"), "{err}");
    // Nor seal into it, nor into Home Assistant's.
    fails(d.py(&u.addon1, &["seal", "addon/two"], b"x"), REFUSED);
    fails(d.py(&u.addon1, &["seal", "addon/one2"], b"x"), REFUSED);
    fails(d.py(&u.addon1, &["seal", "ha/core"], b"x"), REFUSED);
    // boot/ is nobody's at run time, not even root's.
    for who in [&u.ha, &u.addon1] {
        fails(d.py(who, &["unseal"], &luks), REFUSED);
    }
    let mut root = d.conn();
    let r = root.request(json!({"v":1,"op":"unseal","blob":String::from_utf8_lossy(&luks).trim()}));
    assert_eq!(status_of(&r), "denied", "{r}");
    let r = root.request(json!({"v":1,"op":"seal","namespace":"boot/x","plaintext":"eA=="}));
    assert_eq!(status_of(&r), "denied", "{r}");
    // Tampered blobs of its own namespace are rejected, not leaked.
    let bad = forged(&String::from_utf8_lossy(&one));
    fails(d.py(&u.addon1, &["unseal"], bad.as_bytes()), REJECTED);
    let log = d.log();
    assert!(!log.contains("mqtt") && !log.contains("two-pw"), "{log}");
    assert!(log.contains(&format!("uid={} gid={} ", u.addon2.uid, u.addon2.gid)));
}

#[test]
fn policy_reload_takes_effect_without_dropping_connections() {
    let u = users();
    let base = |addon2: bool| {
        policy_with(
            &format!(
                "{}\n[addons]\none = {}\n{}",
                rule(0, &["shared/*"], &["status", "seal"]),
                u.addon1.uid,
                if addon2 {
                    format!("two = {}\n", u.addon2.uid)
                } else {
                    String::new()
                }
            ),
            "",
        )
    };
    let d = Daemon::new(&base(false));
    let mut root = d.conn();
    assert_eq!(status_of(&root.request(json!({"v":1,"op":"status"}))), "ok");
    fails(d.py(&u.addon2, &["seal", "addon/two"], b"x"), REFUSED);

    // Granted by a reload.
    d.set_policy(&base(true));
    let line = d.reload();
    assert!(line.starts_with("teed: policy reloaded"), "{line}");
    let blob = ok(d.py(&u.addon2, &["seal", "addon/two"], b"after-reload"));
    // The connection opened before the reload is still served, under the new policy.
    assert_eq!(status_of(&root.request(json!({"v":1,"op":"status"}))), "ok");

    // Broken files are refused, with a reason, and the policy in force stays.
    for (broken, reason) in [
        ("version = 1\n[[rule]\n".to_string(), "line"),
        (base(true).replace("shared/*", "boot/*"), "boot"),
        (base(true).replace("\"status\"", "\"rotate\""), "rotate"),
        ("version = 7\n".to_string(), "version"),
    ] {
        d.set_policy(&broken);
        let line = d.reload();
        assert!(line.contains("rejected") && line.contains(reason), "{line}");
        assert_eq!(ok(d.py(&u.addon2, &["unseal"], &blob)), b"after-reload");
        assert_eq!(status_of(&root.request(json!({"v":1,"op":"status"}))), "ok");
    }
    // `teed --check-policy` says the same before anyone reloads.
    let check = Command::new(teed_bin())
        .arg("--check-policy")
        .arg("--policy")
        .arg(d.policy())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(USAGE));
    assert!(stderr(&check).contains("version"));

    // Revoked by a reload.
    d.set_policy(&base(false));
    assert!(d.reload().starts_with("teed: policy reloaded"));
    fails(d.py(&u.addon2, &["unseal"], &blob), REFUSED);
    assert_eq!(status_of(&root.request(json!({"v":1,"op":"status"}))), "ok");
}

#[test]
fn bad_requests_get_errors_and_others_keep_being_served() {
    let u = users();
    let policy = ha_and_root_policy(&u, "request_timeout_ms = 500\nidle_timeout_ms = 60000");
    let mut d = Daemon::new(&policy);
    let secret_blob = ok(d.py(&u.ha, &["seal", "ha/core"], b"still-served"));
    let served = |d: &Daemon| {
        assert_eq!(ok(d.py(&u.ha, &["unseal"], &secret_blob)), b"still-served");
    };

    // Malformed lines: an error each, and the same connection goes on.
    let mut c = d.conn();
    // A good unseal answer says what kind of blob it opened.
    let r =
        c.request(json!({"v":1,"op":"unseal","blob":String::from_utf8_lossy(&secret_blob).trim()}));
    assert_eq!(status_of(&r), "ok", "{r}");
    assert_eq!(
        (r["kind"].as_str(), r["epoch"].as_u64()),
        (Some("device"), Some(1)),
        "{r}"
    );
    for (line, want) in [
        (&b"garbage"[..], "bad_message"),
        (b"", "bad_message"),
        (b"\xff\xfe\x00", "bad_message"),
        (b"[1,2]", "bad_message"),
        (br#"{"v":1}"#, "bad_message"),
        (br#"{"v":2,"op":"status"}"#, "unsupported_version"),
        (br#"{"v":1,"op":"status","extra":true}"#, "bad_message"),
        (br#"{"v":1,"op":"status","v":1}"#, "bad_message"),
        (br#"{"v":1,"op":"nope"}"#, "unknown_opcode"),
        (br#"{"v":1,"op":"rotate"}"#, "denied"),
        (
            br#"{"v":1,"op":"seal","namespace":"../x","plaintext":"eA=="}"#,
            "invalid_namespace",
        ),
        (
            br#"{"v":1,"op":"seal","namespace":"ha/x","plaintext":"%%%"}"#,
            "bad_message",
        ),
        (
            br#"{"v":1,"op":"unseal","blob":"hakeys:v1:AAAA"}"#,
            "blob_rejected",
        ),
        (
            br#"{"v":1,"op":"unseal","blob":"hakeys:v1:AAAA"} trailing"#,
            "bad_message",
        ),
    ] {
        let r = c.send(line);
        assert_eq!(
            status_of(&r),
            want,
            "{}: {r}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(r["v"], 1);
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Pipelined requests in one write are answered in order.
    c.s.write_all(b"{\"v\":1,\"op\":\"status\"}\n{\"v\":1,\"op\":\"pubkey\"}\n")
        .unwrap();
    assert!(c.answer().unwrap()["initialised"] == true);
    assert!(c.answer().unwrap()["pem"]
        .as_str()
        .unwrap()
        .contains("PUBLIC KEY"));
    served(&d);

    // Oversized: an error, then the connection is closed.
    let mut c = d.conn();
    let _ = c.s.write_all(&[b'x'; 20_000]);
    assert_eq!(status_of(&c.answer().unwrap()), "too_large");
    assert!(c.closed());
    let mut c = d.conn();
    let big = format!(r#"{{"v":1,"op":"status","pad":"{}"}}"#, "y".repeat(17_000));
    let _ = c.s.write_all(big.as_bytes());
    let _ = c.s.write_all(b"\n");
    assert_eq!(status_of(&c.answer().unwrap()), "too_large");
    assert!(c.closed());
    served(&d);

    // Truncated: the caller stops sending in the middle of a line.
    let mut c = d.conn();
    c.s.write_all(br#"{"v":1,"op":"sta"#).unwrap();
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.answer().unwrap();
    assert_eq!(status_of(&r), "bad_message");
    assert!(r["message"].as_str().unwrap().contains("truncated"));
    assert!(c.closed());

    // Too slow: half a request, then nothing. Others are served meanwhile.
    let mut slow = d.conn();
    slow.s.write_all(br#"{"v":1,"op":"status""#).unwrap();
    served(&d);
    assert_eq!(status_of(&slow.answer().unwrap()), "timeout");
    assert!(slow.closed());

    served(&d);
    assert!(d.still_running());
    let log = d.log();
    for r in [
        "too_large",
        "timeout",
        "bad_message",
        "unsupported_version",
        "unknown_opcode",
    ] {
        assert!(
            log.contains(&format!("result={r}")),
            "no audit for {r}:\n{log}"
        );
    }
}

#[test]
fn a_caller_that_disconnects_mid_request_costs_nothing() {
    let u = users();
    let policy = ha_and_root_policy(
        &u,
        "max_connections = 8\nmax_connections_per_uid = 4\nrequests_per_second = 100000\nburst = 100000",
    );
    let d = Daemon::new(&policy);
    let blob = ok(d.py(&u.ha, &["seal", "ha/core"], b"x"));
    let blob_text = String::from_utf8(blob.clone()).unwrap();
    let threads_before = d.proc_status("Threads");
    for i in 0..150 {
        let mut s = UnixStream::connect(d.socket()).unwrap();
        match i % 3 {
            // Half a request, then gone.
            0 => {
                let _ = s.write_all(br#"{"v":1,"op":"unseal","blob":"hakeys:v1:"#);
            }
            // A whole request, gone before the answer.
            1 => {
                let _ = s.write_all(
                    format!("{}\n", json!({"v":1,"op":"unseal","blob":blob_text.trim()}))
                        .as_bytes(),
                );
            }
            // Connected, nothing sent.
            _ => {}
        }
        drop(s);
    }
    // Every connection slot comes back: the per-uid maximum (4) can be
    // opened again at once and all are served.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut conns: Vec<Conn> = (0..4).map(|_| d.conn()).collect();
        let answers: Vec<Option<Value>> = conns
            .iter_mut()
            .map(|c| c.try_request(json!({"v":1,"op":"status"})))
            .collect();
        if answers
            .iter()
            .all(|a| a.as_ref().is_some_and(|a| status_of(a) == "ok"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "slots not released: {answers:?}");
        drop(conns);
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the threads that served them are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.proc_status("Threads") > threads_before {
        assert!(
            Instant::now() < deadline,
            "threads: {} before, {} after",
            threads_before,
            d.proc_status("Threads")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A fifth connection of one uid is turned away with a reason; another
    // uid is still served.
    let mut held: Vec<Conn> = (0..4).map(|_| d.conn()).collect();
    for c in held.iter_mut() {
        assert_eq!(status_of(&c.request(json!({"v":1,"op":"status"}))), "ok");
    }
    let mut fifth = d.conn();
    assert_eq!(status_of(&fifth.answer().unwrap()), "rate_limited");
    assert_eq!(ok(d.py(&u.ha, &["unseal"], &blob)), b"x");
}

#[test]
fn the_daemon_killed_and_restarted_loses_nothing() {
    let u = users();
    let policy = policy_with(
        &rule(0, &["ha/*"], &ALL_OPS),
        "requests_per_second = 100000\nburst = 100000",
    );
    let mut d = Daemon::new(&policy);
    let mut c = d.conn();
    let status0 = c.request(json!({"v":1,"op":"status"}));
    drop(c);
    // (secret, blob) pairs the daemon handed out.
    let sealed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for round in 0..4u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (sealed, stop, socket) = (Arc::clone(&sealed), Arc::clone(&stop), d.socket());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(s) = UnixStream::connect(&socket) else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut s = s;
                    loop {
                        let secret = format!("secret-{round}-{n}");
                        n += 1;
                        let req = json!({"v":1,"op":"seal","namespace":"ha/kill","plaintext":b64(secret.as_bytes())});
                        if s.write_all(format!("{req}\n").as_bytes()).is_err() {
                            break;
                        }
                        let mut line = String::new();
                        // Killed before or while answering: no answer, no blob.
                        if r.read_line(&mut line).unwrap_or(0) == 0 || !line.ends_with('\n') {
                            break;
                        }
                        let v: Value = serde_json::from_str(&line).unwrap();
                        assert_eq!(status_of(&v), "ok", "{v}");
                        sealed
                            .lock()
                            .unwrap()
                            .push((secret, v["blob"].as_str().unwrap().to_string()));
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + round * 37));
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
        // The stale socket file is still there; a new teed replaces it.
        assert!(d.socket().exists());
        d.start();
    }
    let sealed = sealed.lock().unwrap().clone();
    assert!(!sealed.is_empty());
    // Everything handed out still opens, and the engine state is unchanged.
    let mut c = d.conn();
    for (secret, blob) in &sealed {
        let r = c.request(json!({"v":1,"op":"unseal","blob":blob}));
        assert_eq!(status_of(&r), "ok", "{r}");
        assert_eq!(r["plaintext"], b64(secret.as_bytes()));
    }
    let status1 = c.request(json!({"v":1,"op":"status"}));
    assert_eq!(status0, status1);
    // And directly on the engine too, once teed is gone.
    drop(c);
    d.kill9();
    let (secret, blob) = sealed.last().unwrap();
    assert_eq!(
        ok(d.direct(&["unseal"], blob.as_bytes())),
        secret.as_bytes()
    );
    let _ = u;
}

#[test]
fn failed_unseals_are_slowed_then_refused_without_starving_others() {
    let u = users();
    let limits = "requests_per_second = 100000\nburst = 100000\nfailed_unseals_free = 3\n\
                  failed_unseal_backoff_ms = 500\nfailed_unseals_lockout = 6\nlockout_seconds = 5";
    let d = Daemon::new(&ha_and_root_policy(&u, limits));
    let mut c = d.conn();
    let mut limited = 0usize;
    let mut req = |c: &mut Conn, v: Value| {
        let r = c.request(v);
        if status_of(&r) == "rate_limited" {
            limited += 1;
        }
        r
    };
    let good = req(
        &mut c,
        json!({"v":1,"op":"seal","namespace":"ha/core","plaintext":"Z29vZA=="}),
    );
    let good = good["blob"].as_str().unwrap().to_string();
    let bad = forged(&good);
    let ha_blob = ok(d.py(&u.ha, &["seal", "ha/core"], b"ha-ok"));

    // Three free failures; the fourth starts the back-off (500 ms, then
    // doubling): answered `rate_limited` with a wait, engine untouched.
    for _ in 0..4 {
        let r = req(&mut c, json!({"v":1,"op":"unseal","blob":bad}));
        assert_eq!(status_of(&r), "blob_rejected", "{r}");
    }
    let r = req(&mut c, json!({"v":1,"op":"unseal","blob":good}));
    assert_eq!(status_of(&r), "rate_limited", "{r}");
    assert!(r["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    // Keep hammering (honouring the waits) until locked out (5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let locked = loop {
        let r = req(&mut c, json!({"v":1,"op":"unseal","blob":bad}));
        let wait = r["retry_after_ms"].as_u64().unwrap_or(0);
        if status_of(&r) == "rate_limited" && wait > 2000 {
            break r;
        }
        assert!(Instant::now() < deadline, "never locked out: {r}");
        std::thread::sleep(Duration::from_millis(wait));
    };
    // Locked out: even a good blob is refused for now ...
    let r = req(&mut c, json!({"v":1,"op":"unseal","blob":good}));
    assert_eq!(status_of(&r), "rate_limited", "{r} after {locked}");
    // ... while another caller is served as usual ...
    assert_eq!(ok(d.py(&u.ha, &["unseal"], &ha_blob)), b"ha-ok");
    // ... and the locked-out caller's other operations still work.
    assert_eq!(status_of(&req(&mut c, json!({"v":1,"op":"status"}))), "ok");
    // The lockout ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = req(&mut c, json!({"v":1,"op":"unseal","blob":good}));
        if status_of(&r) == "ok" {
            break;
        }
        assert_eq!(status_of(&r), "rate_limited");
        assert!(Instant::now() < deadline, "lockout never ended");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The request rate, tightened by a reload: root's bucket only.
    d.set_policy(&ha_and_root_policy(
        &u,
        "requests_per_second = 1\nburst = 3",
    ));
    assert!(d.reload().starts_with("teed: policy reloaded"));
    let answers: Vec<String> = (0..10)
        .map(|_| status_of(&req(&mut c, json!({"v":1,"op":"status"}))).to_string())
        .collect();
    assert!(answers.iter().any(|a| a == "rate_limited"), "{answers:?}");
    assert!(answers.iter().all(|a| a == "ok" || a == "rate_limited"));
    // Home Assistant has its own bucket.
    assert_eq!(ok(d.py(&u.ha, &["unseal"], &ha_blob)), b"ha-ok");
    // The log is not flooded: rate-limited requests are summarised.
    let log = d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" result=rate_limited"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() < limited,
        "{limited} answers:\n{log}"
    );
    assert!(lines.iter().any(|l| l.contains(" suppressed=")), "{log}");
}

#[test]
fn teectl_goes_through_the_daemon() {
    let u = users();
    let mut d = Daemon::new(&standard_policy(&u, ""));
    d.kill9();
    let pem_direct = ok(d.direct(&["pubkey"], b""));
    d.start();

    // --via-daemon, explicitly.
    let st: Value =
        serde_json::from_slice(&ok(d.teectl(&u.ha, &["status", "--json"], b""))).unwrap();
    assert_eq!(st["backend"], "sim");
    assert_eq!(st["initialised"], true);
    assert_eq!(st["epoch"], 1);
    let text = String::from_utf8(ok(d.teectl(&u.ha, &["status"], b""))).unwrap();
    assert!(
        text.contains("initialised: yes") && text.contains("backend: sim"),
        "{text}"
    );
    assert_eq!(ok(d.teectl(&u.ha, &["pubkey"], b"")), pem_direct);
    assert_eq!(ok(d.py(&u.ha, &["pubkey"], b"")), pem_direct);

    // On its own: a non-root caller with HAKEYS_SOCKET and no state of its own.
    let auto = |args: &[&str], stdin: &[u8]| {
        let mut c = Command::new(&d.teectl);
        c.args(args);
        as_user(&mut c, &u.ha).env("HAKEYS_SOCKET", d.socket());
        run(&mut c, stdin)
    };
    let secret: Vec<u8> = (0u8..=255).chain(*b"\n\0end").collect();
    let blob = ok(auto(&["seal", "-n", "ha/core"], &secret));
    assert_eq!(ok(auto(&["unseal"], &blob)), secret);
    assert_eq!(ok(d.py(&u.ha, &["unseal"], &blob)), secret);
    // The YAML-indented text form works through the daemon too.
    let indented = format!("    {}", String::from_utf8_lossy(&blob).trim());
    assert_eq!(ok(auto(&["unseal"], indented.as_bytes())), secret);
    let audit = format!("uid={} gid={} ", u.ha.uid, u.ha.gid);
    assert!(d
        .log()
        .lines()
        .any(|l| l.contains(&audit) && l.ends_with("op=seal ns=ha/core result=ok")));
    // Errors keep teectl's exit codes and one line.
    let err = fails(auto(&["unseal", "-n", "ha/other"], &blob), REFUSED);
    assert_eq!(err.lines().count(), 1);
    fails(auto(&["unseal"], b"hakeys:v1:!!!"), REJECTED);
    fails(auto(&["seal", "-n", "ha/core"], b""), USAGE);
    fails(auto(&["seal", "-n", "Bad NS"], b"x"), USAGE);
    // What the daemon does not offer stays with root.
    let err = fails(d.teectl(&u.ha, &["rotate"], b""), USAGE);
    assert!(err.contains("root"), "{err}");
    fails(d.teectl(&u.ha, &["retire", "--below", "1"], b""), USAGE);
    // Without a daemon: a clear "unavailable".
    let mut c = Command::new(&d.teectl);
    c.args([
        "--via-daemon",
        "--socket",
        "/nonexistent/teed.sock",
        "status",
    ]);
    let err = fails(run(as_user(&mut c, &u.ha), b""), UNAVAILABLE);
    assert!(err.contains("daemon unavailable"), "{err}");
    // Root's direct access to the simulator waits for teed's lock, then
    // says why (the simulator is held by teed for its lifetime).
    let r = run(
        Command::new(teectl_bin())
            .args(["--backend", "sim", "--state-dir"])
            .arg(d.state())
            .args(["--socket"])
            .arg(d.socket())
            .arg("rotate")
            .env("HAKEYS_SIM_BOOT_ID", "boot-1"),
        b"",
    );
    let err = fails(r, UNAVAILABLE);
    assert!(err.contains("teed is serving"), "{err}");
}

#[test]
fn socket_activation_by_systemd() {
    let u = users();
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    assert!(
        activate.exists(),
        "systemd-socket-activate is missing: `cargo xtask deps` installs it (Debian package systemd)"
    );
    let mut d = Daemon::new(&standard_policy(&u, ""));
    d.kill9();
    // systemd-socket-activate listens, then runs teed with the socket as
    // fd 3 and LISTEN_PID/LISTEN_FDS, as systemd does for teed.socket.
    let sock = d.path("run/activated.sock");
    let log = d.log_file();
    let mut child = KillOnDrop(
        Command::new(activate)
            .arg("-l")
            .arg(&sock)
            .args(["-E", "HAKEYS_SIM_BOOT_ID=boot-1"])
            .arg(teed_bin())
            .args(["--backend", "sim", "--state-dir"])
            .arg(d.state())
            .arg("--socket")
            .arg(d.socket())
            .arg("--policy")
            .arg(d.policy())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sock.exists() {
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!("exited {st}: {}", d.log());
        }
        assert!(Instant::now() < deadline, "no socket: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // (systemd would create it with SocketMode=0666.)
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    // The first connection starts teed, which then serves it.
    let mut py = d.python_as(&u.ha);
    py.arg("--socket").arg(&sock).arg("status");
    let st: Value = serde_json::from_slice(&ok(run(&mut py, b""))).unwrap();
    assert_eq!(st["initialised"], true);
    let mut conn = Conn::new(&sock);
    assert_eq!(status_of(&conn.request(json!({"v":1,"op":"status"}))), "ok");
    assert!(
        d.log().contains("serving on the socket passed by systemd"),
        "{}",
        d.log()
    );
    // teed did not bind its --socket: the stale file left by the killed
    // daemon is not served.
    assert!(UnixStream::connect(d.socket()).is_err());
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn load_32_concurrent_callers_for_a_fixed_time_without_errors() {
    let _u = users();
    let policy = policy_with(
        &rule(0, &["ha/*"], &ALL_OPS),
        "requests_per_second = 1000000\nburst = 1000000\nmax_connections = 128\nmax_connections_per_uid = 128",
    );
    let d = Daemon::new(&policy);
    let mut c = d.conn();
    let blob =
        c.request(json!({"v":1,"op":"seal","namespace":"ha/load","plaintext":b64(&[7u8; 1024])}));
    let blob = blob["blob"].as_str().unwrap().to_string();
    drop(c);
    let threads_before = d.proc_status("Threads");
    const CALLERS: usize = 32;
    const SECONDS: u64 = 3;
    let ok_count = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak_rss), Arc::clone(&done), d.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proc_field(pid, "VmRSS"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for persistent in [true, false] {
        let end = Instant::now() + Duration::from_secs(SECONDS);
        let workers: Vec<_> = (0..CALLERS)
            .map(|i| {
                let (okc, errors, socket, blob) =
                    (Arc::clone(&ok_count), Arc::clone(&errors), d.socket(), blob.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<Conn> = None;
                    let mut n = 0usize;
                    while Instant::now() < end {
                        let c = conn.get_or_insert_with(|| Conn::new(&socket));
                        let req = match (i + n) % 10 {
                            0 => json!({"v":1,"op":"status"}),
                            1 => json!({"v":1,"op":"seal","namespace":"ha/load","plaintext":"bG9hZA=="}),
                            _ => json!({"v":1,"op":"unseal","blob":blob}),
                        };
                        let r = c.request(req);
                        if status_of(&r) == "ok" {
                            okc.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.lock().unwrap().push(r.to_string());
                        }
                        n += 1;
                        if !persistent {
                            conn = None;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let hwm = d.proc_status("VmHWM");
    eprintln!(
        "load: {CALLERS} callers, 2 x {SECONDS} s, {} requests ok, 0 errors; teed VmHWM {hwm} kB, peak VmRSS sampled {} kB",
        ok_count.load(Ordering::SeqCst),
        peak_rss.load(Ordering::SeqCst)
    );
    assert!(ok_count.load(Ordering::SeqCst) > 0);
    // Memory stays bounded: far below what 32 callers could make it hold if
    // anything grew per request (a debug build; the figure is recorded by
    // the benchmark for release builds).
    assert!(hwm < 256 * 1024, "teed VmHWM {hwm} kB");
    // Connection threads end with their connections.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.proc_status("Threads") > threads_before {
        assert!(Instant::now() < deadline, "threads left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_shipped_policy_and_units_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = root.join("systemd/teed-policy.toml");
    let out = Command::new(teed_bin())
        .arg("--check-policy")
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    assert!(stderr(&out).is_empty(), "policy warnings: {}", stderr(&out));
    let unit = |name: &str| fs::read_to_string(root.join("systemd").join(name)).unwrap();
    let service = unit("teed.service");
    let socket = unit("teed.socket");
    assert!(service.contains("--policy /etc/hakeys/policy.toml"));
    assert!(service.contains("NoNewPrivileges=yes") && service.contains("ProtectSystem=strict"));
    // Containers reach the socket in a directory on the host's /dev itself
    // (never on a file system mounted below /dev, which would be writable
    // in every container); host tools through /run/hakeys.
    assert!(socket.contains("ListenStream=/dev/hakeys/teed.sock"));
    assert!(socket.contains("DirectoryMode=0755") && !socket.contains(".mount"));
    assert!(!root.join("systemd/dev-hakeys.mount").exists());
    assert!(unit("hakeys.tmpfiles.conf")
        .contains("L /run/hakeys/teed.sock - - - - /dev/hakeys/teed.sock"));
    // teed reads its callers' /proc entries, and asks the proxy, never
    // Docker, for container names; only teed's user reaches the proxy.
    assert!(!service.contains("ProtectProc=invisible"));
    assert!(service.contains("--docker-socket /run/hakeys/docker-proxy.sock"));
    assert!(!service.contains("docker.sock ") && !service.contains("SupplementaryGroups=docker"));
    let proxy_socket = unit("teed-docker-proxy.socket");
    for want in [
        "ListenStream=/run/hakeys/docker-proxy.sock",
        "SocketUser=hakeys",
        "SocketMode=0600",
    ] {
        assert!(proxy_socket.contains(want), "{want}");
    }
    let proxy = unit("teed-docker-proxy.service");
    for want in [
        "--docker-socket /run/docker.sock",
        "CapabilityBoundingSet=\n",
        "PrivateNetwork=yes",
        "ProtectSystem=strict",
    ] {
        assert!(proxy.contains(want), "{want}");
    }
    // systemd itself reads every unit without complaint (it cannot find
    // the installed binaries here, and says so; nothing else).
    let units = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in [
        "teed.service",
        "teed.socket",
        "teed-docker-proxy.socket",
        "teed-docker-proxy.service",
    ] {
        let p = units.path().join(name);
        fs::copy(root.join("systemd").join(name), &p).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .expect("systemd-analyze (Debian package systemd; `cargo xtask deps`)");
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("is not executable: No such file or directory"))
        .map(str::to_owned)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
    // A policy that names boot/ is refused before it can be installed.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    fs::write(
        &p,
        "version = 1\n[[rule]]\nuid = 0\nnamespaces = [\"boot/*\"]\noperations = [\"unseal\"]\n",
    )
    .unwrap();
    let out = Command::new(teed_bin())
        .arg("--check-policy")
        .arg("--policy")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(stderr(&out).contains("boot"), "{}", stderr(&out));
    // teed refuses to start with it too.
    let out = Command::new(teed_bin())
        .args(["--backend", "sim", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--policy")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(stderr(&out).contains("boot/*"));
}

#[test]
fn a_policy_or_socket_directory_another_user_controls_is_refused() {
    assert!(is_root(), "this test chowns files: run the tests as root");
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    let p = etc.join("policy.toml");
    fs::write(&p, "version = 1\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let check = || {
        Command::new(teed_bin())
            .arg("--check-policy")
            .arg("--policy")
            .arg(&p)
            .output()
            .unwrap()
    };
    assert!(check().status.success(), "{}", stderr(&check()));
    // Owned by another user: that user could grant themselves anything.
    std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(USAGE));
    assert!(
        stderr(&out).contains("must belong to root"),
        "{}",
        stderr(&out)
    );
    std::os::unix::fs::chown(&p, Some(0), None).unwrap();
    // Its directory owned by another user.
    std::os::unix::fs::chown(&etc, Some(4242), None).unwrap();
    assert_eq!(check().status.code(), Some(USAGE));
    std::os::unix::fs::chown(&etc, Some(0), None).unwrap();
    assert!(check().status.success());

    // The socket's directory must not be writable by others either.
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(teed_bin())
        .args(["--backend", "sim", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(run.join("teed.sock"))
        .arg("--policy")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert!(!run.join("teed.sock").exists(), "no socket was created");
}
