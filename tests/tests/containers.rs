//! Callers in real Docker containers, as on stock Home Assistant OS: every
//! container runs as uid 0, and teed tells them apart by the container they
//! run in (pidfd, cgroup, then Docker's name for it), under the shipped
//! policy `systemd/teed-policy.toml`.
//!
//! Each test starts its own `dockerd` (Debian's `docker.io`, installed by
//! `cargo xtask deps`) with a private data root, exec root and socket in a
//! temporary directory, no network, no iptables; builds a test image from
//! a busybox-static root with `docker import` (no registry); and stops all
//! of it at the end, containers, `containerd` and mounts included, even when
//! the test fails (and a run that was killed is cleaned up by the next).
//!
//! As on HA OS, teed's socket is in a directory on the host's `/dev` itself
//! (`/dev/hakeys-t-*` here, `/dev/hakeys` on a board), and every container
//! gets the host's `/dev` bind-mounted read-only at its top only, as the
//! Supervisor's `MOUNT_DEV` (`ReadOnlyNonRecursive`) and Docker 20.10's `ro`
//! do: `connect()` works through it, and no container can remove or replace
//! the socket (a file system mounted below `/dev` would stay writable in the
//! containers; teed's socket is not on one). The client
//! in the containers is the Python package `hakeys` (`python/`; the
//! containers see the host's `/usr`, for Python), and once `teectl
//! --via-daemon`. Needs root (dockerd, mounts), as in CI.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hakeys_e2e::output::{fails, ok, stderr};
use hakeys_e2e::{run_with_stdin, teectl_bin, teed_docker_proxy_bin, teed_sim};
use serde_json::Value;

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const PYTHON: &str = "/usr/bin/python3";
const IMAGE: &str = "hakeys-test:1";
/// Temporary directories of this test: `<tmp>/hakeys-dockerd-<pid>-<n>`.
const PREFIX: &str = "hakeys-dockerd-";
const REFUSED: i32 = 4;

/// One dockerd at a time (two cores; each test has its own).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Field 22 of /proc/PID/stat (start time), to tell a live owner from a
/// reused pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)
        .map(str::to_owned)
}

/// Every process id under /proc (none if it cannot be read).
fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for pid in pids() {
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// Processes in the cgroup of container `id`.
fn processes_in_container(id: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
        })
        .collect()
}

/// Mount points at or under `path`, deepest first.
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let p = path.to_string_lossy().into_owned();
    let mut out: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| *m == p || m.starts_with(&format!("{p}/")))
        .map(PathBuf::from)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out.dedup();
    out
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

/// Stop everything a lab left behind: its dockerd, containerd, shims and
/// containers, its mounts, its files. Returns what could not be stopped.
fn tear_down(dir: &Path, dev: &Path, containers: &[String]) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    // dockerd first, gracefully: it stops its containers and containerd.
    if let Some(pid) = fs::read_to_string(dir.join("docker.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        if processes_mentioning(&needle).iter().any(|(p, _)| *p == pid) {
            kill(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Whatever is still there (containerd, shims, a dockerd that would not
    // stop), and every process of the lab's containers.
    for _ in 0..3 {
        let mut pids: Vec<u32> = processes_mentioning(&needle)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for id in containers {
            pids.extend(processes_in_container(id));
        }
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            kill(*p, "KILL");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for m in mounts_under(dir).into_iter().chain(mounts_under(dev)) {
        let st = Command::new("umount")
            .arg(&m)
            .stderr(Stdio::null())
            .status();
        if !st.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("--lazy").arg(&m).status();
        }
    }
    if dev.to_string_lossy().starts_with("/dev/hakeys-t-") {
        let _ = fs::remove_dir_all(dev);
    }
    let _ = fs::remove_dir_all(dir);
    let mut left = Vec::new();
    for (p, cmd) in processes_mentioning(&needle) {
        left.push(format!("process {p} still runs: {cmd}"));
    }
    for id in containers {
        for p in processes_in_container(id) {
            left.push(format!("process {p} of container {} still runs", &id[..12]));
        }
    }
    for m in mounts_under(dir).into_iter().chain(mounts_under(dev)) {
        left.push(format!("{} is still mounted", m.display()));
    }
    if dir.exists() {
        left.push(format!("{} is still there", dir.display()));
    }
    if dev.exists() {
        left.push(format!("{} is still there", dev.display()));
    }
    left
}

/// Labs of earlier runs that were killed before they could clean up: their
/// owner (pid and start time, written at start) is gone.
fn clean_stale_labs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let dir = e.path();
        let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
        let mut w = owner.split_whitespace();
        let (pid, start) = (w.next().and_then(|p| p.parse().ok()), w.next());
        let live = pid.is_some_and(|p| start.is_some() && start_time(p).as_deref() == start);
        if live {
            continue;
        }
        let dev = PathBuf::from(
            fs::read_to_string(dir.join("dev"))
                .unwrap_or_default()
                .trim(),
        );
        let containers: Vec<String> = fs::read_to_string(dir.join("containers"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let dev = if dev.starts_with("/dev/hakeys-t-") {
            dev
        } else {
            PathBuf::from("/nonexistent")
        };
        let left = tear_down(&dir, &dev, &containers);
        eprintln!("cleaned up a stale lab {}: {left:?}", dir.display());
    }
}

/// A private dockerd, a test image, teed (and teed-docker-proxy).
struct Lab {
    dir: PathBuf,
    /// The directory on the host's /dev that holds teed's socket.
    dev: PathBuf,
    dockerd: Option<Child>,
    teed: Option<Child>,
    proxy: Option<Child>,
    containers: Vec<String>,
    finished: bool,
    started: Instant,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.finished {
            let left = self.stop_all();
            if !left.is_empty() {
                eprintln!("left behind: {left:?}");
            }
        }
    }
}

impl Lab {
    /// Start dockerd and build the test image.
    fn start() -> Lab {
        assert!(
            is_root(),
            "these tests run dockerd and write to /dev: run them as root (CI does)"
        );
        for (path, package) in [
            (DOCKERD, "docker.io"),
            (DOCKER, "docker.io"),
            (BUSYBOX, "busybox-static"),
            (PYTHON, "python3"),
        ] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: `cargo xtask deps` installs Debian's {package}"
            );
        }
        clean_stale_labs();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{me}-{n}"));
        let dev = PathBuf::from(format!("/dev/hakeys-t-{me}-{n}"));
        fs::create_dir(&dir).expect("create the lab directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            dir.join("owner"),
            format!("{me} {}", start_time(me).expect("own start time")),
        )
        .unwrap();
        fs::write(dir.join("dev"), dev.to_string_lossy().as_bytes()).unwrap();
        let mut lab = Lab {
            dir,
            dev,
            dockerd: None,
            teed: None,
            proxy: None,
            containers: Vec::new(),
            finished: false,
            started: Instant::now(),
        };
        // The socket's directory, on the host's /dev itself (as
        // teed.socket's DirectoryMode makes /dev/hakeys on a board).
        fs::create_dir(&lab.dev).expect("mkdir under /dev");
        fs::set_permissions(&lab.dev, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(lab.path("daemon.json"), "{}\n").unwrap();
        fs::create_dir(lab.path("cli")).unwrap();
        let log = fs::File::create(lab.path("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(lab.path("daemon.json"))
            .arg("--data-root")
            .arg(lab.path("data"))
            .arg("--exec-root")
            .arg(lab.path("exec"))
            .arg("--pidfile")
            .arg(lab.path("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", lab.docker_socket().display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--log-level=warn",
            ])
            .env_remove("DOCKER_HOST")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        lab.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if lab
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                break;
            }
            if let Some(st) = lab.dockerd.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("dockerd exited ({st}):\n{}", lab.read("dockerd.log"));
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                lab.read("dockerd.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        lab.import_image();
        eprintln!(
            "lab: dockerd up and image imported in {:.1} s",
            lab.started.elapsed().as_secs_f64()
        );
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn docker_socket(&self) -> PathBuf {
        self.path("docker.sock")
    }

    fn proxy_socket(&self) -> PathBuf {
        self.path("docker-proxy.sock")
    }

    fn teed_socket(&self) -> PathBuf {
        self.dev.join("teed.sock")
    }

    fn docker_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("--host")
            .arg(format!("unix://{}", self.docker_socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", self.path("cli"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT");
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A busybox-static root with mount points for the host's /usr (Python,
    /// glibc) and /dev, imported as the test image.
    fn import_image(&self) {
        let root = self.path("rootfs");
        for d in [
            "bin",
            "usr",
            "dev",
            "proc",
            "sys",
            "tmp",
            "etc",
            "run",
            "opt/hakeys",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat"] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("usr/lib64", root.join("lib64")).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .output()
            .expect("run tar");
        assert!(tar.status.success());
        let out = run_with_stdin(
            &mut self.docker_command(&["import", "-", IMAGE]),
            &tar.stdout,
        );
        assert!(out.status.success(), "docker import: {}", stderr(&out));
    }

    /// Start a container running as uid 0 with the host's /dev (read-only,
    /// as the Supervisor's MOUNT_DEV) and /usr, the Python package and
    /// teectl; `None`: let Docker pick a name. Returns its id.
    fn run_container(&mut self, name: Option<&str>) -> String {
        let python = repo().join("python/src");
        let teectl = teectl_bin();
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        if let Some(n) = name {
            args.extend(["--name".into(), n.into()]);
        }
        args.extend(
            [
                "--network",
                "none",
                "--user",
                "0:0",
                "-v",
                "/usr:/usr:ro",
                "-v",
                "/dev:/dev:ro",
            ]
            .map(String::from),
        );
        args.push("-v".into());
        args.push(format!("{}:/opt/hakeys-python:ro", python.display()));
        args.push("-v".into());
        args.push(format!("{}:/opt/hakeys/teectl:ro", teectl.display()));
        args.extend([IMAGE, "/bin/sleep", "3600"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.docker_ok(&args);
        assert_eq!(id.len(), 64, "container id: {id}");
        self.containers.push(id.clone());
        fs::write(self.path("containers"), self.containers.join("\n")).unwrap();
        id
    }

    fn name_of(&self, id: &str) -> String {
        self.docker_ok(&["inspect", "--format", "{{.Name}}", id])
            .trim_start_matches('/')
            .to_string()
    }

    /// `python3 -m hakeys --socket TEED ARGS` in `container`, as its root.
    fn py(&self, container: &str, args: &[&str], stdin: &[u8]) -> Output {
        let sock = self.teed_socket();
        let mut all = vec![
            "exec",
            "-i",
            "-e",
            "PYTHONPATH=/opt/hakeys-python",
            "-e",
            "PYTHONDONTWRITEBYTECODE=1",
            container,
            PYTHON,
            "-m",
            "hakeys",
            "--socket",
        ];
        let sock = sock.to_string_lossy().into_owned();
        all.push(&sock);
        all.extend_from_slice(args);
        run_with_stdin(&mut self.docker_command(&all), stdin)
    }

    /// `teectl --via-daemon` in `container`.
    fn teectl(&self, container: &str, args: &[&str], stdin: &[u8]) -> Output {
        let sock = self.teed_socket().to_string_lossy().into_owned();
        let mut all = vec![
            "exec",
            "-i",
            container,
            "/opt/hakeys/teectl",
            "--via-daemon",
            "--socket",
            &sock,
        ];
        all.extend_from_slice(args);
        run_with_stdin(&mut self.docker_command(&all), stdin)
    }

    fn start_proxy(&mut self) {
        let log = fs::File::create(self.path("proxy.log")).unwrap();
        let child = Command::new(teed_docker_proxy_bin())
            .arg("--listen")
            .arg(self.proxy_socket())
            .arg("--docker-socket")
            .arg(self.docker_socket())
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("NOTIFY_SOCKET")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start teed-docker-proxy");
        self.proxy = Some(child);
        wait_for_socket(&self.proxy_socket(), || self.read("proxy.log"));
    }

    /// teed on the simulator with the shipped policy, asking `docker` for
    /// container names.
    fn start_teed(&mut self, docker: &Path) {
        let state = self.path("state");
        let init = run_with_stdin(
            Command::new(teectl_bin())
                .args(["--backend", "sim", "--state-dir"])
                .arg(&state)
                .arg("init")
                .env("HAKEYS_SIM_BOOT_ID", "boot-1")
                .env_remove("TEECTL_STATE_DIR"),
            b"",
        );
        assert!(init.status.success(), "init: {}", stderr(&init));
        let policy = self.path("policy.toml");
        fs::copy(repo().join("systemd/teed-policy.toml"), &policy).unwrap();
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o644)).unwrap();
        let log = fs::File::create(self.path("teed.log")).unwrap();
        let child = teed_sim(&state, &self.teed_socket(), &policy, "boot-1")
            .arg("--docker-socket")
            .arg(docker)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start teed");
        self.teed = Some(child);
        wait_for_socket(&self.teed_socket(), || self.read("teed.log"));
    }

    fn teed_log(&self) -> String {
        self.read("teed.log")
    }

    fn stop_all(&mut self) -> Vec<String> {
        for c in [self.teed.take(), self.proxy.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.docker_socket().exists() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        let left = tear_down(&self.dir, &self.dev, &self.containers);
        if let Some(mut c) = self.dockerd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.finished = true;
        left
    }

    /// Stop everything and check nothing is left: no dockerd, containerd,
    /// shim or container process, no mount, no file.
    fn finish(mut self) {
        let left = self.stop_all();
        assert!(left.is_empty(), "left behind: {left:?}");
        eprintln!("lab: {:.1} s in all", self.started.elapsed().as_secs_f64());
    }
}

fn wait_for_socket(path: &Path, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never answered:\n{}",
            path.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a new connection from this (host) process; the answer.
fn host_request(sock: &Path, line: &str) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect to teed");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
}

/// A raw HTTP request to a Unix socket; the status code and the body.
fn http(sock: &Path, request: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (code, body)
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn each_container_opens_its_own_secrets_and_no_one_elses() {
    let _one = one_at_a_time();
    let mut lab = Lab::start();
    // As on a board: teed asks teed-docker-proxy, never Docker itself.
    lab.start_proxy();
    let proxy = lab.proxy_socket();
    lab.start_teed(&proxy);
    let ha_id = lab.run_container(Some("homeassistant"));
    lab.run_container(Some("addon_core_mosquitto"));
    lab.run_container(Some("app_other"));
    lab.run_container(Some("hassio_supervisor"));
    let anon_id = lab.run_container(None);
    let anon = lab.name_of(&anon_id);

    // Each seals and unseals its own namespace.
    let ha = ok(lab.py("homeassistant", &["seal", "ha/core"], b"ha-secret"));
    assert!(ha.starts_with(b"hakeys:v1:"));
    let mqtt = ok(lab.py(
        "addon_core_mosquitto",
        &["seal", "addon/core_mosquitto"],
        b"mqtt-pw",
    ));
    let mqtt_db = ok(lab.py(
        "addon_core_mosquitto",
        &["seal", "addon/core_mosquitto/db"],
        b"db-pw",
    ));
    let other = ok(lab.py("app_other", &["seal", "addon/other"], b"other-pw"));
    assert_eq!(ok(lab.py("homeassistant", &["unseal"], &ha)), b"ha-secret");
    assert_eq!(
        ok(lab.py("addon_core_mosquitto", &["unseal"], &mqtt)),
        b"mqtt-pw"
    );
    assert_eq!(
        ok(lab.py(
            "addon_core_mosquitto",
            &["unseal", "addon/core_mosquitto/db"],
            &mqtt_db
        )),
        b"db-pw"
    );
    assert_eq!(ok(lab.py("app_other", &["unseal"], &other)), b"other-pw");
    // teectl in a container works the same way.
    assert_eq!(
        ok(lab.teectl("homeassistant", &["unseal"], &ha)),
        b"ha-secret"
    );

    // ... and is refused the others'.
    for (who, blob) in [
        ("homeassistant", &mqtt),
        ("homeassistant", &other),
        ("addon_core_mosquitto", &ha),
        ("addon_core_mosquitto", &other),
        ("app_other", &ha),
        ("app_other", &mqtt),
        ("app_other", &mqtt_db),
        ("hassio_supervisor", &ha),
    ] {
        let err = fails(lab.py(who, &["unseal"], blob), REFUSED);
        assert!(err.contains("denied"), "{who}: {err}");
    }
    for (who, ns) in [
        ("homeassistant", "addon/core_mosquitto"),
        ("addon_core_mosquitto", "ha/core"),
        ("addon_core_mosquitto", "addon/other"),
        ("app_other", "addon/core_mosquitto"),
        ("app_other", "supervisor/x"),
    ] {
        fails(lab.py(who, &["seal", ns], b"x"), REFUSED);
    }
    fails(lab.teectl("app_other", &["unseal"], &ha), REFUSED);

    // No container can remove or replace teed's socket: the host's /dev is
    // read-only in every container, the socket's directory included.
    let sock = lab.teed_socket().to_string_lossy().into_owned();
    let evil = format!(
        "import os, socket\n\
         for f in (lambda: os.unlink({sock:?}), lambda: socket.socket(socket.AF_UNIX).bind({sock:?} + '.x')):\n    \
         try:\n        f()\n        print('done')\n    except OSError as e:\n        print(e.errno)\n"
    );
    let out = ok(lab.py_raw("addon_core_mosquitto", &evil));
    assert_eq!(String::from_utf8_lossy(&out), "30\n30\n", "EROFS expected");
    assert!(lab.teed_socket().exists());
    assert_eq!(ok(lab.py("homeassistant", &["unseal"], &ha)), b"ha-secret");

    // The Supervisor seals for an add-on and cannot read it back.
    let for_mqtt = ok(lab.py(
        "hassio_supervisor",
        &["seal", "addon/core_mosquitto"],
        b"from-sup",
    ));
    assert_eq!(
        ok(lab.py("addon_core_mosquitto", &["unseal"], &for_mqtt)),
        b"from-sup"
    );
    fails(lab.py("hassio_supervisor", &["unseal"], &for_mqtt), REFUSED);
    let sup = ok(lab.py(
        "hassio_supervisor",
        &["seal", "supervisor/token"],
        b"sup-pw",
    ));
    assert_eq!(
        ok(lab.py("hassio_supervisor", &["unseal"], &sup)),
        b"sup-pw"
    );

    // A container no rule names gets nothing, not even status.
    for args in [&["status"][..], &["pubkey"]] {
        let err = fails(lab.py(&anon, args, b""), REFUSED);
        assert!(err.contains(&format!("container {anon}")), "{err}");
    }
    fails(lab.py(&anon, &["unseal"], &ha), REFUSED);
    fails(
        lab.py(&anon, &["seal", &format!("addon/{anon}")], b"x"),
        REFUSED,
    );
    // Nor does a host process with no rule (root, here).
    let r = host_request(&lab.teed_socket(), r#"{"v":1,"op":"status"}"#);
    assert_eq!(r["status"], "denied", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("uid 0 gid 0"),
        "{r}"
    );

    // Home Assistant's container recreated (an update): a new id, the same
    // name, the same rights.
    lab.docker_ok(&["rm", "-f", "homeassistant"]);
    let new_id = lab.run_container(Some("homeassistant"));
    assert_ne!(new_id, ha_id);
    assert_eq!(ok(lab.py("homeassistant", &["unseal"], &ha)), b"ha-secret");
    fails(lab.py("homeassistant", &["unseal"], &mqtt), REFUSED);

    // The audit trail names the containers; it never holds a secret.
    let log = lab.teed_log();
    for want in [
        format!(
            "op=unseal ns=ha/core result=ok container=homeassistant cid={}",
            &ha_id[..12]
        ),
        format!(
            "op=unseal ns=ha/core result=ok container=homeassistant cid={}",
            &new_id[..12]
        ),
        "op=unseal ns=addon/core_mosquitto result=ok container=addon_core_mosquitto cid=".into(),
        "op=unseal ns=addon/other result=ok container=app_other cid=".into(),
        "op=unseal ns=ha/core result=denied container=app_other cid=".into(),
        format!(
            "op=status ns=- result=denied container={anon} cid={}",
            &anon_id[..12]
        ),
        "audit uid=0 gid=0 pid=".into(),
    ] {
        assert!(log.contains(&want), "no `{want}` in:\n{log}");
    }
    assert!(
        log.lines()
            .any(|l| l.ends_with("op=status ns=- result=denied") && l.starts_with("audit uid=0 ")),
        "{log}"
    );
    for secret in [
        "ha-secret",
        "mqtt-pw",
        "db-pw",
        "other-pw",
        "from-sup",
        "sup-pw",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("identified by pidfd (SO_PEERPIDFD)"), "{log}");

    // The proxy offers teed one call and nothing else.
    let (code, body) = http(
        &proxy,
        &format!("GET /containers/{ha_id}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(
        &proxy,
        &format!("GET /containers/{new_id}/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"Id": new_id, "Name": "/homeassistant"})
    );
    for request in [
        "GET /containers/json HTTP/1.1\r\nHost: d\r\n\r\n".to_string(),
        "GET /containers/homeassistant/json HTTP/1.1\r\nHost: d\r\n\r\n".into(),
        format!(
            "GET /containers/{}/json HTTP/1.1\r\nHost: d\r\n\r\n",
            &new_id[..12]
        ),
        format!("POST /containers/{new_id}/stop HTTP/1.1\r\nHost: d\r\n\r\n"),
        "POST /containers/create?name=x HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}".into(),
        "GET /info HTTP/1.1\r\nHost: d\r\n\r\n".into(),
    ] {
        let (code, _) = http(&proxy, &request);
        assert!(code == 403 || code == 400, "{request:?}: {code}");
    }
    assert_eq!(
        lab.docker_ok(&["inspect", "--format", "{{.State.Running}}", "homeassistant"]),
        "true"
    );
    lab.finish();
}

/// Opens N connections to teed from inside a container, sends `status` on
/// each and keeps them all open; prints how each was answered, then waits.
const HOLD: &str = r#"
import json, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
held, counts = [], {}
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(b'{"v":1,"op":"status"}\n')
    except OSError:
        pass
    f = s.makefile("rb")
    try:
        line = f.readline()
    except OSError:
        line = b""
    st = json.loads(line)["status"] if line else "closed"
    counts[st] = counts.get(st, 0) + 1
    held.append((s, f))
print(json.dumps(counts), flush=True)
time.sleep(600)
"#;

#[test]
fn callers_no_rule_names_cannot_starve_home_assistant() {
    let _one = one_at_a_time();
    let mut lab = Lab::start();
    // teed straight on the test dockerd's socket (the --docker-socket flag).
    let docker = lab.docker_socket();
    lab.start_teed(&docker);
    lab.run_container(Some("homeassistant"));
    lab.run_container(Some("addon_core_mosquitto"));
    let stranger_id = lab.run_container(Some("hassio_dns"));
    let blob = ok(lab.py("homeassistant", &["seal", "ha/core"], b"still-served"));

    // A container no rule names tries to take every slot and hold it.
    let sock = lab.teed_socket().to_string_lossy().into_owned();
    let mut holder = lab
        .docker_command(&["exec", "-i", "hassio_dns", PYTHON, "-c", HOLD, &sock, "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let counts: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
    // max_unnamed_connections (4) are let in, and only told `denied`.
    assert_eq!(
        counts,
        serde_json::json!({"denied": 4, "busy": 96}),
        "{line}"
    );

    // So is a host process with no rule: the pool is full.
    let mut host = Vec::new();
    for _ in 0..20 {
        let mut s = UnixStream::connect(lab.teed_socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(b"{\"v\":1,\"op\":\"status\"}\n");
        let mut a = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut a)
            .unwrap();
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["status"], "busy", "{v}");
        host.push(s);
    }

    // Home Assistant is served throughout, and so is an add-on.
    for _ in 0..5 {
        assert_eq!(
            ok(lab.py("homeassistant", &["unseal"], &blob)),
            b"still-served"
        );
    }
    let own = ok(lab.py(
        "addon_core_mosquitto",
        &["seal", "addon/core_mosquitto"],
        b"m",
    ));
    assert_eq!(ok(lab.py("addon_core_mosquitto", &["unseal"], &own)), b"m");
    // Eight connections held by Home Assistant at once, all served.
    let many = format!(
        "import socket,json\nss=[socket.socket(socket.AF_UNIX) for _ in range(8)]\n\
         [s.connect({sock:?}) for s in ss]\n\
         [s.sendall(b'{{\"v\":1,\"op\":\"status\"}}\\n') for s in ss]\n\
         print(sorted(set(json.loads(s.makefile('rb').readline())['status'] for s in ss)))\n"
    );
    let out = ok(lab.py_raw("homeassistant", &many));
    assert_eq!(String::from_utf8_lossy(&out).trim(), "['ok']");

    let log = lab.teed_log();
    assert!(
        log.contains(&format!(
            "result=busy container=hassio_dns cid={}",
            &stranger_id[..12]
        )),
        "{log}"
    );
    // The holder's connections end with its container.
    lab.docker_ok(&["rm", "-f", "hassio_dns"]);
    let _ = holder.kill();
    let _ = holder.wait();
    drop(host);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = host_request(&lab.teed_socket(), r#"{"v":1,"op":"status"}"#);
        if r["status"] == "denied" {
            break;
        }
        assert_eq!(r["status"], "busy");
        assert!(
            Instant::now() < deadline,
            "the unnamed slots never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.finish();
}

impl Lab {
    /// `python3 -c SCRIPT` in `container`.
    fn py_raw(&self, container: &str, script: &str) -> Output {
        run_with_stdin(
            &mut self.docker_command(&["exec", "-i", container, PYTHON, "-c", script]),
            b"",
        )
    }
}
