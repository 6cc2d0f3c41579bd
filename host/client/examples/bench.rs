//! Benchmark harness: prints Markdown sections for docs/BENCHMARKS.md
//! (assembled by `cargo xtask bench`). Never asserts on timings.
//!
//! Usage: bench [--teectl PATH] [--iterations N]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hakeys_client::client::{Client, Transport, TransportError};
use hakeys_client::sim::SimBackend;
use hakeys_client::sim_storage::FrameStats;
use hakeys_client::OsEntropy;
use hakeys_engine::{Engine, MemoryStorage};

/// The engine in-process over memory: the cost of the engine alone.
struct InMemory(Engine<MemoryStorage, OsEntropy>);

impl Transport for InMemory {
    fn call(&mut self, req: &[u8], out: &mut [u8]) -> Result<usize, TransportError> {
        Ok(self.0.handle(req, out))
    }
}

struct Stats {
    n: usize,
    total: Duration,
    p50: Duration,
    p99: Duration,
}

fn measure(n: usize, mut f: impl FnMut()) -> Stats {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    Stats {
        n,
        total,
        p50: lat[n / 2],
        p99: lat[(n * 99 / 100).min(n - 1)],
    }
}

fn row(name: &str, s: &Stats) -> String {
    format!(
        "| {name} | {} | {:.0} | {:.1} | {:.1} |\n",
        s.n,
        s.n as f64 / s.total.as_secs_f64(),
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6
    )
}

const HEADER: &str = "| operation | runs | ops/s | p50 µs | p99 µs |\n|---|---|---|---|---|\n";

fn fail(msg: String) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let teectl = opt("--teectl").map(PathBuf::from);
    let n: usize = opt("--iterations")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let secret = vec![0x5au8; 1024];

    // 1. The engine alone.
    let mut mem = Client::new(InMemory(Engine::new(MemoryStorage::default(), OsEntropy)));
    mem.init().unwrap_or_else(|e| fail(format!("init: {e}")));
    let blob = mem
        .seal("ha/core", &secret)
        .unwrap_or_else(|e| fail(format!("seal: {e}")));
    let mut out = String::from("## Key engine in-process (memory storage)\n\n");
    out += "The engine's own cost per request, through the encoded protocol (1 KiB secret).\n\n";
    out += HEADER;
    out += &row(
        "seal 1 KiB",
        &measure(n, || drop(mem.seal("ha/core", &secret))),
    );
    out += &row(
        "unseal 1 KiB",
        &measure(n, || drop(mem.unseal(&blob, None))),
    );
    out += &row("ping", &measure(n, || drop(mem.ping())));
    out += &row(
        "attest",
        &measure(n.min(200), || drop(mem.attest(b"challenge"))),
    );
    let pem = mem
        .pubkey()
        .unwrap_or_else(|e| fail(format!("pubkey: {e}")));
    let pk = p256::PublicKey::from_sec1_bytes(&pem).unwrap_or_else(|_| fail("pubkey".into()));
    out += &row(
        "offline seal --to (host, no TEE)",
        &measure(n.min(200), || {
            drop(hakeys_engine::blob::seal_to_device(
                &pk,
                "ha/core",
                &secret,
                &mut OsEntropy,
            ))
        }),
    );
    let to_dev = hakeys_engine::blob::seal_to_device(&pk, "ha/core", &secret, &mut OsEntropy)
        .unwrap_or_else(|_| fail("seal --to".into()));
    out += &row(
        "unseal of an offline-sealed blob",
        &measure(n.min(200), || drop(mem.unseal(&to_dev, None))),
    );

    // 2. The simulator backend on an rpmb-sim image (durable writes).
    let dir = tempdir();
    let open = || SimBackend::open(&dir).unwrap_or_else(|e| fail(format!("sim: {e}")));
    let mut out_traffic = String::from(
        "## RPMB traffic per operation (simulator, counted at the device)\n\n\
         Each operation on a freshly opened backend, as one `teectl` process does it.\n\n\
         | operation | transactions | frames sent | frames received | authenticated writes |\n|---|---|---|---|---|\n",
    );
    let traffic = |name: &str, f: &mut dyn FnMut(&mut Client<SimBackend>)| -> String {
        let mut c = Client::new(open());
        f(&mut c);
        let s: FrameStats = c.transport_mut().rpmb_stats();
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            s.transactions, s.frames_sent, s.frames_received, s.authenticated_writes
        )
    };
    out_traffic += &traffic("init (first)", &mut |c| {
        c.init().unwrap_or_else(|e| fail(format!("{e}")));
    });
    out_traffic += &traffic("init (again, no-op)", &mut |c| drop(c.init()));
    let sim_blob = Client::new(open())
        .seal("ha/core", &secret)
        .unwrap_or_else(|e| fail(format!("{e}")));
    out_traffic += &traffic("seal", &mut |c| drop(c.seal("ha/core", &secret)));
    out_traffic += &traffic("unseal", &mut |c| drop(c.unseal(&sim_blob, None)));
    out_traffic += &traffic("rotate", &mut |c| drop(c.rotate()));
    out_traffic += &traffic("retire", &mut |c| drop(c.retire(2)));
    out_traffic += &traffic("status", &mut |c| drop(c.status()));
    out_traffic += "\n";

    out += "\n## Simulator backend (rpmb-sim image, fsync on)\n\n";
    out += HEADER;
    out += &row(
        "open backend + status (cold, as a new process)",
        &measure(n.min(200), || {
            let mut c = Client::new(open());
            drop(c.status());
        }),
    );
    let sim_blob = Client::new(open())
        .seal("ha/core", &secret)
        .unwrap_or_else(|e| fail(format!("{e}")));
    let mut warm = Client::new(open());
    out += &row(
        "unseal 1 KiB (warm backend)",
        &measure(n, || drop(warm.unseal(&sim_blob, None))),
    );
    out += &row(
        "rotate (one authenticated RPMB write)",
        &measure(n.min(100), || drop(warm.rotate())),
    );
    drop(warm);
    out += "\n";
    out += &out_traffic;

    // 3. teectl unseal end to end, a new process each time.
    if let Some(teectl) = teectl {
        let blob_path = dir.join("bench.blob");
        std::fs::write(&blob_path, hakeys_client::armor::blob_to_text(&sim_blob))
            .unwrap_or_else(|e| fail(format!("{e}")));
        out += "## `teectl unseal` end to end (simulator, new process each run)\n\n";
        out += "Process start, state open (lock, RPMB counter + block read, MAC checks), unseal, output.\n\n";
        out += HEADER;
        let s = measure(n.min(200), || {
            let st = Command::new(&teectl)
                .args(["--backend", "sim", "--state-dir"])
                .arg(&dir)
                .arg("unseal")
                .stdin(std::fs::File::open(&blob_path).unwrap_or_else(|e| fail(format!("{e}"))))
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| fail(format!("{e}")));
            if !st.success() {
                fail("teectl unseal failed during the benchmark".into());
            }
        });
        out += &row("teectl unseal 1 KiB", &s);
        out += "\n";
    }
    let _ = std::fs::remove_dir_all(&dir);
    print!("{out}");
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("hakeys-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
