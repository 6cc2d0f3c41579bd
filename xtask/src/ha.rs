//! `cargo xtask ha-test`: sealed secrets on real Home Assistant Core.
//!
//! Installs Home Assistant Core 2025.4.4 into a virtual environment in the
//! cache (Python 3.13 from pyenv; the wheel's own `package_constraints.txt`
//! as constraints; the frontend, `isal` and `colorlog` that a minimal
//! configuration needs; kept, so a second run is fast), then, with the
//! release `teectl` on the simulator backend:
//!
//! 1. imports `tests/tests/fixtures/secrets-hostile.yaml` into
//!    `CONFIG/secrets.sealed.yaml` and renders it to a tmpfs folder, with
//!    `CONFIG/secrets.yaml` a symlink to the rendering (the board layout,
//!    docs/home-assistant.md);
//! 2. starts `hass -c CONFIG --skip-pip` on a free localhost port, with the
//!    test-only integration `tests/ha-core/custom_components/hakeys_probe`,
//!    whose configuration is one `!secret` per fixture value; the values
//!    Core resolved must equal, type for type and value for value, what
//!    Core's own YAML loader makes of the original plaintext;
//! 3. a tampered blob and a blob of another namespace make `render` fail
//!    naming the key, with the rendering Core reads unchanged;
//! 4. `teectl secrets set` + render + a YAML reload inside Core (the one
//!    every integration's reload service does) shows the new value;
//! 5. Core is stopped; `python -m homeassistant --script check_config`
//!    passes;
//! 6. a backup of CONFIG made as the Supervisor makes it (securetar) holds
//!    `secrets.yaml` as a symlink and no secret value anywhere.
//!
//! Everything it starts it stops, and it removes what it made (but the
//! cached venv).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{cache, root, run, Result};

/// The Home Assistant Core the test runs (the newest pip offers for
/// Python 3.13 here; docs/home-assistant.md).
pub const CORE_VERSION: &str = "2025.4.4";
/// The frontend Core 2025.4.4 pins (a critical integration: without it Core
/// starts in recovery mode).
pub const FRONTEND_VERSION: &str = "20250411.0";

/// What the venv was built from: a venv whose marker says otherwise is
/// rebuilt.
fn spec() -> String {
    format!(
        "homeassistant=={CORE_VERSION} home-assistant-frontend=={FRONTEND_VERSION} isal colorlog"
    )
}

fn ha_dir() -> PathBuf {
    cache().join("ha")
}

/// The venv, named after what is in it.
fn venv_dir() -> PathBuf {
    ha_dir().join(format!("core-{CORE_VERSION}-py3.13"))
}

/// A Python 3.13 interpreter: `python3.13` on PATH, else the newest 3.13.x
/// under pyenv's root. Never a silent skip: none is an error that says
/// what to install.
fn python313() -> Result<PathBuf> {
    let on_path = Command::new("python3.13")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    if let Some(p) = on_path {
        return Ok(p);
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(r) = std::env::var_os("PYENV_ROOT") {
        roots.push(r.into());
    }
    if let Ok(o) = Command::new("pyenv").arg("root").output() {
        if o.status.success() {
            roots.push(String::from_utf8_lossy(&o.stdout).trim().into());
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".pyenv"));
    }
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for r in &roots {
        let Ok(entries) = std::fs::read_dir(r.join("versions")) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(patch) = name.strip_prefix("3.13.") else {
                continue;
            };
            let Ok(patch) = patch.parse::<u32>() else {
                continue;
            };
            let bin = e.path().join("bin/python3.13");
            if bin.exists() {
                found.push((patch, bin));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        format!(
            "Home Assistant Core {CORE_VERSION} needs Python 3.13, and there is none: no `python3.13` on PATH and no 3.13.x under pyenv ({}). Install one (`pyenv install 3.13`) and run again; this test is never skipped",
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The venv's python, installing Core first if the cache has no complete
/// venv of this spec.
pub fn core_python() -> Result<PathBuf> {
    let venv = venv_dir();
    let py = venv.join("bin/python3");
    let marker = venv.join(".hakeys-complete");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == spec()) && py.exists() {
        eprintln!(
            "ha-test: Home Assistant Core {CORE_VERSION} from the cache ({})",
            venv.display()
        );
        return Ok(py);
    }
    let started = Instant::now();
    let base = python313()?;
    eprintln!(
        "ha-test: installing Home Assistant Core {CORE_VERSION} into {} with {} (a few minutes, once)",
        venv.display(),
        base.display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove the incomplete {}: {e}", venv.display()))?;
    }
    std::fs::create_dir_all(ha_dir()).map_err(|e| e.to_string())?;
    run(Command::new(&base).args(["-m", "venv"]).arg(&venv))?;
    let pip = |args: &[&str]| -> Command {
        let mut c = Command::new(&py);
        c.args(["-m", "pip"])
            .args(args)
            .env("PIP_CACHE_DIR", ha_dir().join("pip-cache"))
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        c
    };
    // The wheel carries the constraints Core is tested with.
    let wheels = ha_dir().join("wheels");
    run(pip(&[
        "download",
        "--no-deps",
        "--only-binary=:all:",
        &format!("homeassistant=={CORE_VERSION}"),
        "-d",
    ])
    .arg(&wheels))?;
    let wheel = wheels.join(format!("homeassistant-{CORE_VERSION}-py3-none-any.whl"));
    let constraints = ha_dir().join(format!("package_constraints-{CORE_VERSION}.txt"));
    run(Command::new(&py).args([
        "-c",
        "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('homeassistant/package_constraints.txt'))",
    ]).arg(&wheel).arg(&constraints))?;
    run(pip(&["install", "--prefer-binary", "-c"])
        .arg(&constraints)
        .arg(&wheel)
        .args([
            &format!("home-assistant-frontend=={FRONTEND_VERSION}"),
            "isal",
            "colorlog",
        ]))?;
    // The pieces the test relies on are there.
    run(Command::new(&py).args([
        "-c",
        "import homeassistant.const as c, securetar, annotatedyaml, yaml; assert c.__version__ == '2025.4.4', c.__version__",
    ]))?;
    std::fs::write(&marker, spec()).map_err(|e| e.to_string())?;
    eprintln!(
        "ha-test: Home Assistant Core {CORE_VERSION} installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(py)
}

/// A folder removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, prefix: &str) -> Result<TempDir> {
        let mut nonce = [0u8; 4];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut nonce))
            .map_err(|e| e.to_string())?;
        let dir = parent.join(format!(
            "{prefix}{}-{:02x}{:02x}{:02x}{:02x}",
            std::process::id(),
            nonce[0],
            nonce[1],
            nonce[2],
            nonce[3]
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

use std::os::unix::fs::DirBuilderExt;

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Home Assistant Core, stopped (SIGTERM, then SIGKILL) when dropped.
struct Core {
    child: Option<Child>,
    log: PathBuf,
}

impl Core {
    fn start(py: &Path, config: &Path, log: PathBuf) -> Result<Core> {
        let out = fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let hass = py.with_file_name("hass");
        eprintln!("+ {} -c {} --skip-pip", hass.display(), config.display());
        let child = Command::new(&hass)
            .arg("-c")
            .arg(config)
            .arg("--skip-pip")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", hass.display()))?;
        Ok(Core {
            child: Some(child),
            log,
        })
    }

    /// Fail with the end of Core's output if it exited.
    fn alive(&mut self) -> Result {
        if let Some(st) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            return Err(format!(
                "Home Assistant Core exited ({st}):\n{}",
                self.tail()
            ));
        }
        Ok(())
    }

    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM and wait (up to 60 s); Core stops cleanly.
    fn stop(&mut self) -> Result {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_raw(c.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("Home Assistant Core stopped with {st}"))
                };
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err("Home Assistant Core did not stop within 60 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for `path` to appear (Core keeps running meanwhile).
fn wait_for(path: &Path, core: &mut Core, secs: u64) -> Result {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        core.alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not appear within {secs} s; Core's output:\n{}",
                path.display(),
                core.tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The test's teectl: the release build on a simulator state directory.
struct Teectl {
    bin: PathBuf,
    state: PathBuf,
}

impl Teectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--backend", "sim", "--state-dir"])
            .arg(&self.state)
            .args(args)
            .env_remove("TEECTL_STATE_DIR");
        c
    }

    /// Run with `stdin`; (exit code, stdout, stderr).
    fn run(&self, args: &[&str], stdin: &[u8]) -> Result<(i32, String, String)> {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run teectl: {e}"))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> Result<String> {
        let (code, out, err) = self.run(args, stdin)?;
        if code != 0 {
            return Err(format!("teectl {} failed ({code}): {err}", args.join(" ")));
        }
        Ok(out)
    }
}

/// `teectl secrets VERB --in FROM --out TO`'s arguments.
fn secrets_in_out<'a>(verb: &'a str, from: &'a Path, to: &'a Path) -> Result<[&'a str; 6]> {
    Ok([
        "secrets",
        verb,
        "--in",
        path_str(from)?,
        "--out",
        path_str(to)?,
    ])
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// A YAML double-quoted scalar for `s` (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    double_quoted(s, |c| {
        ((c as u32) < 0x20 || c == '\u{7f}').then(|| format!("\\x{:02X}", c as u32))
    })
}

/// A JSON string literal (for the names file the helper reads).
fn json_string(s: &str) -> String {
    double_quoted(s, |c| {
        ((c as u32) < 0x20).then(|| format!("\\u{:04x}", c as u32))
    })
}

/// `s` in double quotes with `"` and `\` escaped, and each character that
/// `control` gives an escape for written as that escape.
fn double_quoted(s: &str, control: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => match control(c) {
                Some(escape) => out.push_str(&escape),
                None => out.push(c),
            },
        }
    }
    out.push('"');
    out
}

fn on_tmpfs(dir: &Path) -> bool {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .is_ok_and(|o| matches!(String::from_utf8_lossy(&o.stdout).trim(), "tmpfs" | "ramfs"))
}

/// Bytes and inode of a file: an untouched file keeps both.
fn snapshot(path: &Path) -> Result<(Vec<u8>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((fs::read(path).map_err(|e| e.to_string())?, m.ino()))
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free localhost port: {e}"))
}

/// Replace the value on `key`'s line of a sealed file (keys are plain).
fn with_value(sealed: &str, key: &str, token: &str) -> Result<String> {
    let prefix = format!("{key}: ");
    if !sealed.lines().any(|l| l.starts_with(&prefix)) {
        return Err(format!("no line for {key} in the sealed file"));
    }
    Ok(sealed
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{prefix}{token}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// A rendering that must fail: exit `code`, the key named, the rendering
/// Core reads unchanged.
fn render_must_fail(
    teectl: &Teectl,
    sealed: &Path,
    rendered: &Path,
    key: &str,
    code: i32,
) -> Result {
    let before = snapshot(rendered)?;
    let (got, _, err) = teectl.run(&secrets_in_out("render", sealed, rendered)?, b"")?;
    if got != code || !err.contains(&format!("key \"{key}\"")) {
        return Err(format!(
            "render of a bad blob for {key}: exit {got} (expected {code}), stderr: {err}"
        ));
    }
    if snapshot(rendered)? != before {
        return Err("a failed render changed the rendering Core reads".into());
    }
    eprintln!("ha-test: render refused ({code}): {}", err.trim());
    Ok(())
}

/// `cargo xtask ha-test`.
pub fn test() -> Result {
    let started = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |what: &'static str, timings: &mut Vec<(&str, Duration)>| {
        timings.push((what, lap.elapsed()));
        lap = Instant::now();
    };
    let py = core_python()?;
    mark("Core venv", &mut timings);
    let teectl = crate::teectl_bin()?;
    mark("teectl build", &mut timings);

    let here = root().join("tests/ha-core");
    let helper = here.join("helper.py");
    let fixture = root().join("tests/tests/fixtures/secrets-hostile.yaml");
    let work = TempDir::new(&std::env::temp_dir(), "hakeys-ha-test-")?;
    let shm = Path::new("/dev/shm");
    if !on_tmpfs(shm) {
        return Err("/dev/shm is not a tmpfs here: the rendering must live in RAM".into());
    }
    let ram = TempDir::new(shm, "hakeys-ha-test-")?;
    let config = work.0.join("config");
    let records = work.0.join("records");
    let trigger = work.0.join("reload-now");
    for d in [&config, &records, &config.join("custom_components")] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    run(Command::new("cp")
        .arg("-r")
        .arg(here.join("custom_components/hakeys_probe"))
        .arg(config.join("custom_components/")))?;
    let t = Teectl {
        bin: teectl,
        state: work.0.join("state"),
    };
    t.ok(&["init"], b"")?;

    // What Core's own loader makes of the original plaintext, the names in
    // order, and the probe's `values:` (one `!secret` per name).
    let expected = work.0.join("expected.json");
    let names = work.0.join("names.json");
    let values = work.0.join("values.yaml");
    run(Command::new(&py)
        .arg(&helper)
        .arg("expect")
        .arg(&fixture)
        .arg(&expected)
        .arg(&names)
        .arg(&values))?;

    // The board layout: sealed file in CONFIG, rendering in RAM, the link.
    let sealed = config.join("secrets.sealed.yaml");
    let rendered = ram.0.join("secrets.yaml");
    t.ok(&secrets_in_out("import", &fixture, &sealed)?, b"")?;
    t.ok(&secrets_in_out("render", &sealed, &rendered)?, b"")?;
    std::os::unix::fs::symlink(&rendered, config.join("secrets.yaml"))
        .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let mut conf = format!(
        "homeassistant:\n  name: hakeys ha-test\n  latitude: 52.37\n  longitude: 4.89\n  elevation: 0\n  unit_system: metric\n  time_zone: UTC\n  country: NL\n  currency: EUR\n\
         http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
         hakeys_probe:\n  out: {}\n  trigger: {}\n  values:\n",
        quoted(path_str(&records)?),
        quoted(path_str(&trigger)?)
    );
    conf.push_str(&fs::read_to_string(&values).map_err(|e| e.to_string())?);
    fs::write(config.join("configuration.yaml"), conf).map_err(|e| e.to_string())?;
    mark("set-up, import, render", &mut timings);

    // Core resolves every secret through the link.
    let mut core = Core::start(&py, &config, work.0.join("hass.log"))?;
    wait_for(&records.join("0.json"), &mut core, 180)?;
    mark("Core start until the values are resolved", &mut timings);
    let compare = |record: &str, overrides: &[&str]| -> Result {
        run(Command::new(&py)
            .arg(&helper)
            .arg("compare")
            .arg(&expected)
            .arg(records.join(record))
            .arg(&names)
            .args(overrides))
    };
    compare("0.json", &[])?;

    // Blobs that do not open: render fails, naming the key; Core's view stays.
    let good = fs::read_to_string(&sealed).map_err(|e| e.to_string())?;
    let bad = work.0.join("bad.sealed.yaml");
    let line = good
        .lines()
        .find(|l| l.starts_with("port: "))
        .ok_or("no port line")?;
    let blob = line.rsplit(' ').next().ok_or("no blob")?;
    let mut flipped = blob.as_bytes().to_vec();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).map_err(|e| e.to_string())?;
    fs::write(&bad, good.replace(blob, &flipped)).map_err(|e| e.to_string())?;
    render_must_fail(&t, &bad, &rendered, "port", 5)?;
    let other = t.ok(&["seal", "--namespace", "ha/other"], b"other-namespace-HKT")?;
    fs::write(&bad, with_value(&good, "plain_password", other.trim())?)
        .map_err(|e| e.to_string())?;
    render_must_fail(&t, &bad, &rendered, "plain_password", 4)?;

    // A new value: set, render, and a YAML reload in Core shows it.
    const NEW: &str = "changed: \"by set\" #HKT2\n";
    t.ok(
        &[
            "secrets",
            "set",
            "--file",
            path_str(&sealed)?,
            "plain_password",
        ],
        NEW.as_bytes(),
    )?;
    t.ok(&secrets_in_out("render", &sealed, &rendered)?, b"")?;
    fs::write(&trigger, "").map_err(|e| e.to_string())?;
    wait_for(&records.join("1.json"), &mut core, 60)?;
    compare(
        "1.json",
        &["plain_password", &format!("[\"str\",{}]", json_string(NEW))],
    )?;
    mark("tamper checks, set, render, reload", &mut timings);
    core.stop()?;
    mark("Core stop", &mut timings);

    // Core's own configuration check, through the link.
    let out = Command::new(&py)
        .args(["-m", "homeassistant", "--script", "check_config", "-c"])
        .arg(&config)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not defined") {
        return Err(format!(
            "check_config failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    eprintln!("ha-test: check_config passed");
    mark("check_config", &mut timings);

    // A backup as the Supervisor makes it: the link, no plaintext.
    let tar = work.0.join("backup.tar");
    run(Command::new(&py)
        .arg(&helper)
        .arg("backup")
        .arg(&config)
        .arg(&tar))?;
    // Searched for: every string value of the fixture (the helper takes
    // them from expected.json), the new value, and every line of the
    // rendering that holds one (as the rendering escapes it).
    let rendering = fs::read_to_string(&rendered).map_err(|e| e.to_string())?;
    let mut needles: Vec<String> = vec![NEW.to_string()];
    needles.extend(
        rendering
            .lines()
            .filter(|l| l.contains("HKT"))
            .map(str::to_string),
    );
    fs::write(
        work.0.join("needles.json"),
        format!(
            "[{}]",
            needles
                .iter()
                .map(|n| json_string(n))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .map_err(|e| e.to_string())?;
    run(Command::new(&py)
        .arg(&helper)
        .arg("scan")
        .arg(&tar)
        .arg(work.0.join("needles.json"))
        .arg(&rendered)
        .arg(&expected))?;
    // The scan is worth something: the same backup with the plaintext in
    // place of the link is caught.
    let link = config.join("secrets.yaml");
    fs::remove_file(&link).map_err(|e| e.to_string())?;
    fs::copy(&rendered, &link).map_err(|e| e.to_string())?;
    let control = work.0.join("control.tar");
    run(Command::new(&py)
        .arg(&helper)
        .arg("backup")
        .arg(&config)
        .arg(&control))?;
    let caught = Command::new(&py)
        .arg(&helper)
        .arg("scan")
        .arg(&control)
        .arg(work.0.join("needles.json"))
        .arg(&rendered)
        .arg(&expected)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if caught.success() {
        return Err("the backup scan did not notice a plaintext secrets.yaml".into());
    }
    mark("backup and its control", &mut timings);

    eprintln!("ha-test: passed; timings:");
    for (what, d) in &timings {
        eprintln!("  {what:<45} {:>6.1} s", d.as_secs_f64());
    }
    eprintln!(
        "  {:<45} {:>6.1} s",
        "total",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
