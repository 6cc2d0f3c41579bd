//! The storage interface: the engine's named objects, the contract a
//! backend keeps, and an in-memory backend for tests.

/// The engine's stored objects. Each holds at most [`MAX_OBJECT_LEN`]
/// bytes. Which ones the engine writes, when, and why that survives a power
/// cut at any write is specified in `engine/SPEC.md` ("State layout").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// The state record of format v1, as releases before the slot layout
    /// wrote it. Read to carry such a device over; never written again.
    LegacyState,
    /// The first of the two state slots, written alternately.
    SlotA,
    /// The second state slot.
    SlotB,
    /// The initialisation marker: written when the device is initialised
    /// (after the first slot), rewritten only by `init-new-identity`, never
    /// removed, so that lost state is told apart from a device that was
    /// never set up.
    Marker,
}

impl ObjectId {
    /// Every object, in a fixed order.
    pub const ALL: [ObjectId; 4] = [
        ObjectId::LegacyState,
        ObjectId::SlotA,
        ObjectId::SlotB,
        ObjectId::Marker,
    ];
}

/// The largest stored object, in bytes.
pub const MAX_OBJECT_LEN: usize = 256;

/// Where the engine keeps its objects (an OP-TEE persistent object per
/// [`ObjectId`] in RPMB on a board; an RPMB block per object in the
/// simulator; memory in tests).
///
/// The contract an implementation must keep, on which the engine's
/// power-cut safety rests: a [`SecureStorage::write`] interrupted at any
/// point (a crash, a power cut, a failed write) never changes any object
/// other than `id`, and leaves `id` holding its previous contents, the new
/// contents, contents that fail the engine's own integrity check of that
/// object, or no object at all. (An in-place atomic replacement is more than
/// the engine needs: it never writes the object that holds the current
/// state; `engine/SPEC.md`, "Atomicity".)
///
/// Reads report [`StorageError::Corrupt`] only for what no cut explains
/// (the backend's own authentication or freshness check failed: tampering,
/// a rolled-back medium, another device's key): the engine then fails
/// closed. A backend whose medium reports an interrupted write as an error
/// must hand the engine the bytes, or report the object missing, instead.
pub trait SecureStorage {
    /// Read object `id` into `buf`; `Ok(None)` if it does not exist.
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError>;
    /// Write object `id` whole, creating it if it does not exist.
    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError>;
}

/// Secure storage failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// Could not be read or written.
    Io,
    /// What was read fails its integrity or freshness check.
    Corrupt,
}

impl core::fmt::Display for StorageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StorageError::Io => "secure storage could not be read or written",
            StorageError::Corrupt => "secure storage failed its integrity or freshness check",
        })
    }
}

impl core::error::Error for StorageError {}

/// Secure storage in memory: for tests, fuzzing and benchmarks. Nothing
/// survives the value; never use it for real keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MemoryStorage {
    objects: [Option<heapless::Vec<u8, MAX_OBJECT_LEN>>; 4],
}

fn slot_of(id: ObjectId) -> usize {
    match id {
        ObjectId::LegacyState => 0,
        ObjectId::SlotA => 1,
        ObjectId::SlotB => 2,
        ObjectId::Marker => 3,
    }
}

impl MemoryStorage {
    /// Object `id`, if it exists (tests inspect and corrupt it).
    pub fn object_mut(&mut self, id: ObjectId) -> Option<&mut [u8]> {
        self.objects
            .get_mut(slot_of(id))
            .and_then(|o| o.as_mut())
            .map(|r| r.as_mut_slice())
    }

    /// Remove object `id` (tests: a lost object).
    pub fn remove(&mut self, id: ObjectId) {
        if let Some(o) = self.objects.get_mut(slot_of(id)) {
            *o = None;
        }
    }
}

impl SecureStorage for MemoryStorage {
    fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        match self.objects.get(slot_of(id)).and_then(|o| o.as_ref()) {
            None => Ok(None),
            Some(r) => {
                let dst = buf.get_mut(..r.len()).ok_or(StorageError::Corrupt)?;
                dst.copy_from_slice(r);
                Ok(Some(r.len()))
            }
        }
    }

    fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
        let obj = heapless::Vec::from_slice(data).map_err(|_| StorageError::Io)?;
        let o = self.objects.get_mut(slot_of(id)).ok_or(StorageError::Io)?;
        *o = Some(obj);
        Ok(())
    }
}
