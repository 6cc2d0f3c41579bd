//! The daemon's benchmark and load test: prints a Markdown section for
//! docs/BENCHMARKS.md. Never asserts on timings; exits non-zero only if a
//! request failed (the load test's "zero errors").
//!
//! Usage: daemon_bench --teed PATH [--backend sim|tee] [--seconds N] [--load-seconds N]
//!
//! With `--backend tee` (in QEMU or on a board, a build with the `tee`
//! feature) the same runs go to the TA instead of the simulator.
//!
//! 1. unseal of a 1 KiB secret directly in-process on the simulator
//!    backend (the `Client` over `SimBackend`, as teed's engine thread does),
//!    with 1 caller and with 32 callers sharing the one backend;
//! 2. the same through a real `teed` on the same simulator state, 1 and 32
//!    callers with persistent connections, and 32 callers opening a
//!    connection per request (as a shell script or one-shot client does);
//! 3. the load test: 32 callers, mixed unseal/seal/status, for a fixed
//!    time; errors counted (must be 0) and teed's memory sampled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hakeys_client::armor;
use hakeys_client::backend::{Backend, BackendKind};
use hakeys_client::client::Client;
use teed_protocol::client::DaemonClient;

const SECRET_LEN: usize = 1024;

struct Args {
    teed: PathBuf,
    backend: BackendKind,
    seconds: f64,
    load_seconds: f64,
}

fn args() -> Args {
    let mut a = Args {
        teed: PathBuf::from("target/release/teed"),
        backend: BackendKind::Sim,
        seconds: 3.0,
        load_seconds: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--teed" => a.teed = PathBuf::from(v),
            "--backend" => {
                a.backend = match v.as_str() {
                    "sim" => BackendKind::Sim,
                    "tee" => BackendKind::Tee,
                    _ => usage(),
                }
            }
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage()),
            "--load-seconds" => a.load_seconds = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!(
        "usage: daemon_bench --teed PATH [--backend sim|tee] [--seconds N] [--load-seconds N]"
    );
    std::process::exit(2)
}

/// Latencies and errors of one run.
#[derive(Default)]
struct Run {
    lat: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    wall: Duration,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn row(&mut self, path: &str, callers: usize) -> String {
        self.lat.sort();
        let n = self.lat.len();
        let pct = |p: usize| {
            self.lat
                .get((n * p / 100).min(n.saturating_sub(1)))
                .map(|d| d.as_secs_f64() * 1e6)
                .unwrap_or(0.0)
        };
        format!(
            "| {path} | {callers} | {:.1} | {n} | {} | {:.0} | {:.1} | {:.1} |\n",
            self.wall.as_secs_f64(),
            self.errors,
            n as f64 / self.wall.as_secs_f64(),
            pct(50),
            pct(99)
        )
    }
}

/// Run `callers` threads for `seconds`, each calling `op` in a loop.
fn drive<S: Send + 'static>(
    callers: usize,
    seconds: f64,
    setup: impl Fn(usize) -> S + Send + Sync + 'static,
    op: impl Fn(&mut S, usize) -> Result<(), String> + Send + Sync + 'static,
) -> Run {
    let setup = Arc::new(setup);
    let op = Arc::new(op);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..callers)
        .map(|i| {
            let (setup, op) = (Arc::clone(&setup), Arc::clone(&op));
            std::thread::spawn(move || {
                let mut run = Run::default();
                let mut state = setup(i);
                let mut n = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    match op(&mut state, n) {
                        Ok(()) => run.lat.push(t.elapsed()),
                        Err(e) => {
                            run.errors += 1;
                            run.first_error.get_or_insert(e);
                        }
                    }
                    n += 1;
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for t in threads {
        total.merge(t.join().unwrap_or_default());
    }
    total.wall = start.elapsed();
    total
}

fn proc_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{field}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Teed(Child);

impl Drop for Teed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open(kind: BackendKind, state: &Path) -> Backend {
    Backend::open(Some(kind), Some(state)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    })
}

fn start_teed(teed: &Path, kind: BackendKind, dir: &Path, state: &Path, socket: &Path) -> Teed {
    let uid = rustix::process::getuid().as_raw();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[rule]]\nuid = {uid}\nnamespaces = [\"ha/*\"]\n\
             operations = [\"unseal\", \"seal\", \"pubkey\", \"status\"]\n\
             [limits]\nrequests_per_second = 1000000\nburst = 1000000\n\
             max_connections = 256\nmax_connections_per_uid = 256\n"
        ),
    )
    .expect("write the policy");
    // The audit log goes to a file, as it would to journald.
    let log = std::fs::File::create(dir.join("teed.log")).expect("create the log");
    let child = Command::new(teed)
        .args(["--backend", kind.name(), "--state-dir"])
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .arg("--policy")
        .arg(&policy)
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("cannot start {}: {e}", teed.display());
            std::process::exit(1)
        });
    let t = Teed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() > deadline {
            eprintln!("teed did not start");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t
}

fn daemon(socket: &Path) -> DaemonClient {
    DaemonClient::connect(socket, Duration::from_secs(30)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    })
}

const HEADER: &str = "| path | callers | seconds | requests | errors | req/s | p50 µs | p99 µs |\n\
                      |---|---:|---:|---:|---:|---:|---:|---:|\n";

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let socket = tmp.path().join("teed.sock");
    let secret = vec![0x5au8; SECRET_LEN];

    // The simulator state, and one blob, made directly.
    let blob = {
        let mut c = Client::new(open(a.backend, &state));
        c.init().expect("init");
        c.seal("ha/bench", &secret).expect("seal")
    };
    let text = armor::blob_to_text(&blob);
    let mut out = String::new();
    out.push_str(&format!(
        "## Daemon (`teed`) on the {} backend\n\n",
        match a.backend {
            BackendKind::Sim => "simulator",
            BackendKind::Tee => "TEE",
        }
    ));
    out.push_str(&format!(
        "Unseal of a {SECRET_LEN}-byte secret, each caller a thread; {:.0} s per row. \
         *Direct* is the typed client over the backend in this process (what \
         teed's engine thread runs); with 32 callers they share one backend behind \
         a mutex (the simulator allows one open at a time; the TA serialises calls). \
         *Through teed* adds the socket, JSON, peer credentials, policy, limits and an \
         audit line per request (to a file). Callers and teed share the machine's cores.\n\n",
        a.seconds
    ));
    out.push_str(HEADER);

    // 1. Direct, in-process.
    {
        let shared = Arc::new(Mutex::new(Client::new(open(a.backend, &state))));
        for callers in [1, 32] {
            let (s, b) = (Arc::clone(&shared), blob.clone());
            let mut r = drive(
                callers,
                a.seconds,
                move |_| (Arc::clone(&s), b.clone()),
                |(c, b), _| {
                    let mut g = c.lock().map_err(|_| "poisoned".to_string())?;
                    g.unseal(b, Some("ha/bench"))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
            );
            out.push_str(&r.row("direct, in-process", callers));
        }
    }

    // 2. Through teed (the direct backend is closed: teed takes the lock).
    let teed = start_teed(&a.teed, a.backend, tmp.path(), &state, &socket);
    let pid = teed.0.id();
    let rss_start = proc_field(pid, "VmRSS");
    let mut errors = 0;
    for (callers, persistent) in [(1, true), (32, true), (32, false)] {
        let (sock, t) = (socket.clone(), text.clone());
        let mut r = drive(
            callers,
            a.seconds,
            move |_| (sock.clone(), t.clone(), None::<DaemonClient>),
            move |(sock, t, conn), _| {
                let c = conn.get_or_insert_with(|| daemon(sock));
                let r = c.unseal(t, None).map(|_| ()).map_err(|e| e.to_string());
                if !persistent || r.is_err() {
                    *conn = None;
                }
                r
            },
        );
        errors += r.errors;
        let path = if persistent {
            "through teed, persistent connections"
        } else {
            "through teed, a connection per request"
        };
        out.push_str(&r.row(path, callers));
        if let Some(e) = &r.first_error {
            eprintln!("first error: {e}");
        }
    }
    if a.backend == BackendKind::Sim {
        out.push_str(
            "\nThrough teed on the real TEE (QEMU target, one `teectl` process per \
             request): see [BENCHMARKS-qemu.md](BENCHMARKS-qemu.md).\n",
        );
    }

    // 3. The load test.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(proc_field(pid, "VmRSS"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let callers = 32;
    let (sock, t) = (socket.clone(), text.clone());
    let mut load = drive(
        callers,
        a.load_seconds,
        move |_| (sock.clone(), t.clone(), None::<DaemonClient>),
        |(sock, t, conn), n| {
            let c = conn.get_or_insert_with(|| daemon(sock));
            let r = match n % 10 {
                0 => c.status().map(|_| ()),
                1 => c.seal("ha/load", b"load-test-secret").map(|_| ()),
                _ => c.unseal(t, Some("ha/bench")).map(|_| ()),
            };
            // Every 50th request on a fresh connection: connection churn.
            if n % 50 == 49 || r.is_err() {
                *conn = None;
            }
            r.map_err(|e| e.to_string())
        },
    );
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    errors += load.errors;
    // Let the connection threads end before reading the end state.
    std::thread::sleep(Duration::from_millis(500));
    let hwm = proc_field(pid, "VmHWM");
    let rss_end = proc_field(pid, "VmRSS");
    let threads_end = proc_field(pid, "Threads");
    let row = load.row("load: 80% unseal, 10% seal, 10% status", callers);
    out.push_str(&format!(
        "\n### Load test\n\n{callers} concurrent callers for {:.0} s through teed, a new \
         connection every 50 requests per caller. Errors must be 0; memory is teed's \
         (`/proc/PID/status`).\n\n{HEADER}{row}\n\
         | teed memory | kB |\n|---|---:|\n\
         | RSS after start | {rss_start} |\n\
         | peak RSS sampled during the load | {} |\n\
         | VmHWM (high-water mark, whole run) | {hwm} |\n\
         | RSS at the end | {rss_end} |\n\
         | threads at the end (callers gone) | {threads_end} |\n",
        a.load_seconds,
        peak.load(Ordering::SeqCst)
    ));
    if let Some(e) = &load.first_error {
        eprintln!("first load error: {e}");
    }
    drop(teed);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    if errors > 0 {
        eprintln!("{errors} requests failed");
        std::process::exit(1);
    }
}
