//! Harness for the end-to-end tests: builds the real binaries with cargo
//! (always fresh, as a user's build would be) and runs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Build `bin` of package `pkg` (debug profile) and return its path.
fn build(pkg: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--message-format=json",
            "-p",
            pkg,
            "--bin",
            bin,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p {pkg} --bin {bin} failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo did not report the {bin} executable"))
}

/// The freshly built `teectl`.
pub fn teectl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("teectl", "teectl"))
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
        let mut c = Command::new(teectl_bin());
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
