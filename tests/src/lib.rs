//! Harness for the end-to-end tests: builds the real binaries with cargo
//! (always fresh, as a user's build would be) and runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// Builds in this process one at a time: a build with other features
/// replaces the binary cargo leaves in `target/debug`, so a build and the
/// copy that [`teectl_test_hooks_bin`] makes of it must not interleave.
static BUILD: Mutex<()> = Mutex::new(());

/// Build `bin` of package `pkg` (debug profile) and return its path.
fn build(pkg: &str, bin: &str) -> PathBuf {
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    build_with(pkg, bin, &[])
}

fn build_with(pkg: &str, bin: &str, features: &[&str]) -> PathBuf {
    build_profile(pkg, bin, features, false)
}

fn build_profile(pkg: &str, bin: &str, features: &[&str], release: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        pkg,
        "--bin",
        bin,
    ];
    if release {
        args.push("--release");
    }
    let features = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", &features]);
    }
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p {pkg} --bin {bin} --features {features:?} failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo did not report the {bin} executable"))
}

/// `teectl` built as users get it (release profile, default features).
pub fn teectl_release_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        build_profile("teectl", "teectl", &[], true)
    })
}

/// The freshly built `teectl`.
pub fn teectl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("teectl", "teectl"))
}

/// The freshly built `teectl` with the simulator's test hooks (cargo feature
/// `test-hooks`: `HAKEYS_SIM_KILL_AT_WRITE`), copied to
/// `target/debug/teectl-test-hooks` so that it never stands in for the
/// plain `teectl`, which is rebuilt in place afterwards.
pub fn teectl_test_hooks_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let built = build_with("teectl", "teectl", &["test-hooks"]);
        let aside = built.with_file_name("teectl-test-hooks");
        std::fs::copy(&built, &aside).expect("copy the test-hooks teectl aside");
        build_with("teectl", "teectl", &[]);
        aside
    })
}

/// The freshly built `rpmb-sim`.
pub fn rpmb_sim_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("rpmb-sim", "rpmb-sim"))
}

/// A simulator board: a private state directory and a boot id.
pub struct Board {
    pub dir: tempfile::TempDir,
    pub boot_id: String,
}

impl Default for Board {
    fn default() -> Self {
        Self::new()
    }
}

impl Board {
    pub fn new() -> Board {
        Board {
            dir: tempfile::tempdir().expect("tempdir"),
            boot_id: "boot-1".into(),
        }
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Simulate a reboot (a new kernel boot id).
    pub fn reboot(&mut self) {
        self.boot_id = format!("{}+", self.boot_id);
    }

    /// The `teectl` command for this board, without running it.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(teectl_bin(), args)
    }

    /// As [`Board::command`], with another `teectl` binary.
    pub fn command_with(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(["--backend", "sim", "--state-dir"])
            .arg(self.state())
            .args(args)
            .env("HAKEYS_SIM_BOOT_ID", &self.boot_id)
            .env_remove("TEECTL_STATE_DIR");
        c
    }

    /// Run `teectl args` with `stdin`.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        Run(
            run_with_stdin(&mut self.command(args), stdin),
            args.join(" "),
        )
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        self.run(args, stdin).success()
    }

    /// Seal `secret` in `ns`; returns the blob's text line.
    pub fn seal(&self, ns: &str, secret: &[u8]) -> Vec<u8> {
        self.ok(&["seal", "--namespace", ns], secret)
    }

    /// A new board whose state directory is a copy of this one's.
    pub fn copy(&self) -> Board {
        let b = Board::new();
        if !self.state().exists() {
            return b;
        }
        make_state_dir(&b.state());
        for entry in std::fs::read_dir(self.state()).expect("read the state directory") {
            let entry = entry.expect("state directory entry");
            std::fs::copy(entry.path(), b.state().join(entry.file_name()))
                .expect("copy a state file");
        }
        b
    }

    /// A board with the state directory the release before the slot layout
    /// made (format v1), from `tests/tests/fixtures/sim_state_v1.txt`, and
    /// the blobs sealed on it.
    pub fn from_v1_fixture() -> (Board, Vec<V1Blob>) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sim_state_v1.txt"
        ))
        .expect("the v1 fixture");
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture hex"))
                .collect()
        };
        let (mut huk, mut image, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = line.split(' ').collect();
            match w.as_slice() {
                ["huk", h] => huk = hex(h),
                ["image-len", n] => image = vec![0u8; n.parse().expect("image length")],
                ["chunk", at, h] => {
                    let at: usize = at.parse().expect("chunk offset");
                    let b = hex(h);
                    image[at..at + b.len()].copy_from_slice(&b);
                }
                ["blob", ns, secret, blob] => blobs.push(V1Blob {
                    namespace: ns.to_string(),
                    secret: secret.as_bytes().to_vec(),
                    blob: format!("{blob}\n").into_bytes(),
                }),
                _ => {}
            }
        }
        let b = Board::new();
        make_state_dir(&b.state());
        write_private(&b.state().join("huk"), &huk);
        write_private(&b.state().join("rpmb.img"), &image);
        (b, blobs)
    }
}

/// A blob sealed on the v1 fixture board.
pub struct V1Blob {
    pub namespace: String,
    pub secret: Vec<u8>,
    /// The text line, as `teectl seal` printed it.
    pub blob: Vec<u8>,
}

fn make_state_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .expect("create the state directory");
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create a state file");
    f.write_all(bytes).expect("write a state file");
}

/// A finished run.
pub struct Run(pub Output, pub String);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> &[u8] {
        &self.0.stdout
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Require exit 0; returns stdout.
    pub fn success(self) -> Vec<u8> {
        assert_eq!(
            self.code(),
            0,
            "teectl {} failed: {}",
            self.1,
            self.stderr()
        );
        self.0.stdout
    }
    /// Require exit `code` with one line on stderr and nothing on stdout.
    pub fn fails_with(&self, code: i32) -> String {
        let err = self.stderr();
        assert_eq!(
            self.code(),
            code,
            "teectl {}: expected exit {code}, stderr: {err}",
            self.1
        );
        assert!(
            self.0.stdout.is_empty(),
            "teectl {} printed to stdout on failure",
            self.1
        );
        assert_eq!(
            err.lines().count(),
            1,
            "teectl {}: stderr should be one line: {err:?}",
            self.1
        );
        assert!(err.starts_with("teectl: "), "{err}");
        err
    }
}

/// Run `c` with `stdin` on its standard input; capture its output.
pub fn run_with_stdin(c: &mut Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", c.get_program()));
    if let Some(mut i) = child.stdin.take() {
        // The program may exit before reading (a usage error): ignore EPIPE.
        let _ = i.write_all(stdin);
    }
    child.wait_with_output().expect("wait")
}

/// The freshly built `teed` (the daemon).
pub fn teed_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("teed", "teed"))
}

/// The freshly built `teed-docker-proxy` (teed's one-call Docker API proxy).
pub fn teed_docker_proxy_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("teed", "teed-docker-proxy"))
}

/// `teed` on the simulator backend with the state directory `state`, the
/// socket `socket`, the policy file `policy` and the simulated boot
/// `boot_id`; none of teectl's or systemd's variables reach it from the
/// test's environment.
pub fn teed_sim(
    state: &Path,
    socket: &Path,
    policy: &Path,
    boot_id: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let mut c = Command::new(teed_bin());
    c.args(["--backend", "sim", "--state-dir"])
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .arg("--policy")
        .arg(policy)
        .env("HAKEYS_SIM_BOOT_ID", boot_id)
        .env_remove("TEECTL_STATE_DIR")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS");
    c
}

/// Checks on a finished command's [`Output`].
pub mod output {
    use std::process::Output;

    /// Its standard error, as text.
    pub fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Require success; returns stdout.
    pub fn ok(o: Output) -> Vec<u8> {
        assert!(o.status.success(), "failed ({}): {}", o.status, stderr(&o));
        o.stdout
    }

    /// Require exit `code` and nothing on stdout; returns stderr.
    pub fn fails(o: Output, code: i32) -> String {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "stderr: {err}");
        assert!(o.stdout.is_empty(), "printed on failure");
        err
    }
}
