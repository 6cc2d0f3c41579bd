//! The hakeys trusted application: a thin shell over `hakeys-engine`.
//!
//! - one command ([`hakeys_proto::TA_CMD_REQUEST`]): the request is copied
//!   out of shared memory once, into a private buffer, before anything looks
//!   at it; the engine decodes and validates only that copy; the response is
//!   written back through the bounds-checked output memref;
//! - an [`Entropy`] adapter over `TEE_GenerateRandom`;
//! - a [`SecureStorage`] adapter over one OP-TEE persistent object per
//!   [`ObjectId`] in `TEE_STORAGE_PRIVATE_RPMB`, written only in ways that
//!   OP-TEE 4.10.0's RPMB file system commits atomically (see
//!   [`RpmbObject`] and `docs/optee-rpmb-atomicity.md`);
//! - one engine for the life of the single-instance, keep-alive TA, so the
//!   boot-phase lock set by `boot-done` holds until the next boot;
//! - every request is handled as the session's client identity
//!   ([`caller`]): root's user login may do everything, any other identity
//!   only what the daemon needs ([`hakeys_engine::permitted`]).
#![no_std]
#![no_main]
// Everything here runs on requests from the normal world: no panicking
// shortcuts (a panic kills the TA, and with KEEP_CRASHED, the service until
// reboot).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
// `unsafe_code` is denied by `Cargo.toml`'s [lints]; it is allowed only on the
// three items below that need it, each with its SAFETY comment: the `Sync`
// marker of the instance cell, the `getauxval` symbol, and the module that
// holds the TA header the build script generates.

extern crate alloc;

use core::cell::RefCell;

use hakeys_engine::{Caller, Engine, Entropy, EntropyError, ObjectId, SecureStorage, StorageError};
use hakeys_proto::{MAX_MESSAGE_LEN, TA_CMD_REQUEST};
use optee_utee::property::{ClientIdentity, PropertyKey};
use optee_utee::{
    ta_close_session, ta_create, ta_destroy, ta_invoke_command, ta_open_session, DataFlag,
    ErrorKind, GenericObject, LoginType, ObjectStorageConstants, ParameterMemref, ParameterMemrefInput,
    ParameterMemrefOutput, ParameterMemrefRead, ParameterMemrefWrite, ParameterNone, ParametersAny,
    PersistentObject, Random, Result, Whence,
};

/// The persistent object of each engine object in `TEE_STORAGE_PRIVATE_RPMB`.
/// `hakeys-state-v1` is the object that releases before the slot layout
/// wrote; the engine reads it to carry such a device over.
fn object_name(id: ObjectId) -> &'static [u8] {
    match id {
        ObjectId::LegacyState => b"hakeys-state-v1",
        ObjectId::SlotA => b"hakeys-slot-a",
        ObjectId::SlotB => b"hakeys-slot-b",
        ObjectId::Marker => b"hakeys-initialised",
    }
}

/// The longest object this adapter writes. An object's file in OP-TEE's
/// RPMB file system starts on a 256-byte block boundary
/// (`rpmb_fs_write_primitive` allocates from `TEE_MM_POOL_HI_ALLOC` in
/// 256-byte granules) with the 24-byte `struct tee_svc_storage_head`
/// (core/tee/tee_svc_storage.c) before the data stream of an object without
/// attributes; an in-place write of `len` bytes at data position 0 is one
/// block, hence one authenticated RPMB write, only while 24 + `len` <= 256.
const MAX_RECORD_LEN: usize = 256 - 24;

// Every record the engine writes must take the one-write in-place path
// (`write` also refuses anything longer at run time).
const _: () = assert!(hakeys_engine::state::STATE_LEN <= MAX_RECORD_LEN);
const _: () = assert!(hakeys_engine::slots::SLOT_LEN <= MAX_RECORD_LEN);
const _: () = assert!(hakeys_engine::slots::MARKER_LEN <= MAX_RECORD_LEN);

/// Root's identity for a user login (`TEEC_LOGIN_USER`): the Linux TEE
/// subsystem (drivers/tee/tee_core.c, `tee_session_calc_client_uuid`)
/// computes it, not the caller, as the UUIDv5 of `uid=<effective uid in
/// hex>` in the namespace 58ac9ca0-2086-4683-a1b8-ec4bc08e01b6; for uid 0:
/// `python3 -c "import uuid; print(uuid.uuid5(uuid.UUID('58ac9ca0-2086-4683-a1b8-ec4bc08e01b6'), 'uid=0'))"`.
/// A process can log in only as its own effective uid (a user namespace's
/// root maps to its uid in the initial namespace), so only root gets it.
/// `cargo xtask qemu-test` checks both sides on the real stack (root
/// rotates; another user with `/dev/tee0` is refused).
const ROOT_USER_IDENTITY: &str = "ef0180a3-13f3-5d1c-b7f5-888c0e21059a";

/// Who opened the current session, as OP-TEE reports it
/// (`gpd.client.identity`). Root's user login is [`Caller::Root`];
/// everything else (other users, a public login, group or application
/// logins, another TA, an identity that cannot be read) is
/// [`Caller::Client`].
fn caller() -> Caller {
    match ClientIdentity.get() {
        Ok(id) if id.login_type() == LoginType::User && is_root_identity(&id.uuid()) => {
            Caller::Root
        }
        _ => Caller::Client,
    }
}

/// Is `uuid` [`ROOT_USER_IDENTITY`]? optee-utee's `Uuid` shows itself only
/// as text: written into a fixed buffer (not `alloc::format!`, whose
/// precompiled code needs an unwinder the TA does not link).
fn is_root_identity(uuid: &optee_utee::Uuid) -> bool {
    struct Text {
        buf: [u8; 36],
        len: usize,
    }
    impl core::fmt::Write for Text {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
            let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut text = Text {
        buf: [0; 36],
        len: 0,
    };
    core::fmt::write(&mut text, format_args!("{uuid}")).is_ok()
        && text.buf.get(..text.len) == Some(ROOT_USER_IDENTITY.as_bytes())
}

struct TeeRng;

impl Entropy for TeeRng {
    fn fill(&mut self, out: &mut [u8]) -> core::result::Result<(), EntropyError> {
        Random::generate(out);
        Ok(())
    }
}

/// The engine's objects as OP-TEE persistent data objects (no attributes)
/// in `TEE_STORAGE_PRIVATE_RPMB`.
///
/// The [`SecureStorage`] contract (an interrupted write leaves the old or
/// the new contents; a missing object stays missing or appears complete;
/// no other object changes) holds because `write` uses only the two object
/// operations that OP-TEE 4.10.0's RPMB file system (core/tee/tee_rpmb_fs.c)
/// commits in one authenticated write, as analysed in
/// `docs/optee-rpmb-atomicity.md`:
///
/// 1. **in place, same length, at most [`MAX_RECORD_LEN`] bytes**:
///    `TEE_WriteObjectData` → `syscall_storage_obj_write` →
///    `rpmb_fs_write` → `rpmb_fs_write_primitive`, which writes in place
///    when the write does not extend the file and
///    `tee_rpmb_write_is_atomic` holds (the bytes lie in one 256-byte block,
///    as `rpmb_set_dev_info` fixes `rel_wr_blkcnt` at 1):
///    `tee_rpmb_write` re-encrypts that block and `tee_rpmb_write_blk` sends
///    it as one write frame; the FAT is not touched. RPMB applies one
///    authenticated write whole or not at all: old record or new.
/// 2. **create of a missing object, without OVERWRITE**: `rpmb_fs_create`
///    writes the header and data into a hidden temporary file
///    (`/<uuid>/.<id>`, which `TEE_OpenPersistentObject` never finds), and
///    only its last write, `rpmb_fs_rename_internal`, renames that FAT
///    entry to the real name: the object is missing or complete. A leftover
///    temporary file is reused by the next create of the same ID
///    (`rpmb_fs_open_internal`).
///
/// Never used: create with OVERWRITE over an existing object
/// (`rpmb_fs_rename_internal` zeroes the old FAT entry in one write and
/// renames the temporary file in a second: a cut between them leaves no
/// object at all), truncation, rename and delete. An existing object with
/// another length is an error, not something to repair here.
struct RpmbObject;

fn storage_error(e: optee_utee::Error) -> StorageError {
    match e.kind() {
        ErrorKind::CorruptObject | ErrorKind::CorruptObject2 => StorageError::Corrupt,
        _ => StorageError::Io,
    }
}

impl SecureStorage for RpmbObject {
    fn read(
        &mut self,
        id: ObjectId,
        buf: &mut [u8],
    ) -> core::result::Result<Option<usize>, StorageError> {
        // A hidden temporary file of an interrupted create is never found
        // here: `rpmb_fs_open_internal` looks up the real name only.
        let mut obj = match PersistentObject::open(
            ObjectStorageConstants::PrivateRpmb,
            object_name(id),
            DataFlag::ACCESS_READ | DataFlag::SHARE_READ,
        ) {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::ItemNotFound => return Ok(None),
            Err(e) => return Err(storage_error(e)),
        };
        let size = obj.info().map_err(storage_error)?.data_size();
        let dst = buf.get_mut(..size).ok_or(StorageError::Corrupt)?;
        // `rpmb_fs_read` reads the whole range in one authenticated read
        // request: it never sees half of a write.
        let n = obj.read(dst).map_err(storage_error)? as usize;
        if n != size {
            return Err(StorageError::Corrupt);
        }
        Ok(Some(n))
    }

    fn write(&mut self, id: ObjectId, record: &[u8]) -> core::result::Result<(), StorageError> {
        if record.len() > MAX_RECORD_LEN {
            // Would take the copy-on-write path (still old-or-new, but
            // several writes); the layout promises one.
            return Err(StorageError::Io);
        }
        let name = object_name(id);
        match PersistentObject::open(
            ObjectStorageConstants::PrivateRpmb,
            name,
            DataFlag::ACCESS_READ | DataFlag::ACCESS_WRITE,
        ) {
            Ok(mut obj) => {
                if obj.info().map_err(storage_error)?.data_size() != record.len() {
                    // Rewriting it with another length would extend or
                    // shrink the file (copy-on-write or truncate); never
                    // replace, truncate, rename or delete an existing
                    // object from here.
                    return Err(StorageError::Io);
                }
                // Case 1 above: `end <= data_size` and one block, so
                // `rpmb_fs_write_primitive` takes the in-place branch: one
                // authenticated write. The handle closes on drop.
                obj.seek(0, Whence::DataSeekSet).map_err(storage_error)?;
                obj.write(record).map_err(storage_error)
            }
            Err(e) if e.kind() == ErrorKind::ItemNotFound => {
                // Case 2 above: a create without OVERWRITE appears under its
                // name only with the rename, its last write. Should the
                // object exist after all, OP-TEE answers ACCESS_CONFLICT
                // (after removing its temporary file) and nothing existing
                // is touched.
                PersistentObject::create(
                    ObjectStorageConstants::PrivateRpmb,
                    name,
                    DataFlag::ACCESS_READ | DataFlag::ACCESS_WRITE,
                    None,
                    record,
                )
                .map(drop)
                .map_err(storage_error)
            }
            Err(e) => Err(storage_error(e)),
        }
    }
}

/// The engine and its buffers, for the life of the TA instance.
struct Instance {
    engine: Engine<RpmbObject, TeeRng>,
    request: [u8; MAX_MESSAGE_LEN],
    response: [u8; MAX_MESSAGE_LEN],
}

struct Global(RefCell<Option<alloc::boxed::Box<Instance>>>);

// SAFETY: OP-TEE runs the entry points of one TA instance one at a time (the
// TA does not set TA_FLAG_CONCURRENT), so the RefCell is never accessed from
// two threads at once.
#[allow(unsafe_code)]
unsafe impl Sync for Global {}

static INSTANCE: Global = Global(RefCell::new(None));

// The optee-utee attribute macros below expand to the
// `#[unsafe(no_mangle)] extern "C"` entry points the OP-TEE loader looks up
// and to an `unsafe` call of `FromRawParameters::from_raw`, which checks
// OP-TEE's parameter types against each function's typed parameters before
// reading them. rustc does not apply `unsafe_code` to a proc macro's
// expansion, so they need no `allow` here; their soundness is optee-utee's.

#[ta_create]
fn create() -> Result<()> {
    let mut slot = INSTANCE.0.try_borrow_mut().map_err(|_| ErrorKind::Busy)?;
    *slot = Some(alloc::boxed::Box::new(Instance {
        engine: Engine::new(RpmbObject, TeeRng),
        request: [0; MAX_MESSAGE_LEN],
        response: [0; MAX_MESSAGE_LEN],
    }));
    Ok(())
}

#[ta_open_session]
fn open_session(_params: &mut ParametersAny) -> Result<()> {
    Ok(())
}

#[ta_close_session]
fn close_session() {}

#[ta_destroy]
fn destroy() {
    if let Ok(mut slot) = INSTANCE.0.try_borrow_mut() {
        *slot = None;
    }
}

#[ta_invoke_command]
fn invoke_command(
    cmd_id: u32,
    params: &mut (
        ParameterMemrefInput,
        ParameterMemrefOutput,
        ParameterNone,
        ParameterNone,
    ),
) -> Result<()> {
    if cmd_id != TA_CMD_REQUEST {
        return Err(ErrorKind::NotSupported.into());
    }
    let mut slot = INSTANCE.0.try_borrow_mut().map_err(|_| ErrorKind::Busy)?;
    let inst = slot.as_mut().ok_or(ErrorKind::BadState)?;
    let Instance {
        engine,
        request: request_buf,
        response: response_buf,
    } = &mut **inst;
    let (input, output) = (&params.0, &mut params.1);
    let len = input.buffer_len();
    if output.buffer_len() < MAX_MESSAGE_LEN {
        return Err(ErrorKind::ShortBuffer.into());
    }
    // Copy the request out of shared memory once; an over-long request is
    // answered by the engine (BadMessage) from its first bytes only.
    let take = len.min(MAX_MESSAGE_LEN);
    // `take` never exceeds the buffer; both buffers are wiped on every path.
    let copied = match request_buf.get_mut(..take) {
        Some(dst) => input.read_at(0, dst),
        None => Err(ErrorKind::BadParameters.into()),
    };
    let result = copied.and_then(|copied| {
        let request: &[u8] = if len > MAX_MESSAGE_LEN {
            // Hand the engine a length it refuses before parsing.
            &[0u8; MAX_MESSAGE_LEN + 1]
        } else {
            request_buf.get(..copied).ok_or(ErrorKind::BadParameters)?
        };
        let n = engine.handle_as(caller(), request, response_buf);
        // `handle` never returns more than the buffer it was given.
        let answer = match response_buf.get(..n) {
            Some(response) => output.set_output(response),
            None => Err(ErrorKind::Generic.into()),
        };
        wipe(response_buf, n);
        answer
    });
    wipe(request_buf, take);
    result
}

/// Zero the first `used` bytes of `buf` (all of it, should `used` be longer).
fn wipe(buf: &mut [u8], used: usize) {
    match buf.get_mut(..used) {
        Some(b) => b.fill(0),
        None => buf.fill(0),
    }
}

/// `cpufeatures` (used by `aes` and `polyval` on aarch64) asks the kernel
/// for CPU features with `getauxval`, which a TA does not have. Answering "no
/// features" makes the crypto crates use their portable constant-time
/// software code, which runs on every Armv8 core.
// SAFETY: `#[no_mangle]` exports this as the C symbol `getauxval`, which
// nothing else in the TA defines (a TA links no libc); it has the C
// signature `unsigned long getauxval(unsigned long)` and touches no memory.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn getauxval(_type: libc::c_ulong) -> libc::c_ulong {
    0
}

/// The TA header (UUID, flags, stack and heap sizes, properties), generated
/// by `build.rs` from `proto/uuid.txt`.
// SAFETY: the file is optee-utee-build 0.10's output for our `TaConfig`: the
// `#[unsafe(no_mangle)]` statics the OP-TEE loader reads (`ta_head` in its
// `.ta_head` section, `ta_props`, the heap), and `tahead_get_trace_level`,
// which reads a `static mut` that nothing writes.
#[allow(unsafe_code)]
mod ta_header {
    include!(concat!(env!("OUT_DIR"), "/user_ta_header.rs"));
}
