//! `cargo xtask <task>`: the project's entry points beyond `cargo build`.
//!
//! - `demo`    the main job on the simulator: a walkthrough of teectl;
//! - `test`    every test: format, lints, unit/integration/e2e tests, fuzz smoke,
//!   and the QEMU target's end-to-end scenario (`qemu-test`) and power cuts
//!   (`qemu-powercut`);
//! - `deps`    install what the tests need (apt packages, cargo-fuzz);
//! - `fuzz`    run each fuzz target, seeded from `fuzz/seeds/`, for a short
//!   time (`--seconds N`, default 20) or N executions each (`--runs N`; the
//!   benchmark record uses `--runs 10000000`); `--targets a,b` for some;
//! - `bench`   run the benchmarks and write docs/BENCHMARKS.md;
//! - `ha-test` sealed secrets on real Home Assistant Core 2025.4.4 (a venv
//!   in the cache; part of `test`);
//! - `check-buildroot --buildroot DIR`  Buildroot's own check-package over
//!   `buildroot/`, with a Buildroot checkout in DIR (not part of `test`).
//!
//! Everything it installs or builds beyond `target/` goes under
//! `$XDG_CACHE_HOME/hakeys` (default `~/.cache/hakeys`, override with
//! `HAKEYS_CACHE`), outside the clone, so a second run is fast even from a
//! fresh clone.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod buildroot;
mod docker;
mod fuzz_record;
mod ha;
mod powercut;
mod qemu;
mod qemu_bench;
mod qemu_data;

type Result<T = ()> = std::result::Result<T, String>;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}

pub(crate) fn cache() -> PathBuf {
    if let Some(dir) = env::var_os("HAKEYS_CACHE") {
        return PathBuf::from(dir);
    }
    // Outside the clone, so that a fresh clone on the same machine (as CI
    // makes) starts warm.
    env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("hakeys"))
        .unwrap_or_else(|| root().join(".cache"))
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Run a command, echoing it; fail with its exit status.
pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("+ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn apt_install(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !succeeds(Command::new("dpkg-query").args(["-W", "-f=${Status}", p])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages {missing:?}; run `sudo apt-get install {}`",
            missing.join(" ")
        ));
    }
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The python3 used by the reference-implementation tests: one that has
/// the `cryptography` module. Exported to the tests as HAKEYS_PYTHON.
fn python_with_cryptography() -> Result<String> {
    for py in ["python3", "/usr/bin/python3"] {
        if succeeds(Command::new(py).args(["-c", "import cryptography"])) {
            return Ok(py.into());
        }
    }
    apt_install(&["python3", "python3-cryptography"])?;
    Ok("/usr/bin/python3".into())
}

fn cargo_fuzz() -> Result<PathBuf> {
    let tools = cache().join("tools");
    let bin = tools.join("bin/cargo-fuzz");
    if !bin.exists() {
        run(Command::new(cargo())
            .args(["install", "cargo-fuzz", "--locked", "--root"])
            .arg(&tools))?;
    }
    Ok(bin)
}

fn deps() -> Result<String> {
    let py = python_with_cryptography()?;
    // The daemon's tests: useradd (passwd) and systemd-socket-activate.
    // The secrets tests: PyYAML's safe loader (what Home Assistant's YAML
    // loader builds on) and venv (pip install of the Python package).
    apt_install(&["passwd", "systemd", "python3-yaml", "python3-venv"])?;
    // The container tests: dockerd and a busybox-static image root.
    docker::deps()?;
    cargo_fuzz()?;
    Ok(py)
}

/// Every cargo-fuzz target (`fuzz/Cargo.toml`); each has seeds in
/// `fuzz/seeds/<target>/`.
const FUZZ_TARGETS: &[&str] = &[
    "wire_request",
    "blob_parse",
    "engine_handle",
    "rpmb_frames",
    "rpmb_image",
    "daemon_request",
    "escrow_open",
    "evidence_verify",
    "state_objects",
];

/// How long `cargo xtask fuzz` runs each target.
#[derive(Clone, Copy)]
enum FuzzLimit {
    /// `--seconds N`: N seconds each (the smoke run of `cargo xtask test`).
    Seconds(u64),
    /// `--runs N`: N executions each, however long that takes (the
    /// benchmark record: `--runs 10000000`).
    Runs(u64),
}

/// Run every fuzz target in turn, one after the other. The corpus of each
/// lives in the cache (`fuzz-corpus/<target>`) and grows from run to run;
/// the committed seeds (`fuzz/seeds/<target>/`, valid inputs of every kind
/// the target reads) are copied into it first, so that even a fresh cache
/// starts past every header check. Prints each target's executions and
/// edges covered (libFuzzer's `cov:`) at the end. A crash stops the run;
/// libFuzzer leaves the input in `fuzz/artifacts/<target>/`. `only` (from
/// `--targets a,b`) runs those targets alone, in the same order.
fn fuzz(limit: FuzzLimit, only: Option<String>, record: bool) -> Result {
    use std::io::{BufRead, BufReader};
    let targets: Vec<&str> = match &only {
        None => FUZZ_TARGETS.to_vec(),
        Some(list) => {
            let wanted: Vec<&str> = list.split(',').collect();
            if let Some(bad) = wanted.iter().find(|t| !FUZZ_TARGETS.contains(t)) {
                return Err(format!("no fuzz target {bad}; there are {FUZZ_TARGETS:?}"));
            }
            FUZZ_TARGETS
                .iter()
                .copied()
                .filter(|t| wanted.contains(t))
                .collect()
        }
    };
    let bin = cargo_fuzz()?;
    let dir = root().join("fuzz");
    let mut summary = Vec::new();
    for t in targets {
        let corpus = cache().join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
        let seeds = dir.join("seeds").join(t);
        let entries = std::fs::read_dir(&seeds)
            .map_err(|e| format!("no seeds for {t} in {}: {e}", seeds.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", seeds.display()))?;
            let to = corpus.join(format!("seed-{}", entry.file_name().to_string_lossy()));
            std::fs::copy(entry.path(), &to).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    entry.path().display(),
                    to.display()
                )
            })?;
        }
        let limit_args = match limit {
            FuzzLimit::Seconds(s) => [format!("-max_total_time={s}"), "-runs=-1".into()],
            FuzzLimit::Runs(n) => ["-max_total_time=0".into(), format!("-runs={n}")],
        };
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&dir)
            .args(["run", "--sanitizer", "none", t])
            .arg(&corpus)
            .arg("--")
            .args(limit_args)
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .env("CARGO_TARGET_DIR", cache().join("fuzz-target"))
            .stderr(std::process::Stdio::piped());
        eprintln!("+ {}", describe(&cmd));
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", describe(&cmd)))?;
        // libFuzzer reports on stderr: pass it through, keeping the
        // coverage at the start (after the corpus is loaded) and at the
        // end, the final execution count and the units it added.
        let (mut cov, mut execs, mut first_cov, mut added) = (None, None, None, None);
        if let Some(err) = child.stderr.take() {
            for line in BufReader::new(err)
                .lines()
                .map_while(std::result::Result::ok)
            {
                eprintln!("{line}");
                let mut words = line.split_whitespace();
                while let Some(w) = words.next() {
                    if w == "cov:" {
                        cov = words.next().and_then(|n| n.parse::<u64>().ok()).or(cov);
                        if line.contains("INITED") && first_cov.is_none() {
                            first_cov = cov;
                        }
                    }
                }
                if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                    execs = n.trim().parse::<u64>().ok();
                }
                if let Some(n) = line.strip_prefix("stat::new_units_added:") {
                    added = n.trim().parse::<u64>().ok();
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("cannot wait for {}: {e}", describe(&cmd)))?;
        if !status.success() {
            return Err(format!(
                "fuzz target {t} failed ({status}); the input is in fuzz/artifacts/{t}/"
            ));
        }
        summary.push(fuzz_record::Row {
            target: t.to_string(),
            executions: execs,
            edges_start: first_cov,
            edges_end: cov,
            new_units: added,
            seconds: started.elapsed().as_secs(),
        });
    }
    eprintln!("\nfuzz target       executions    edges (cov)  seconds");
    for r in &summary {
        let show = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        eprintln!(
            "{:<17} {:>12} {:>12} {:>8}",
            r.target,
            show(r.executions),
            show(r.edges_end),
            r.seconds
        );
    }
    if record {
        fuzz_record::write(&summary)?;
    }
    Ok(())
}

fn test() -> Result {
    let started = Instant::now();
    let py = deps()?;
    let mut steps: Vec<(&str, Result)> = Vec::new();
    let root = root();
    let mut step = |name: &'static str, cmd: &mut Command| -> bool {
        let r = run(cmd.current_dir(&root));
        let ok = r.is_ok();
        steps.push((name, r));
        ok
    };
    let ok = step(
        "cargo fmt --check",
        Command::new(cargo()).args(["fmt", "--all", "--", "--check"]),
    ) && step(
        "cargo clippy",
        Command::new(cargo()).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    ) && step(
        "cargo test",
        Command::new(cargo())
            .args(["test", "--workspace"])
            .env("HAKEYS_PYTHON", &py),
    ) && step(
        "fuzz smoke",
        Command::new(cargo()).args(["xtask", "fuzz", "--seconds", "15"]),
    ) && step(
        "qemu-test",
        Command::new(cargo()).args(["xtask", "qemu-test"]),
    ) && step(
        // In-place encryption of the data partition, power cuts during it,
        // growing it on LUKS (issue 15).
        "qemu-data",
        Command::new(cargo()).args(["xtask", "qemu-data"]),
    ) && step(
        // Every cut point of the operations repeated on a live board (about
        // 5 minutes); the once-per-board ones (init, first rotate, v1
        // migration) are in the full `cargo xtask qemu-powercut` run.
        "qemu-powercut",
        Command::new(cargo()).args([
            "xtask",
            "qemu-powercut",
            "--ops",
            "rotate,retire,new-identity",
        ]),
    ) && step("ha-test", Command::new(cargo()).args(["xtask", "ha-test"]));
    let failed = steps.iter().filter(|(_, r)| r.is_err()).count();
    eprintln!(
        "\nxtask test summary ({:.0} s):",
        started.elapsed().as_secs_f64()
    );
    for (name, r) in &steps {
        eprintln!("  {:<20} {}", name, if r.is_ok() { "ok" } else { "FAILED" });
    }
    println!("{} passed, {} failed", steps.len() - failed, failed);
    if ok {
        Ok(())
    } else {
        Err("some steps failed".into())
    }
}

pub(crate) fn teectl_bin() -> Result<PathBuf> {
    run(Command::new(cargo()).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "teectl",
        "--bin",
        "teectl",
    ]))?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("release/teectl"))
}

/// Run teectl with `stdin`, show it, return stdout.
fn demo_step(
    teectl: &Path,
    state: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    show: &str,
) -> Result<Vec<u8>> {
    use std::io::Write;
    println!("\n$ {show}");
    let mut child = Command::new(teectl)
        .args(["--backend", "sim", "--state-dir"])
        .arg(state)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run teectl: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.unwrap_or_default())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("teectl {} failed ({})", args.join(" "), out.status));
    }
    Ok(out.stdout)
}

fn demo(state: Option<PathBuf>) -> Result {
    let teectl = teectl_bin()?;
    let state = state.unwrap_or_else(|| cache().join("demo-state"));
    let _ = std::fs::remove_dir_all(&state);
    let work = cache().join("demo-files");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    println!(
        "hakeys walkthrough on the simulator backend (state in {})",
        state.display()
    );
    demo_step(&teectl, &state, &["init"], None, "teectl init")?;
    demo_step(&teectl, &state, &["status"], None, "teectl status")?;
    let blob = demo_step(
        &teectl,
        &state,
        &["seal", "--namespace", "ha/core"],
        Some(b"my-mqtt-password"),
        "printf my-mqtt-password | teectl seal --namespace ha/core > mqtt.blob",
    )?;
    let pt = demo_step(
        &teectl,
        &state,
        &["unseal"],
        Some(&blob),
        "teectl unseal < mqtt.blob",
    )?;
    println!();
    if pt != b"my-mqtt-password" {
        return Err("unseal did not return the sealed secret".into());
    }
    let pem = demo_step(
        &teectl,
        &state,
        &["pubkey"],
        None,
        "teectl pubkey > board.pem",
    )?;
    let pem_path = work.join("board.pem");
    std::fs::write(&pem_path, &pem).map_err(|e| e.to_string())?;
    println!("\n# On a laptop, with no TEE and no state: seal to the board's public key");
    let offline_state = cache().join("demo-laptop-unused");
    let offline = demo_step(&teectl, &offline_state,
        &["seal", "--namespace", "addon/mosquitto", "--to", &pem_path.to_string_lossy()],
        Some(b"sealed-on-a-laptop"), "printf sealed-on-a-laptop | teectl seal --namespace addon/mosquitto --to board.pem > addon.blob")?;
    if offline_state.exists() {
        return Err("offline sealing touched a state directory".into());
    }
    let pt = demo_step(
        &teectl,
        &state,
        &["unseal"],
        Some(&offline),
        "teectl unseal < addon.blob   # on the board",
    )?;
    println!();
    if pt != b"sealed-on-a-laptop" {
        return Err("the board did not open the offline blob".into());
    }
    let ev = demo_step(
        &teectl,
        &state,
        &["attest", "--challenge", "00112233"],
        None,
        "teectl attest --challenge 00112233 > evidence",
    )?;
    demo_step(
        &teectl,
        &state,
        &[
            "verify",
            "--pubkey",
            &pem_path.to_string_lossy(),
            "--challenge",
            "00112233",
        ],
        Some(&ev),
        "teectl verify --pubkey board.pem --challenge 00112233 < evidence",
    )?;
    println!("\nwalkthrough complete");
    Ok(())
}

fn capture(cmd: &mut Command) -> Result<String> {
    eprintln!("+ {}", describe(cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed ({})", describe(cmd), out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| "non-UTF-8 output".into())
}

/// Run every benchmark and write docs/BENCHMARKS.md.
fn bench() -> Result {
    let root = root();
    run(Command::new(cargo()).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "hakeys-client",
        "-p",
        "teectl",
        "-p",
        "teed",
        "-p",
        "rpmb-sim",
        "--bins",
        "--examples",
    ]))?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let engine = capture(
        Command::new(target.join("examples/bench"))
            .arg("--teectl")
            .arg(target.join("teectl")),
    )?;
    let daemon = capture(
        Command::new(target.join("examples/daemon_bench"))
            .arg("--teed")
            .arg(target.join("teed"))
            .args(["--seconds", "3", "--load-seconds", "10"]),
    )?;
    let dir = cache().join("bench-rpmb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rpmb = capture(
        Command::new(target.join("rpmb-sim"))
            .arg("bench")
            .arg(&dir)
            .args(["--seconds", "2"]),
    )?;
    let machine = machine_line();
    let rustc = capture(Command::new("rustc").arg("--version")).unwrap_or_default();
    let date = capture(Command::new("date").args(["-u", "+%Y-%m-%d"])).unwrap_or_default();
    let doc = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench` (release build); figures are what that run measured, \
         never asserted by tests. Re-run it to update this file.\n\n\
         - date: {}\n- machine: {machine}\n- toolchain: {}\n\n{engine}\n{daemon}\n## rpmb-sim device model\n\n{rpmb}\n\
         ## The real stack\n\nFigures from the QEMU target (TA round trip, `teectl unseal` through libteec, \
         OP-TEE's PKCS#11 TA for comparison, RPMB frames per operation, TA size) are in \
         [BENCHMARKS-qemu.md](BENCHMARKS-qemu.md), written by `cargo xtask qemu-bench`.\n",
        date.trim(),
        rustc.trim()
    );
    let path = root.join("docs/BENCHMARKS.md");
    // Keep the fuzzing record (`cargo xtask fuzz --runs N --record`).
    let doc = match std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| fuzz_record::section(&old))
    {
        Some(fz) => doc + "\n" + &fz,
        None => doc,
    };
    std::fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The section of a Markdown record that starts at the line `heading`, to
/// the next `## ` heading or the end (with one final newline).
pub(crate) fn doc_section(doc: &str, heading: &str) -> Option<String> {
    let start = doc
        .match_indices(heading)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || doc.get(i - 1..i) == Some("\n"))?;
    let rest = doc.get(start..)?;
    let end = rest
        .get(3..)
        .and_then(|r| r.find("\n## "))
        .map_or(rest.len(), |e| e + 4);
    rest.get(..end).map(|s| s.trim_end().to_string() + "\n")
}

/// "CPU model, N cores", for benchmark records.
pub(crate) fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores")
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(opt("--state-dir").map(PathBuf::from)),
        Some("test") => test(),
        Some("bench") => bench(),
        Some("qemu-test") => qemu::test(qemu::CI_XTESTS),
        Some("qemu-shell") => qemu::shell(),
        Some("qemu-bench") => qemu::bench(),
        Some("qemu-data") => qemu_data::main(&args[1..]),
        Some("qemu-powercut") => powercut::main(&args[1..]),
        Some("ha-test") => ha::test(),
        Some("check-buildroot") => buildroot::check(opt("--buildroot")),
        Some("deps") => deps().map(|py| eprintln!("ok (python: {py})")),
        Some("fuzz") => match (opt("--seconds"), opt("--runs")) {
            (Some(_), Some(_)) => Err("fuzz takes --seconds or --runs, not both".into()),
            (None, Some(n)) => match n.parse() {
                Ok(n) => fuzz(
                    FuzzLimit::Runs(n),
                    opt("--targets"),
                    args.iter().any(|a| a == "--record"),
                ),
                Err(_) => Err("--runs takes a whole number".into()),
            },
            (s, None) => match s.unwrap_or_else(|| "20".into()).parse() {
                Ok(s) => fuzz(FuzzLimit::Seconds(s), opt("--targets"), false),
                Err(_) => Err("--seconds takes a whole number".into()),
            },
        },
        _ => Err(
            "usage: cargo xtask demo [--state-dir DIR] | test | deps | fuzz [--seconds N | --runs N [--record]] [--targets a,b] | bench | qemu-test | qemu-data [--record] [--boards a,cut,end] | qemu-shell | qemu-bench | qemu-powercut [--ops a,b] [--modes before,after] [--record] | ha-test | check-buildroot --buildroot DIR"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
