//! The QEMU target: TF-A + OP-TEE (RPMB secure storage) + Linux + the
//! hakeys TA and host tools, booted under `qemu-system-aarch64`.
//!
//! `cargo xtask qemu-test`: build (cached under `.cache/qemu`), then boot
//! the scenario as a board lives it, each boot a new QEMU process on the
//! same disks, asserting on the guest's `HAKEYS-RESULT` lines:
//!   boot 1: init, seal a secret and a LUKS key, format a LUKS volume,
//!           rotate, retire; power off;
//!   boot 2: the secret unseals; the unsealed key opens the LUKS volume;
//!           boot-done locks it; a tampered and a retired blob are refused;
//!           a non-root user with /dev/tee0 is refused rotate, retire,
//!           init, escrow, boot/ and unseal without a namespace (the TA
//!           checks its clients); teed runs as its own user;
//!   boot 3: the unlock step opens the volume but never calls boot-done;
//!           teed ends the boot phase itself before serving: boot/ refused;
//!   migration (issue 10), boards A and B: A escrows to a recovery key
//!           made on the host and reseals to B; B opens A's blobs and keys
//!           its volume with A's LUKS key; A's disks deleted, the host
//!           recovers A's blobs for B from the escrow; B opens them;
//!   then a reduced OP-TEE xtest selection with our supplicant (own board).
//! `cargo xtask qemu-shell`: the same image, interactive.
//! `cargo xtask qemu-bench`: figures for docs/BENCHMARKS-qemu.md.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache, root, run, Result};

pub(crate) use crate::qemu_bench::bench;

/// The reduced xtest selection run in CI (see supplicant/README.md for what
/// is left out and why).
pub const CI_XTESTS: &[&str] = &[
    "1001", "1004", "1008", "4001", "6001", "6002", "6003", "6004", "6010", "6014",
];

pub(crate) fn qdir() -> PathBuf {
    cache().join("qemu")
}

pub(crate) fn script(name: &str) -> PathBuf {
    root().join("qemu").join(name)
}

/// Build everything the image needs (each step is cached by its script).
pub fn build() -> Result {
    let q = qdir();
    let started = Instant::now();
    if crate::is_root() {
        run(&mut Command::new(script("setup-host.sh")))?;
    } else {
        for tool in [
            "qemu-system-aarch64",
            "aarch64-linux-gnu-gcc",
            "dtc",
            "modinfo",
        ] {
            if !Command::new("sh")
                .args(["-c", &format!("command -v {tool} || test -x /sbin/{tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Err(format!("{tool} is missing: run `sudo qemu/setup-host.sh` once (it installs the QEMU target's host packages)"));
            }
        }
    }
    run(Command::new(script("fetch.sh")).arg(&q))?;
    run(Command::new(script("build-firmware.sh")).arg(&q))?;
    let out = q.join("out");
    run(Command::new(script("build-ta.sh"))
        .arg(out.join("optee/export-ta_arm64"))
        .arg(out.join("ta-sign-key.pem"))
        .arg(out.join("ta")))?;
    run(Command::new(script("build-host.sh"))
        .arg(&q)
        .arg(out.join("bin")))?;
    run(Command::new(script("make-initramfs.sh"))
        .arg(&q)
        .arg(out.join("initramfs.cpio.gz")))?;
    eprintln!(
        "qemu: image built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The disks of one simulated board, and the image it boots.
pub(crate) struct Board {
    pub(crate) dir: PathBuf,
    /// Where `flash.bin`, `Image` and `initramfs.cpio.gz` are (`out/` of
    /// the QEMU cache unless a test boots a private copy).
    pub(crate) image: PathBuf,
}

impl Board {
    pub(crate) fn fresh(name: &str) -> Result<Board> {
        Board::with_rpmb(name, None)
    }

    /// A new board whose RPMB image is a copy of `rpmb` (a fresh one if
    /// `None`); the other disks are new.
    pub(crate) fn with_rpmb(name: &str, rpmb: Option<&Path>) -> Result<Board> {
        let dir = qdir().join("boards").join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        match rpmb {
            Some(base) => {
                fs::copy(base, dir.join("rpmb.img"))
                    .map_err(|e| format!("cannot copy {}: {e}", base.display()))?;
            }
            None => rpmb_sim::RpmbDevice::create(
                &dir.join("rpmb.img"),
                &rpmb_sim::CreateOptions::default(),
            )
            .map_err(|e| format!("cannot create the RPMB image: {e}"))?,
        }
        let luks = fs::File::create(dir.join("luks.img")).map_err(|e| e.to_string())?;
        luks.set_len(32 << 20).map_err(|e| e.to_string())?;
        let b = Board {
            dir,
            image: qdir().join("out"),
        };
        b.set_blobs(&[])?;
        Ok(b)
    }

    /// Put these files on the "blobs" disk (a tar archive).
    pub(crate) fn set_blobs(&self, files: &[(&str, &[u8])]) -> Result {
        let staging = self.dir.join("blobs");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        for (name, bytes) in files {
            fs::write(staging.join(name), bytes).map_err(|e| e.to_string())?;
        }
        run(Command::new("tar")
            .arg("-cf")
            .arg(self.dir.join("blobs.tar"))
            .arg("-C")
            .arg(&staging)
            .arg("."))
    }

    fn qemu(&self, append: &str) -> Command {
        let out = &self.image;
        let mut c = Command::new("qemu-system-aarch64");
        c.args([
            "-machine",
            "virt,secure=on,gic-version=3,virtualization=off",
            "-cpu",
            "cortex-a57",
        ])
        .args([
            "-smp",
            "2",
            "-m",
            "2048",
            "-display",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-bios")
        .arg(out.join("flash.bin"))
        .arg("-kernel")
        .arg(out.join("Image"))
        .arg("-initrd")
        .arg(out.join("initramfs.cpio.gz"))
        .arg("-append")
        .arg(format!("console=ttyAMA0 quiet {append}"));
        // `data`, `boot` and `ext` (a GPT disk with `hassos-data`, a vfat
        // boot partition, an external disk) only on the boards of `cargo
        // xtask qemu-data`.
        let optional = ["data.img", "boot.img", "ext.img"].map(|f| self.dir.join(f).exists());
        for (id, file, extra) in [
            ("rpmb", "rpmb.img", ""),
            ("luks", "luks.img", ""),
            ("blobs", "blobs.tar", ",readonly=on"),
            ("data", "data.img", ""),
            ("boot", "boot.img", ""),
            ("ext", "ext.img", ""),
        ]
        .into_iter()
        .filter(|(_, file, _)| match *file {
            "data.img" => optional[0],
            "boot.img" => optional[1],
            "ext.img" => optional[2],
            _ => true,
        }) {
            c.arg("-drive")
                .arg(format!(
                    "if=none,id={id},format=raw,file={}{extra}",
                    self.dir.join(file).display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive={id},serial={id},romfile="));
        }
        c
    }

    /// Boot with `append`, wait for power-off, return the console lines;
    /// the guest must have finished its scenario.
    pub(crate) fn boot(&self, name: &str, append: &str, timeout: Duration) -> Result<Vec<String>> {
        let (lines, done) = self.boot_to_power_off(name, append, timeout)?;
        if !done {
            return Err(format!(
                "boot `{name}` ended before the scenario finished; see {}",
                self.dir.join(format!("{name}.console.log")).display()
            ));
        }
        Ok(lines)
    }

    /// Boot with `append` and wait for the machine to power off, however
    /// that happens (the scenario's end, or a simulated power cut); return
    /// the console lines and whether the scenario finished (`HAKEYS: DONE`).
    pub(crate) fn boot_to_power_off(
        &self,
        name: &str,
        append: &str,
        timeout: Duration,
    ) -> Result<(Vec<String>, bool)> {
        self.boot_and_cut(name, append, timeout, None)
            .map(|(lines, done, _)| (lines, done))
    }

    /// As [`Board::boot_to_power_off`]; with `cut = Some((marker, delay))`,
    /// the power is cut (QEMU killed) `delay` after the first console line
    /// that starts with `marker`, unless the machine powered off first.
    /// Also says whether the cut happened.
    pub(crate) fn boot_and_cut(
        &self,
        name: &str,
        append: &str,
        timeout: Duration,
        cut: Option<(&str, Duration)>,
    ) -> Result<(Vec<String>, bool, bool)> {
        let log = self.dir.join(format!("{name}.console.log"));
        let mut cmd = self.qemu(append);
        cmd.arg("-monitor")
            .arg("none")
            .arg("-serial")
            .arg("stdio")
            .arg("-serial")
            .arg(format!(
                "file:{}",
                self.dir.join(format!("{name}.secure.log")).display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("qemu: boot `{name}` ({append})");
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-aarch64: {e}"))?;
        let stdout = child.stdout.take().ok_or("no qemu stdout")?;
        // Read the console on a thread so the timeout can fire.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Lossy: whatever bytes the guest prints, the console keeps being read.
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                buf.clear();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let mut f = fs::File::create(&log).map_err(|e| e.to_string())?;
        let deadline = started + timeout;
        let mut timed_out = false;
        let (mut cut_at, mut was_cut) = (None, false);
        loop {
            let wait = cut_at.map_or(Duration::from_millis(200), |t: Instant| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200))
            });
            match rx.recv_timeout(wait) {
                Ok(l) => {
                    let _ = writeln!(f, "[{:7.2}] {l}", started.elapsed().as_secs_f64());
                    if let Some((marker, delay)) = cut {
                        if cut_at.is_none() && l.starts_with(marker) {
                            cut_at = Some(Instant::now() + delay);
                        }
                    }
                    lines.push(l);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if cut_at.is_some_and(|t| Instant::now() >= t) {
                // The power cut: SIGKILL, nothing the guest buffered reaches
                // its disks.
                let _ = child.kill();
                let _ = writeln!(f, "[{:7.2}] <power cut>", started.elapsed().as_secs_f64());
                was_cut = true;
                break;
            }
            if Instant::now() > deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
        let _ = child.wait();
        let _ = reader.join();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "qemu: boot `{name}` finished in {secs:.1} s (console: {})",
            log.display()
        );
        if timed_out {
            return Err(format!(
                "boot `{name}` did not finish within {} s; see {}",
                timeout.as_secs(),
                log.display()
            ));
        }
        let done = lines.iter().any(|l| l.starts_with("HAKEYS: DONE"));
        Ok((lines, done, was_cut))
    }
}

/// One `HAKEYS-RESULT name rc=N out=... err=...` line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Step {
    pub(crate) rc: i32,
    pub(crate) out: String,
    pub(crate) err: String,
    pub(crate) sha256: String,
}

pub(crate) fn results(lines: &[String]) -> HashMap<String, Step> {
    let mut m = HashMap::new();
    for l in lines {
        let Some(rest) = l.strip_prefix("HAKEYS-RESULT ") else {
            continue;
        };
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let field = |key: &str| -> String {
            let Some(start) = rest.find(&format!("{key}=")) else {
                return String::new();
            };
            let v = &rest[start + key.len() + 1..];
            let end = [" out=", " err=", " sha256="]
                .iter()
                .filter_map(|k| v.find(k))
                .min()
                .unwrap_or(v.len());
            v[..end].trim().to_string()
        };
        let rc = field("rc").parse().unwrap_or(-1);
        m.insert(
            name.to_string(),
            Step {
                rc,
                out: field("out"),
                err: field("err"),
                sha256: field("sha256"),
            },
        );
    }
    m
}

struct Checks {
    failures: Vec<String>,
    passed: usize,
}

impl Checks {
    fn new() -> Self {
        Checks {
            failures: Vec::new(),
            passed: 0,
        }
    }
    fn step<'a>(&mut self, r: &'a HashMap<String, Step>, name: &str) -> Option<&'a Step> {
        let s = r.get(name);
        if s.is_none() {
            self.failures
                .push(format!("{name}: the guest did not report this step"));
        }
        s
    }
    /// `name` exited with `rc` (and, if given, its stdout contains `out`).
    fn expect(&mut self, r: &HashMap<String, Step>, name: &str, rc: i32, out: Option<&str>) {
        if let Some(s) = self.step(r, name) {
            let out_ok = out.is_none_or(|o| s.out.contains(o));
            if s.rc == rc && out_ok {
                self.passed += 1;
                eprintln!("  ok   {name} (exit {rc})");
            } else {
                self.failures.push(format!(
                    "{name}: exit {} (want {rc}){}; stdout: {:?}; stderr: {:?}",
                    s.rc,
                    out.map(|o| format!(", stdout should contain {o:?}"))
                        .unwrap_or_default(),
                    s.out,
                    s.err
                ));
                eprintln!("  FAIL {name}");
            }
        }
    }
    /// `name` exited with `rc` and its stderr contains `err`.
    fn expect_err(&mut self, r: &HashMap<String, Step>, name: &str, rc: i32, err: &str) {
        if let Some(s) = self.step(r, name) {
            if s.rc == rc && s.err.contains(err) {
                self.passed += 1;
                eprintln!("  ok   {name} (exit {rc}: {})", s.err.trim());
            } else {
                self.failures.push(format!(
                    "{name}: exit {} (want {rc}), stderr {:?} (want {err:?} in it)",
                    s.rc, s.err
                ));
                eprintln!("  FAIL {name}");
            }
        }
    }
    /// A check made on the host: `ok`, or a failure described by `detail`.
    fn host(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            self.passed += 1;
            eprintln!("  ok   {name} (host)");
        } else {
            self.failures.push(format!("{name}: {detail}"));
            eprintln!("  FAIL {name}");
        }
    }
    /// `name` reported the SHA-256 `want` (hex) with exit 0.
    fn expect_sha_hex(&mut self, r: &HashMap<String, Step>, name: &str, want: &str) {
        if let Some(s) = self.step(r, name) {
            if s.rc == 0 && s.sha256 == want {
                self.passed += 1;
                eprintln!("  ok   {name} (sha256 matches)");
            } else {
                self.failures.push(format!(
                    "{name}: exit {}, sha256 {} (want 0, {want}); stderr {:?}",
                    s.rc, s.sha256, s.err
                ));
                eprintln!("  FAIL {name}");
            }
        }
    }
    fn expect_sha(&mut self, r: &HashMap<String, Step>, name: &str, plaintext: &[u8]) {
        let want = sha256_hex(plaintext);
        if let Some(s) = self.step(r, name) {
            if s.rc == 0 && s.sha256 == want {
                self.passed += 1;
                eprintln!("  ok   {name} (plaintext matches)");
            } else {
                self.failures.push(format!(
                    "{name}: exit {}, sha256 {} (want 0, {want}); stderr {:?}",
                    s.rc, s.sha256, s.err
                ));
                eprintln!("  FAIL {name}");
            }
        }
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Flip one base64 character in the middle of a blob line.
fn tamper(line: &str) -> String {
    let mut chars: Vec<char> = line.trim().chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect::<String>() + "\n"
}

fn blob_of(r: &HashMap<String, Step>, name: &str) -> Result<String> {
    let s = r.get(name).ok_or(format!("no {name} result"))?;
    let b = s.out.trim();
    if s.rc != 0 || !b.starts_with("hakeys:v1:") {
        return Err(format!(
            "{name} did not produce a blob (exit {}, stderr {:?})",
            s.rc, s.err
        ));
    }
    Ok(format!("{b}\n"))
}

/// The end-to-end scenario and the xtest selection.
pub fn test(xtests: &[&str]) -> Result {
    build()?;
    let board = Board::fresh("scenario")?;
    let mut checks = Checks::new();

    let r1 = results(&board.boot(
        "boot1",
        "hakeys.mode=scenario hakeys.step=boot1",
        Duration::from_secs(600),
    )?);
    checks.expect(&r1, "status-before", 0, Some("\"initialised\":false"));
    checks.expect(&r1, "init", 0, Some("initialised: new root key"));
    checks.expect(&r1, "init-again", 0, Some("already initialised"));
    checks.expect(&r1, "seal-old", 0, Some("hakeys:v1:"));
    checks.expect(&r1, "rotate", 0, Some("epoch 2"));
    checks.expect(&r1, "seal-secret", 0, Some("hakeys:v1:"));
    checks.expect(&r1, "seal-luks", 0, Some("hakeys:v1:"));
    checks.expect(&r1, "unseal-secret-boot1", 0, None);
    checks.expect(&r1, "luks-format", 0, None);
    checks.expect(&r1, "luks-open-1", 0, None);
    checks.expect(&r1, "retire", 0, Some("oldest accepted: 2"));
    checks.expect(&r1, "unseal-old-retired", 4, None);
    if !checks.failures.is_empty() {
        return Err(format!(
            "boot 1 failed:\n  {}",
            checks.failures.join("\n  ")
        ));
    }

    let secret = blob_of(&r1, "seal-secret")?;
    let luks = blob_of(&r1, "seal-luks")?;
    let old = blob_of(&r1, "seal-old")?;
    let tampered = tamper(&secret);
    board.set_blobs(&[
        ("secret.blob", secret.as_bytes()),
        ("luks.blob", luks.as_bytes()),
        ("old.blob", old.as_bytes()),
        ("tampered.blob", tampered.as_bytes()),
    ])?;

    let lines2 = board.boot(
        "boot2",
        "hakeys.mode=scenario hakeys.step=boot2",
        Duration::from_secs(600),
    )?;
    let r2 = results(&lines2);
    checks.expect(&r2, "status-after-reboot", 0, Some("\"epoch\":2"));
    checks.expect(&r2, "status-after-reboot", 0, Some("\"min_epoch\":2"));
    checks.expect_sha(&r2, "unseal-secret", b"the-secret");
    checks.expect(&r2, "luks-open-with-unsealed-key", 0, None);
    checks.expect(&r2, "luks-marker", 0, Some("HAKEYS-LUKS-MARKER"));
    checks.expect(&r2, "luks-close", 0, None);
    checks.expect(&r2, "boot-done", 0, None);
    checks.expect(&r2, "unseal-luks-after-boot-done", 4, None);
    checks.expect(
        &r2,
        "status-after-boot-done",
        0,
        Some("\"boot_locked\":true"),
    );
    checks.expect(&r2, "unseal-tampered", 5, None);
    checks.expect(&r2, "unseal-old-retired", 4, None);
    checks.expect_sha(&r2, "unseal-secret-after-boot-done", b"the-secret");
    // The TA checks its clients (issue 12): a non-root process with
    // /dev/tee0 gets a client's rights, nothing more, and changes nothing.
    checks.expect(&r2, "nonroot-status", 0, Some("\"initialised\":true"));
    for name in [
        "nonroot-rotate",
        "nonroot-retire",
        "nonroot-escrow",
        "nonroot-init",
        "nonroot-unseal-any",
        "nonroot-seal-boot",
    ] {
        checks.expect_err(&r2, name, 4, "root's TEE login identity");
    }
    checks.expect_sha(&r2, "nonroot-unseal-own", b"the-secret");
    checks.expect(&r2, "status-after-nonroot", 0, Some("\"epoch\":2"));
    checks.expect(&r2, "status-after-nonroot", 0, Some("\"min_epoch\":2"));
    // The daemon on the real TEE as its own user, callers identified by
    // kernel credentials.
    checks.expect(&r2, "daemon-status-as-ha", 0, Some("\"initialised\":true"));
    checks.expect_sha(&r2, "daemon-unseal-as-ha", b"the-secret");
    checks.expect(&r2, "daemon-unseal-boot-as-ha", 4, None);
    checks.expect(&r2, "daemon-unseal-as-other", 4, None);
    checks.expect(&r2, "daemon-unseal-tampered-as-ha", 5, None);
    for (key, label) in [
        ("daemon-unseal", "through teed"),
        ("direct-unseal", "direct"),
    ] {
        if let Some((n, ms)) = bench_value(&lines2, key) {
            eprintln!(
                "  info {label}: {n} x `teectl unseal`, mean {:.1} ms",
                ms as f64 / n as f64
            );
        }
    }

    // Boot 3: the unlock step never runs `boot-done`; teed, when it starts,
    // must end the boot phase before it serves anyone.
    let r3 = results(&board.boot(
        "boot3",
        "hakeys.mode=scenario hakeys.step=boot3",
        Duration::from_secs(600),
    )?);
    checks.expect(&r3, "boot3-status-before", 0, Some("\"boot_locked\":false"));
    checks.expect(&r3, "boot3-luks-open", 0, None);
    checks.expect(&r3, "boot3-teed-ended-boot-phase", 0, Some("1"));
    checks.expect(
        &r3,
        "boot3-status-after-teed",
        0,
        Some("\"boot_locked\":true"),
    );
    checks.expect_err(&r3, "boot3-unseal-luks", 4, "locked until the next boot");
    checks.expect(&r3, "boot3-daemon-unseal-luks-as-ha", 4, None);
    checks.expect_sha(&r3, "boot3-unseal-secret", b"the-secret");

    migration(&mut checks)?;

    if !xtests.is_empty() {
        let xboard = Board::fresh("xtest")?;
        let lines = xboard.boot(
            "xtest",
            &format!(
                "hakeys.mode=scenario hakeys.step=xtest hakeys.xtests={}",
                xtests.join(",")
            ),
            Duration::from_secs(1800),
        )?;
        for t in xtests {
            match lines
                .iter()
                .find(|l| l.starts_with(&format!("HAKEYS-XTEST {t} ")))
            {
                Some(l) if l.contains("rc=0") => {
                    checks.passed += 1;
                    eprintln!(
                        "  ok   xtest {t}: {}",
                        l.trim_start_matches("HAKEYS-XTEST ")
                    );
                }
                Some(l) => checks.failures.push(format!("xtest {t}: {l}")),
                None => checks.failures.push(format!("xtest {t}: not run")),
            }
        }
    }

    println!(
        "qemu-test: {} passed, {} failed",
        checks.passed,
        checks.failures.len()
    );
    if checks.failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "qemu-test failures:\n  {}",
            checks.failures.join("\n  ")
        ))
    }
}

/// A file the guest handed over with `f NAME FILE` (`HAKEYS-FILE NAME hex`).
fn guest_file(lines: &[String], name: &str) -> Result<Vec<u8>> {
    let hex = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("HAKEYS-FILE {name} ")))
        .ok_or(format!("the guest did not hand over {name}"))?
        .trim();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|e| format!("{name}: bad hex from the guest: {e}"))
}

/// What a host `teectl` run gave: exit code, stdout, stderr.
struct HostRun {
    rc: i32,
    out: Vec<u8>,
    err: String,
}

fn host_teectl(teectl: &Path, args: &[&std::ffi::OsStr], stdin: &[u8]) -> Result<HostRun> {
    let mut c = Command::new(teectl);
    c.args(args)
        .env_remove("TEECTL_STATE_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", teectl.display()))?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input.write_all(stdin).map_err(|e| e.to_string())?;
    drop(input);
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(HostRun {
        rc: o.status.code().unwrap_or(-1),
        out: o.stdout,
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// Issue 10's migration in QEMU: two boards, A and B (each its own RPMB
/// image and LUKS disk). A escrows to a recovery key made on the host,
/// seals, and reseals to B while it lives; B opens A's blobs and keys its
/// own volume with A's LUKS key. Then A's disks are deleted, and the host
/// recovers A's blobs for B from the escrow alone; B opens them, and its
/// volume with the recovered key.
fn migration(checks: &mut Checks) -> Result {
    use std::ffi::OsStr;
    let teectl = crate::teectl_bin()?;
    let a = Board::fresh("mig-a")?;
    let b = Board::fresh("mig-b")?;
    let w = qdir().join("boards").join("mig-host");
    let _ = fs::remove_dir_all(&w);
    fs::create_dir_all(&w).map_err(|e| e.to_string())?;
    let os = |p: &Path| p.as_os_str().to_owned();

    // Host: the recovery key.
    let rk = w.join("rk");
    let made = host_teectl(
        &teectl,
        &[
            OsStr::new("recovery-key"),
            OsStr::new("new"),
            OsStr::new("--out"),
            &os(&rk),
        ],
        b"",
    )?;
    let made_out = String::from_utf8_lossy(&made.out).into_owned();
    let mode = fs::metadata(rk.join("recovery-key.pem"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(0);
    checks.host(
        "mig-host-recovery-key-new",
        made.rc == 0 && mode == 0o600,
        format!(
            "exit {} (want 0), recovery-key.pem mode {mode:o} (want 600); stderr {:?}",
            made.rc, made.err
        ),
    );
    let fingerprint = made_out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or("")
        .trim()
        .to_string();
    // The code: the indented line of dash-separated groups.
    let code = made_out
        .lines()
        .map(str::trim)
        .find(|l| {
            l.split('-').count() >= 4
                && l.split('-')
                    .all(|g| !g.is_empty() && g.bytes().all(|c| c.is_ascii_alphanumeric()))
        })
        .unwrap_or("")
        .to_string();
    checks.host(
        "mig-host-recovery-code-printed",
        !code.is_empty() && !fingerprint.is_empty(),
        format!("no recovery code or fingerprint in {made_out:?}"),
    );
    let code_file = w.join("code.txt");
    fs::write(&code_file, format!("{code}\n")).map_err(|e| e.to_string())?;
    let recovery_pub = fs::read(rk.join("recovery.pem")).map_err(|e| e.to_string())?;

    // Boot B1: B's public key.
    let lb1 = b.boot(
        "mig-b1",
        "hakeys.mode=scenario hakeys.step=mig-b1",
        Duration::from_secs(600),
    )?;
    let rb1 = results(&lb1);
    checks.expect(&rb1, "mig-b1-init", 0, Some("initialised: new root key"));
    checks.expect(&rb1, "mig-b1-pubkey", 0, Some("BEGIN PUBLIC KEY"));
    let b_pem = guest_file(&lb1, "b.pem")?;
    fs::write(w.join("b.pem"), &b_pem).map_err(|e| e.to_string())?;

    // Boot A1: escrow, seal, reseal to B, all in the boot phase.
    a.set_blobs(&[("b.pem", &b_pem), ("recovery.pem", &recovery_pub)])?;
    let la1 = a.boot(
        "mig-a1",
        "hakeys.mode=scenario hakeys.step=mig-a1",
        Duration::from_secs(600),
    )?;
    let ra1 = results(&la1);
    checks.expect(&ra1, "mig-a1-init", 0, Some("NO ESCROW"));
    checks.expect(&ra1, "mig-a1-escrow", 0, Some("hakeys-escrow:v1:"));
    let escrow = guest_file(&la1, "escrow.txt")?;
    let escrow_text = String::from_utf8_lossy(&escrow).into_owned();
    checks.host(
        "mig-a1-escrow-one-line",
        escrow_text.starts_with("hakeys-escrow:v1:") && escrow_text.trim_end().lines().count() == 1,
        format!("escrow output is not one hakeys-escrow:v1: line: {escrow_text:?}"),
    );
    fs::write(w.join("escrow.txt"), &escrow).map_err(|e| e.to_string())?;
    checks.expect(&ra1, "mig-a1-init-again", 0, Some(&fingerprint));
    checks.expect(&ra1, "mig-a1-seal", 0, Some("hakeys:v1:"));
    checks.expect(&ra1, "mig-a1-seal-luks", 0, Some("hakeys:v1:"));
    checks.expect(&ra1, "mig-a1-rotate", 0, Some("epoch 2"));
    checks.expect(&ra1, "mig-a1-seal-2", 0, Some("hakeys:v1:"));
    checks.expect(&ra1, "mig-a1-reseal", 0, Some("hakeys:v1:"));
    checks.expect_err(&ra1, "mig-a1-reseal-luks-no-allow", 4, "--allow-boot");
    checks.expect(&ra1, "mig-a1-reseal-luks", 0, Some("hakeys:v1:"));
    checks.expect(&ra1, "mig-a1-boot-done", 0, None);
    checks.expect(&ra1, "mig-a1-reseal-luks-after-boot-done", 4, None);
    let luks_sha = ra1
        .get("mig-a1-luks-key")
        .map(|s| s.sha256.clone())
        .unwrap_or_default();
    let a_blob = blob_of(&ra1, "mig-a1-seal")?;
    let a2_blob = blob_of(&ra1, "mig-a1-seal-2")?;
    let luks_blob = blob_of(&ra1, "mig-a1-seal-luks")?;
    let a_for_b = blob_of(&ra1, "mig-a1-reseal")?;
    let luks_for_b = blob_of(&ra1, "mig-a1-reseal-luks")?;
    for (n, t) in [
        ("a.blob", &a_blob),
        ("a2.blob", &a2_blob),
        ("luks.blob", &luks_blob),
        ("a-for-b.blob", &a_for_b),
        ("luks-for-b.blob", &luks_for_b),
    ] {
        fs::write(w.join(n), t).map_err(|e| e.to_string())?;
    }

    // Boot B2: B opens what A resealed to it, and keys its volume.
    b.set_blobs(&[
        ("luks-for-b.blob", luks_for_b.as_bytes()),
        ("a-for-b.blob", a_for_b.as_bytes()),
    ])?;
    let rb2 = results(&b.boot(
        "mig-b2",
        "hakeys.mode=scenario hakeys.step=mig-b2",
        Duration::from_secs(600),
    )?);
    checks.expect_err(&rb2, "mig-b2-unseal-luks-offline", 4, "offline");
    checks.expect(&rb2, "mig-b2-import-luks", 0, Some("hakeys:v1:"));
    checks.expect_sha_hex(&rb2, "mig-b2-unseal-luks", &luks_sha);
    checks.expect(&rb2, "mig-b2-luks-format", 0, None);
    checks.expect(&rb2, "mig-b2-luks-open", 0, None);
    checks.expect(&rb2, "mig-b2-luks-close", 0, None);
    checks.expect_sha(&rb2, "mig-b2-unseal-a", b"mig-secret");
    checks.expect(&rb2, "mig-b2-boot-done", 0, None);

    // Host: A is lost. From its escrow and the recovery key alone.
    drop(a);
    let _ = fs::remove_dir_all(qdir().join("boards").join("mig-a"));
    let escrow_f = os(&w.join("escrow.txt"));
    let key_f = os(&rk.join("recovery-key.pem"));
    let b_f = os(&w.join("b.pem"));
    let mut recovered = HashMap::new();
    for (name, blob) in [("a", &a_blob), ("a2", &a2_blob), ("luks", &luks_blob)] {
        let r = host_teectl(
            &teectl,
            &[
                OsStr::new("recover"),
                OsStr::new("--escrow"),
                &escrow_f,
                OsStr::new("--key"),
                &key_f,
                OsStr::new("--to"),
                &b_f,
            ],
            blob.as_bytes(),
        )?;
        let out = String::from_utf8_lossy(&r.out).into_owned();
        checks.host(
            &format!("mig-host-recover-{name}"),
            r.rc == 0 && out.starts_with("hakeys:v1:"),
            format!("exit {} (want 0), stdout {out:?}, stderr {:?}", r.rc, r.err),
        );
        fs::write(w.join(format!("{name}-rec.blob")), &out).map_err(|e| e.to_string())?;
        recovered.insert(name, out);
    }
    let with_code = host_teectl(
        &teectl,
        &[
            OsStr::new("recover"),
            OsStr::new("--escrow"),
            &escrow_f,
            OsStr::new("--key"),
            &os(&code_file),
            OsStr::new("--to"),
            &b_f,
        ],
        a_blob.as_bytes(),
    )?;
    checks.host(
        "mig-host-recover-with-code",
        with_code.rc == 0 && with_code.out.starts_with(b"hakeys:v1:"),
        format!("exit {} (want 0), stderr {:?}", with_code.rc, with_code.err),
    );
    let plain = host_teectl(
        &teectl,
        &[
            OsStr::new("recover"),
            OsStr::new("--escrow"),
            &escrow_f,
            OsStr::new("--key"),
            &key_f,
            OsStr::new("--plaintext"),
        ],
        a_blob.as_bytes(),
    )?;
    checks.host(
        "mig-host-recover-plaintext",
        plain.rc == 0 && plain.out == b"mig-secret",
        format!(
            "exit {} (want 0), {} bytes (want mig-secret), stderr {:?}",
            plain.rc,
            plain.out.len(),
            plain.err
        ),
    );
    let rk2 = w.join("rk2");
    let made2 = host_teectl(
        &teectl,
        &[
            OsStr::new("recovery-key"),
            OsStr::new("new"),
            OsStr::new("--out"),
            &os(&rk2),
        ],
        b"",
    )?;
    let wrong = host_teectl(
        &teectl,
        &[
            OsStr::new("recover"),
            OsStr::new("--escrow"),
            &escrow_f,
            OsStr::new("--key"),
            &os(&rk2.join("recovery-key.pem")),
            OsStr::new("--to"),
            &b_f,
        ],
        a_blob.as_bytes(),
    )?;
    checks.host(
        "mig-host-recover-other-key",
        made2.rc == 0 && wrong.rc == 5 && wrong.out.is_empty(),
        format!("exit {} (want 5), stderr {:?}", wrong.rc, wrong.err),
    );

    // Boot B3: B opens the recovered blobs, and its volume with the
    // recovered LUKS key.
    let get = |n: &str| recovered.get(n).cloned().unwrap_or_default();
    b.set_blobs(&[
        ("luks-rec.blob", get("luks").as_bytes()),
        ("a-rec.blob", get("a").as_bytes()),
        ("a2-rec.blob", get("a2").as_bytes()),
    ])?;
    let rb3 = results(&b.boot(
        "mig-b3",
        "hakeys.mode=scenario hakeys.step=mig-b3",
        Duration::from_secs(600),
    )?);
    checks.expect_err(&rb3, "mig-b3-unseal-luks-offline", 4, "offline");
    checks.expect(&rb3, "mig-b3-import-luks", 0, Some("hakeys:v1:"));
    checks.expect(&rb3, "mig-b3-luks-open", 0, None);
    checks.expect(
        &rb3,
        "mig-b3-luks-marker",
        0,
        Some("HAKEYS-MIGRATED-MARKER"),
    );
    checks.expect(&rb3, "mig-b3-luks-close", 0, None);
    checks.expect_sha(&rb3, "mig-b3-unseal-a", b"mig-secret");
    checks.expect_sha(&rb3, "mig-b3-unseal-a2", b"mig-secret-2");
    checks.expect(&rb3, "mig-b3-boot-done", 0, None);
    Ok(())
}

/// An interactive shell on the same image (disks kept in .cache/qemu/boards/shell).
pub fn shell() -> Result {
    build()?;
    let dir = qdir().join("boards").join("shell");
    let board = if dir.join("rpmb.img").exists() {
        Board {
            dir,
            image: qdir().join("out"),
        }
    } else {
        Board::fresh("shell")?
    };
    eprintln!(
        "qemu-shell: disks in {}; RPMB persists across runs. Ctrl-A X quits QEMU.",
        board.dir.display()
    );
    let mut c = board.qemu("hakeys.mode=shell");
    c.args(["-nographic", "-serial", "mon:stdio", "-serial"])
        .arg(format!(
            "file:{}",
            board.dir.join("shell.secure.log").display()
        ));
    run(&mut c)
}

pub(crate) fn bench_value(lines: &[String], key: &str) -> Option<(u64, u64)> {
    let l = lines
        .iter()
        .find(|l| l.starts_with(&format!("HAKEYS-BENCH {key} ")))?;
    let get = |k: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
    };
    Some((get("runs=")?, get("total_ms=")?))
}
