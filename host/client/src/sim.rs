//! The simulator backend: the key engine in-process, its state on an
//! `rpmb-sim` device image in a state directory.
//!
//! ```text
//! STATE_DIR/            (mode 0700)
//!   rpmb.img            the simulated eMMC RPMB partition (rpmb-sim image)
//!   huk                 32 bytes: the simulated SoC's hardware unique key
//!   boot-done           the boot id of the boot whose boot phase has ended
//! ```
//!
//! Every request goes through the same encoded messages the TA receives.
//! The boot-phase lock lives in the engine's memory; since each `teectl`
//! call is a new process here, the simulator carries it across calls in
//! `boot-done`, tied to the kernel's boot id, so it lasts exactly until the
//! next boot.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hakeys_engine::{attest, Engine, Platform};
use rpmb_sim::{CreateOptions, RpmbDevice};
use zeroize::Zeroizing;

use crate::client::{Transport, TransportError};
use crate::sim_storage::{RpmbStateStorage, SimStorageError};
use crate::{is_root, OsEntropy};

/// The RPMB image's file name inside the state directory.
pub const IMAGE_FILE: &str = "rpmb.img";
/// The simulated hardware unique key's file name.
pub const HUK_FILE: &str = "huk";
/// The boot-phase marker's file name.
pub const BOOT_MARKER_FILE: &str = "boot-done";
/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "TEECTL_STATE_DIR";
/// Test hook: overrides the kernel's boot id (simulates a reboot). Honoured
/// only in debug builds (the tests') and with the `test-hooks` feature,
/// never by a release build: there it would let an environment variable
/// reopen `boot/` after `boot-done`.
pub const BOOT_ID_ENV: &str = "HAKEYS_SIM_BOOT_ID";
/// How long to wait for another process holding the image.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Why the simulator could not start.
pub use crate::backend::BackendError as SimError;

/// The state directory to use when none is given: `$TEECTL_STATE_DIR`, else
/// `/var/lib/hakeys-sim` for root, else `$XDG_STATE_HOME/hakeys-sim` (or
/// `~/.local/state/hakeys-sim`).
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/var/lib/hakeys-sim");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(x).join("hakeys-sim");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/hakeys-sim")
}

/// The current boot's id.
pub fn boot_id() -> Result<String, SimError> {
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    if let Ok(id) = std::env::var(BOOT_ID_ENV) {
        return Ok(id);
    }
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .map_err(|e| SimError(format!("cannot read the boot id: {e}")))
}

/// The simulator backend.
pub struct SimBackend {
    engine: Engine<RpmbStateStorage, OsEntropy>,
    dir: PathBuf,
    boot_id: String,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> SimError {
    SimError(format!("{what} {}: {e}", path.display()))
}

/// Write `bytes` to `path` only if it does not exist yet, atomically (a
/// temporary file hard-linked into place), mode 0600.
fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool, SimError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("cannot create", &tmp, e))?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    let linked = written.and_then(|_| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("cannot create", path, e)),
    }
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn read_huk(path: &Path) -> Result<Zeroizing<[u8; 32]>, SimError> {
    let mut f = File::open(path).map_err(|e| io_err("cannot read", path, e))?;
    let mut huk = Zeroizing::new([0u8; 32]);
    let mut rest = Vec::new();
    f.read_exact(huk.as_mut())
        .and_then(|_| f.read_to_end(&mut rest))
        .map_err(|e| io_err("cannot read", path, e))?;
    if !rest.is_empty() {
        return Err(SimError(format!("{} is not a 32-byte key", path.display())));
    }
    Ok(huk)
}

impl SimBackend {
    /// Open (creating on first use) the simulator state in `dir`.
    pub fn open(dir: &Path) -> Result<SimBackend, SimError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err("cannot create the state directory", dir, e))?;
        let meta =
            fs::metadata(dir).map_err(|e| io_err("cannot use the state directory", dir, e))?;
        if !meta.is_dir() {
            return Err(SimError(format!("{} is not a directory", dir.display())));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SimError(format!(
                "the state directory {} is accessible to other users (mode {:o}); chmod 700 it",
                dir.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let image = dir.join(IMAGE_FILE);
        let huk_path = dir.join(HUK_FILE);
        if !huk_path.exists() {
            if image.exists() {
                return Err(SimError(format!(
                    "{} exists but its hardware key {} is missing; the device cannot be used",
                    image.display(),
                    huk_path.display()
                )));
            }
            let mut fresh = Zeroizing::new([0u8; 32]);
            getrandom::fill(fresh.as_mut())
                .map_err(|e| SimError(format!("no OS randomness: {e}")))?;
            create_exclusive(&huk_path, fresh.as_ref())?;
        }
        let huk = read_huk(&huk_path)?;
        match RpmbDevice::create(&image, &CreateOptions::default()) {
            Ok(()) | Err(rpmb_sim::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(SimError(format!("cannot create the RPMB image: {e}"))),
        }
        let device = open_waiting(&image)?;
        let mut engine = Engine::new(RpmbStateStorage::new(device, &huk), OsEntropy);
        // Evidence says it comes from the simulator (a claim: anyone with
        // the state directory can sign anything; docs/security-model.md).
        engine.set_platform(Platform {
            backend: attest::Backend::Simulator,
            ta_version: 0,
        });
        let boot_id = boot_id()?;
        if fs::read_to_string(dir.join(BOOT_MARKER_FILE))
            .map(|s| s.trim() == boot_id)
            .unwrap_or(false)
        {
            engine.lock_boot_namespaces();
        }
        Ok(SimBackend {
            engine,
            dir: dir.to_path_buf(),
            boot_id,
        })
    }

    /// RPMB traffic of this backend so far.
    pub fn rpmb_stats(&mut self) -> crate::sim_storage::FrameStats {
        self.engine.storage_mut().stats()
    }

    /// The detailed reason of the last storage failure, if any.
    pub fn storage_detail(&mut self) -> Option<String> {
        self.engine
            .storage_mut()
            .last_error
            .as_ref()
            .map(SimStorageError::to_string)
    }

    fn record_boot_done(&self) -> Result<(), SimError> {
        let path = self.dir.join(BOOT_MARKER_FILE);
        let tmp = self
            .dir
            .join(format!("{BOOT_MARKER_FILE}.tmp.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("cannot write", &tmp, e))?;
        f.write_all(self.boot_id.as_bytes())
            .and_then(|_| f.sync_all())
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(|e| io_err("cannot write", &path, e))?;
        sync_dir(&path);
        Ok(())
    }
}

fn open_waiting(image: &Path) -> Result<RpmbDevice, SimError> {
    let start = Instant::now();
    loop {
        match open_image(image) {
            Ok(d) => return Ok(d),
            Err(rpmb_sim::Error::Locked(_)) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(SimError(format!("cannot open the RPMB image: {e}"))),
        }
    }
}

/// Open the RPMB image (lock and crash recovery). With the `test-hooks`
/// feature, `HAKEYS_SIM_KILL_AT_WRITE` may arm the power-cut hook
/// (`sim_storage::kill_hook`, compiled only with that feature).
fn open_image(image: &Path) -> Result<RpmbDevice, rpmb_sim::Error> {
    #[cfg(feature = "test-hooks")]
    {
        use crate::sim_storage::kill_hook::{armed, KillAtWrite};
        match armed() {
            Ok(None) => {}
            Ok(Some(n)) => {
                let storage = rpmb_sim::storage::FileStorage::open(image)?;
                return RpmbDevice::open_storage(Box::new(KillAtWrite::new(storage, n)));
            }
            Err(msg) => return Err(rpmb_sim::Error::InvalidOptions(msg)),
        }
    }
    RpmbDevice::open(image)
}

impl Transport for SimBackend {
    fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        let was_locked = self.engine.boot_locked();
        let n = self.engine.handle(request, response);
        // The simulator persists the boot-phase lock across processes,
        // however it ended (boot-done, or the first unseal outside boot/).
        if !was_locked && self.engine.boot_locked() {
            self.record_boot_done().map_err(|e| TransportError {
                message: e.0,
                retryable: false,
            })?;
        }
        Ok(n)
    }
}
