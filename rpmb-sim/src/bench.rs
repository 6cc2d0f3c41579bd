//! `rpmb-sim bench`: authenticated writes and reads per second through the
//! full protocol (request building, MACs on both sides, commit protocol),
//! on a file image with and without fsync and on an in-memory image.
//! Figures are printed, never asserted on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::{self, ClientError};
use crate::{CreateOptions, Error, RpmbDevice, BLOCK_LEN};

const KEY: [u8; 32] = [0x42; 32];

/// One row of the result table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// "file" or "memory".
    pub backend: &'static str,
    /// Whether commits were fsync'ed.
    pub durable: bool,
    /// One-block authenticated writes per second.
    pub writes_per_s: f64,
    /// One-block authenticated reads per second.
    pub reads_per_s: f64,
    /// Writes done.
    pub writes: u64,
    /// Reads done.
    pub reads: u64,
}

fn client_err(e: ClientError) -> Error {
    Error::Protocol(format!("bench: {e}"))
}

fn measure(dev: &mut RpmbDevice, seconds: f64) -> Result<(u64, f64, u64, f64), Error> {
    let budget = Duration::from_secs_f64(seconds.max(0.001));
    let capacity = dev.info().capacity_blocks;
    let mut counter = dev.info().write_counter;
    let mut block = [0u8; BLOCK_LEN];
    let start = Instant::now();
    let mut writes = 0u64;
    while writes == 0 || start.elapsed() < budget {
        let addr = (writes.wrapping_mul(7919) % u64::from(capacity)) as u16;
        block[..8].copy_from_slice(&writes.to_le_bytes());
        counter = client::write_blocks_at_counter(dev, &KEY, addr, counter, &[block])
            .map_err(client_err)?;
        writes += 1;
    }
    let wt = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut reads = 0u64;
    let nonce = client::fresh_nonce();
    while reads == 0 || start.elapsed() < budget {
        let addr = (reads.wrapping_mul(7919) % u64::from(capacity)) as u16;
        client::read_blocks(dev, &KEY, addr, 1, &nonce).map_err(client_err)?;
        reads += 1;
    }
    let rt = start.elapsed().as_secs_f64();
    Ok((writes, writes as f64 / wt, reads, reads as f64 / rt))
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the three configurations for about `seconds` per measurement,
/// creating (and removing) a scratch image in `dir`.
pub fn run(dir: &Path, seconds: f64) -> Result<Vec<BenchRow>, Error> {
    let opts = CreateOptions::default();
    let mut rows = Vec::new();
    for durable in [true, false] {
        let path = dir.join(format!(
            "rpmb-sim-bench-{}-{}.img",
            std::process::id(),
            u8::from(durable)
        ));
        RpmbDevice::create(&path, &opts)?;
        let _cleanup = RemoveOnDrop(path.clone());
        let mut dev = RpmbDevice::open(&path)?;
        dev.set_durable(durable);
        client::program_key(&mut dev, &KEY).map_err(client_err)?;
        let (writes, wps, reads, rps) = measure(&mut dev, seconds)?;
        rows.push(BenchRow {
            backend: "file",
            durable,
            writes_per_s: wps,
            reads_per_s: rps,
            writes,
            reads,
        });
    }
    let (mut dev, _mem) = RpmbDevice::new_in_memory(&opts)?;
    client::program_key(&mut dev, &KEY).map_err(client_err)?;
    let (writes, wps, reads, rps) = measure(&mut dev, seconds)?;
    rows.push(BenchRow {
        backend: "memory",
        durable: false,
        writes_per_s: wps,
        reads_per_s: rps,
        writes,
        reads,
    });
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "| backend | fsync | 1-block writes/s | 1-block reads/s | writes | reads |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |\n",
            r.backend,
            if r.durable { "yes" } else { "no" },
            r.writes_per_s,
            r.reads_per_s,
            r.writes,
            r.reads
        ));
    }
    s
}
