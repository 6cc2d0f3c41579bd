//! Where the image bytes live: a small I/O trait with a file backend (with
//! the exclusive lock), an in-memory backend (fuzzing, benchmarks) and a
//! power-cut simulator (crash tests).
//!
//! Every mutation of the image goes through [`Storage::write_at`] and
//! [`Storage::sync`]; the device's crash-safety argument is made in terms of
//! these two steps (see SPEC.md, "Commit protocol").

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Error;

/// Random-access byte storage holding one image.
pub trait Storage: Send {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the storage if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every earlier write durable (fdatasync for a file).
    fn sync(&mut self) -> io::Result<()>;
    /// Current size in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Sets the size (new bytes read as zero). Used only when formatting.
    fn set_size(&mut self, size: u64) -> io::Result<()>;
    /// A name for messages: the path, or `"<memory>"`.
    fn name(&self) -> String;
}

/// An image file, opened read-write and held under an exclusive `flock`.
///
/// The lock belongs to the open file description: a second
/// [`FileStorage::open`] of the same file fails with [`Error::Locked`], from
/// another process or from this one. The lock is released when this value
/// is dropped (the file is closed).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
}

impl FileStorage {
    /// Opens an existing image and takes the exclusive lock (non-blocking).
    pub fn open(path: &Path) -> Result<FileStorage, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("{}: cannot open image", path.display()), e))?;
        lock_exclusive(&file, path)?;
        Ok(FileStorage {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a file that was just created (and so is already exclusive to
    /// us), taking the lock as well.
    pub(crate) fn from_new_file(file: File, path: &Path) -> Result<FileStorage, Error> {
        lock_exclusive(&file, path)?;
        Ok(FileStorage {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_exclusive(file: &File, path: &Path) -> Result<(), Error> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::Locked(path.to_path_buf())),
        Err(e) => Err(Error::io(
            format!("{}: cannot lock image", path.display()),
            e.into(),
        )),
    }
}

impl Storage for FileStorage {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        // The file size is fixed at creation, so fdatasync is enough.
        self.file.sync_data()
    }
    fn size(&mut self) -> io::Result<u64> {
        // Seeking to the end also gives the size of a block device (whose
        // metadata length is 0), so an image can live on a raw disk.
        use std::io::Seek;
        self.file.seek(io::SeekFrom::End(0))
    }
    fn set_size(&mut self, size: u64) -> io::Result<()> {
        self.file.set_len(size)
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the byte vector in a state
    // worse than any other interrupted write, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn range(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
    if end > size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read past the end of the image",
        ));
    }
    Ok(start..end)
}

fn write_into(image: &mut Vec<u8>, offset: u64, buf: &[u8]) -> io::Result<()> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = start
        .checked_add(buf.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
    if end > image.len() {
        image.resize(end, 0);
    }
    if let Some(dst) = image.get_mut(start..end) {
        dst.copy_from_slice(buf);
    }
    Ok(())
}

/// An image in memory. Clones share the same bytes, so a test or a fuzz
/// harness can keep a handle and inspect the image the device writes.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemStorage {
    /// An in-memory storage holding `image` (empty for a new image).
    pub fn new(image: Vec<u8>) -> MemStorage {
        MemStorage {
            bytes: Arc::new(Mutex::new(image)),
        }
    }

    /// A copy of the current bytes.
    pub fn image(&self) -> Vec<u8> {
        lock(&self.bytes).clone()
    }
}

impl Storage for MemStorage {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = lock(&self.bytes);
        let r = range(offset, buf.len(), bytes.len())?;
        if let Some(src) = bytes.get(r) {
            buf.copy_from_slice(src);
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        write_into(&mut lock(&self.bytes), offset, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(lock(&self.bytes).len() as u64)
    }
    fn set_size(&mut self, size: u64) -> io::Result<()> {
        let size = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        lock(&self.bytes).resize(size, 0);
        Ok(())
    }
    fn name(&self) -> String {
        "<memory>".to_string()
    }
}

/// One mutation step recorded by [`CrashSim`].
#[derive(Clone, Debug)]
enum Step {
    Write { offset: u64, bytes: Vec<u8> },
    Sync,
}

#[derive(Debug)]
struct CrashState {
    /// The image as it was when the simulator was made (all durable).
    base: Vec<u8>,
    /// What reads see: `base` with every accepted write applied.
    current: Vec<u8>,
    /// Accepted steps, in order.
    steps: Vec<Step>,
    /// The step that was in flight when the power was cut (never applied
    /// to `current`), if any.
    in_flight: Option<Step>,
    /// Number of steps allowed before the cut; `None` = never cut.
    cut_after: Option<usize>,
    /// Whether reads fail (to provoke read failures).
    fail_reads: bool,
}

/// A storage that simulates a power cut after the k-th write/sync step.
///
/// Until the cut, writes go to an in-memory image and are recorded. The
/// step after the k-th (the one in flight at the cut) and every later step
/// fail with an I/O error. [`CrashHandle::image_after_cut_ordered`] and
/// [`CrashHandle::image_after_cut_unordered`] then compute what a disk could
/// hold after the power comes back, for two disk models:
///
/// * ordered: writes reach the medium in order; the in-flight write is
///   torn (only its first `torn_len` bytes reached the medium);
/// * unordered: everything up to the last completed sync is durable; each
///   write after it (including the in-flight one) independently reached the
///   medium whole, not at all, or torn at a random 512-byte sector boundary
///   or byte, as a seeded generator decides.
#[derive(Clone, Debug)]
pub struct CrashSim {
    state: Arc<Mutex<CrashState>>,
}

/// The test's handle on a [`CrashSim`] that was given to a device.
#[derive(Clone, Debug)]
pub struct CrashHandle {
    state: Arc<Mutex<CrashState>>,
}

impl CrashSim {
    /// A simulator starting from `image` (considered fully durable).
    pub fn new(image: Vec<u8>) -> (CrashSim, CrashHandle) {
        let state = Arc::new(Mutex::new(CrashState {
            current: image.clone(),
            base: image,
            steps: Vec::new(),
            in_flight: None,
            cut_after: None,
            fail_reads: false,
        }));
        (
            CrashSim {
                state: state.clone(),
            },
            CrashHandle { state },
        )
    }
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

impl CrashSim {
    fn step(&mut self, step: Step) -> io::Result<()> {
        let mut st = lock(&self.state);
        if let Some(limit) = st.cut_after {
            if st.steps.len() >= limit {
                if st.in_flight.is_none() && st.steps.len() == limit {
                    st.in_flight = Some(step);
                }
                return Err(power_cut());
            }
        }
        if let Step::Write { offset, bytes } = &step {
            write_into(&mut st.current, *offset, bytes)?;
        }
        st.steps.push(step);
        Ok(())
    }
}

impl Storage for CrashSim {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = lock(&self.state);
        if st.fail_reads {
            return Err(io::Error::other("simulated read failure"));
        }
        if st.in_flight.is_some() {
            return Err(power_cut());
        }
        let r = range(offset, buf.len(), st.current.len())?;
        if let Some(src) = st.current.get(r) {
            buf.copy_from_slice(src);
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.step(Step::Write {
            offset,
            bytes: buf.to_vec(),
        })
    }
    fn sync(&mut self) -> io::Result<()> {
        self.step(Step::Sync)
    }
    fn size(&mut self) -> io::Result<u64> {
        Ok(lock(&self.state).current.len() as u64)
    }
    fn set_size(&mut self, size: u64) -> io::Result<()> {
        let size = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        let mut st = lock(&self.state);
        st.current.resize(size, 0);
        st.base.resize(size, 0);
        Ok(())
    }
    fn name(&self) -> String {
        "<crash-sim>".to_string()
    }
}

/// A small deterministic generator (xorshift64*), for the unordered model.
fn next(seed: &mut u64) -> u64 {
    let mut x = *seed;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl CrashHandle {
    /// Cuts the power once `k` write/sync steps in total (counted from the
    /// simulator's creation) have been accepted: step `k + 1` is the one in
    /// flight. `None` removes the cut.
    pub fn set_cut_after(&self, k: Option<usize>) {
        lock(&self.state).cut_after = k;
    }

    /// Makes every read fail (or succeed again).
    pub fn set_fail_reads(&self, fail: bool) {
        lock(&self.state).fail_reads = fail;
    }

    /// Number of write/sync steps accepted so far.
    pub fn steps(&self) -> usize {
        lock(&self.state).steps.len()
    }

    /// Whether a step was refused because of the cut.
    pub fn was_cut(&self) -> bool {
        lock(&self.state).in_flight.is_some()
    }

    /// The image with every accepted write applied (as reads saw it).
    pub fn current_image(&self) -> Vec<u8> {
        lock(&self.state).current.clone()
    }

    /// The disk after the cut, ordered model: all accepted steps reached the
    /// medium, and of the in-flight write only its first `torn_len` bytes
    /// (clamped to its length; 0 = nothing).
    pub fn image_after_cut_ordered(&self, torn_len: usize) -> Vec<u8> {
        let st = lock(&self.state);
        let mut img = st.current.clone();
        if let Some(Step::Write { offset, bytes }) = &st.in_flight {
            let n = torn_len.min(bytes.len());
            let _ = write_into(&mut img, *offset, bytes.get(..n).unwrap_or(&[]));
        }
        img
    }

    /// The disk after the cut, unordered model (see [`CrashSim`]), with the
    /// choices drawn from `seed`.
    pub fn image_after_cut_unordered(&self, mut seed: u64) -> Vec<u8> {
        let st = lock(&self.state);
        seed |= 1;
        let mut img = st.base.clone();
        let last_sync = st
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Sync))
            .map(|i| i + 1)
            .unwrap_or(0);
        let (durable, volatile) = st.steps.split_at(last_sync.min(st.steps.len()));
        for s in durable {
            if let Step::Write { offset, bytes } = s {
                let _ = write_into(&mut img, *offset, bytes);
            }
        }
        for s in volatile.iter().chain(st.in_flight.iter()) {
            let Step::Write { offset, bytes } = s else {
                continue;
            };
            match next(&mut seed) % 4 {
                0 => {}
                1 => {
                    let _ = write_into(&mut img, *offset, bytes);
                }
                2 => {
                    // Torn at a byte.
                    let n = (next(&mut seed) as usize) % (bytes.len() + 1);
                    let _ = write_into(&mut img, *offset, bytes.get(..n).unwrap_or(&[]));
                }
                _ => {
                    // Each 512-byte sector independently reached the medium.
                    for (i, chunk) in bytes.chunks(512).enumerate() {
                        if next(&mut seed).is_multiple_of(2) {
                            let off = offset + (i as u64) * 512;
                            let _ = write_into(&mut img, off, chunk);
                        }
                    }
                }
            }
        }
        img
    }
}
