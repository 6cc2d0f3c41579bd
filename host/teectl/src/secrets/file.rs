//! Files: bounded reads and atomic writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Read all of `path`, refusing more than `max` bytes.
pub fn read_bounded(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>, String> {
    let f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(
        f.metadata()
            .map(|m| (m.len() as usize).min(max) + 1)
            .unwrap_or(8192),
    ));
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() > max {
        return Err(format!(
            "{} is larger than {max} bytes, more than any secrets file",
            path.display()
        ));
    }
    Ok(buf)
}

fn tmp_name(path: &Path) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?;
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        hex::encode(nonce)
    ));
    Ok(path.with_file_name(tmp))
}

/// Replace `path` with `bytes`, atomically: a new file (mode `mode`) in the
/// same directory, written and synced, renamed over `path`, and the
/// directory synced. Readers see the old content or the new, never a part;
/// on any error the old file is as it was and the new one is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = tmp_name(path)?;
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
