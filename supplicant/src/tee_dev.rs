//! The Linux TEE driver's supplicant interface (`/dev/teepriv0`): the only
//! unsafe code of the supplicant, confined to ioctls on the device and to
//! the shared-memory regions registered with it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

use crate::{teec, Param, SharedMemory};

const TEE_IOC_VERSION: libc::c_ulong = 0x800c_a400;
const TEE_IOC_SUPPL_RECV: libc::c_ulong = 0x8010_a406;
const TEE_IOC_SUPPL_SEND: libc::c_ulong = 0x8010_a407;
const TEE_IOC_SHM_REGISTER: libc::c_ulong = 0xc018_a409;
/// `TEE_IMPL_ID_OPTEE`.
pub const IMPL_ID_OPTEE: u32 = 1;
/// Room for parameters in one request (OP-TEE's RPCs use at most 4).
pub const MAX_PARAMS: usize = 5;
const PAGE: usize = 4096;

#[repr(C)]
struct BufData {
    buf_ptr: u64,
    buf_len: u64,
}

#[repr(C)]
struct VersionData {
    impl_id: u32,
    impl_caps: u32,
    gen_caps: u32,
}

#[repr(C)]
struct ShmRegisterData {
    addr: u64,
    length: u64,
    flags: u32,
    id: i32,
}

/// `struct tee_iocl_supp_recv_arg` / `tee_iocl_supp_send_arg` with room
/// for [`MAX_PARAMS`] parameters.
#[repr(C)]
struct SuppArg {
    func_or_ret: u32,
    num_params: u32,
    params: [Param; MAX_PARAMS],
}

/// The supplicant device.
pub struct TeeDevice {
    file: File,
}

fn ioctl<T>(fd: &File, request: libc::c_ulong, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] value whose
    // layout is the one the request number encodes; the kernel reads and
    // writes only within it (and within buffers it points to, which the
    // callers keep alive for the duration of the call).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl TeeDevice {
    /// Open the supplicant device.
    pub fn open(path: &Path) -> io::Result<TeeDevice> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(TeeDevice { file })
    }

    /// The driver's implementation id (1 = OP-TEE).
    pub fn impl_id(&self) -> io::Result<u32> {
        let mut v = VersionData {
            impl_id: 0,
            impl_caps: 0,
            gen_caps: 0,
        };
        ioctl(&self.file, TEE_IOC_VERSION, &mut v)?;
        Ok(v.impl_id)
    }

    /// Block until OP-TEE has a request: returns the function and fills
    /// `params`, returning how many are in use.
    pub fn recv(&self, params: &mut [Param; MAX_PARAMS]) -> io::Result<(u32, usize)> {
        let mut arg = SuppArg {
            func_or_ret: 0,
            num_params: MAX_PARAMS as u32,
            params: [Param::default(); MAX_PARAMS],
        };
        let mut buf = BufData {
            buf_ptr: &mut arg as *mut SuppArg as u64,
            buf_len: std::mem::size_of::<SuppArg>() as u64,
        };
        ioctl(&self.file, TEE_IOC_SUPPL_RECV, &mut buf)?;
        let n = (arg.num_params as usize).min(MAX_PARAMS);
        *params = arg.params;
        Ok((arg.func_or_ret, n))
    }

    /// Answer the request received last, with the same parameters.
    pub fn send(&self, ret: u32, params: &[Param]) -> io::Result<()> {
        let n = params.len().min(MAX_PARAMS);
        let mut arg = SuppArg {
            func_or_ret: ret,
            num_params: n as u32,
            params: [Param::default(); MAX_PARAMS],
        };
        arg.params[..n].copy_from_slice(&params[..n]);
        // The driver requires the length to match num_params exactly.
        let len = 8 + n * std::mem::size_of::<Param>();
        let mut buf = BufData {
            buf_ptr: &mut arg as *mut SuppArg as u64,
            buf_len: len as u64,
        };
        ioctl(&self.file, TEE_IOC_SUPPL_SEND, &mut buf).map(drop)
    }
}

struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Closing it unregisters the memory from the driver.
    _fd: OwnedFd,
}

/// Shared memory: page-aligned anonymous allocations registered with the
/// driver (`TEE_IOC_SHM_REGISTER`). `TEE_IOC_SHM_ALLOC` is not used: it
/// calls into OP-TEE, which needs a free secure thread, and can deadlock
/// when every thread is waiting on the supplicant.
pub struct OsSharedMemory<'d> {
    dev: &'d TeeDevice,
    regions: HashMap<u64, Region>,
}

impl<'d> OsSharedMemory<'d> {
    pub fn new(dev: &'d TeeDevice) -> Self {
        OsSharedMemory {
            dev,
            regions: HashMap::new(),
        }
    }

    fn region(&self, id: u64, offset: usize, len: usize) -> Result<*mut u8, u32> {
        let r = self.regions.get(&id).ok_or(teec::ERROR_BAD_PARAMETERS)?;
        let end = offset.checked_add(len).ok_or(teec::ERROR_BAD_PARAMETERS)?;
        if end > r.layout.size() {
            return Err(teec::ERROR_BAD_PARAMETERS);
        }
        // SAFETY: offset <= size of the allocation (checked above).
        Ok(unsafe { r.ptr.as_ptr().add(offset) })
    }
}

impl SharedMemory for OsSharedMemory<'_> {
    fn alloc(&mut self, size: usize) -> Result<u64, u32> {
        let rounded = size
            .max(1)
            .checked_next_multiple_of(PAGE)
            .ok_or(teec::ERROR_OUT_OF_MEMORY)?;
        let layout =
            Layout::from_size_align(rounded, PAGE).map_err(|_| teec::ERROR_OUT_OF_MEMORY)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(teec::ERROR_OUT_OF_MEMORY)?;
        let mut data = ShmRegisterData {
            addr: ptr.as_ptr() as u64,
            length: rounded as u64,
            flags: 0,
            id: 0,
        };
        match ioctl(&self.dev.file, TEE_IOC_SHM_REGISTER, &mut data) {
            Ok(fd) => {
                // SAFETY: on success the ioctl returns a new file descriptor
                // that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let Ok(id) = u64::try_from(data.id) else {
                    // A negative id from the driver: unregister (close the
                    // fd) first, then free the pages, so nothing leaks.
                    drop(fd);
                    // SAFETY: allocated above with this layout; the driver
                    // no longer references it once the fd is closed.
                    unsafe { dealloc(ptr.as_ptr(), layout) };
                    return Err(teec::ERROR_GENERIC);
                };
                self.regions.insert(
                    id,
                    Region {
                        ptr,
                        layout,
                        _fd: fd,
                    },
                );
                Ok(id)
            }
            Err(e) => {
                // SAFETY: allocated above with this layout, never shared.
                unsafe { dealloc(ptr.as_ptr(), layout) };
                eprintln!("hakeys-supplicant: TEE_IOC_SHM_REGISTER of {rounded} bytes failed: {e}");
                Err(teec::ERROR_OUT_OF_MEMORY)
            }
        }
    }

    fn free(&mut self, id: u64) -> Result<(), u32> {
        let r = self.regions.remove(&id).ok_or(teec::ERROR_BAD_PARAMETERS)?;
        let (ptr, layout) = (r.ptr, r.layout);
        drop(r); // unregister first (closes the fd)
                 // SAFETY: allocated by `alloc` with this layout; the driver no longer
                 // references it once its fd is closed.
        unsafe { dealloc(ptr.as_ptr(), layout) };
        Ok(())
    }

    fn read(&self, id: u64, offset: usize, out: &mut [u8]) -> Result<(), u32> {
        let src = self.region(id, offset, out.len())?;
        // SAFETY: `src..src+len` is inside the allocation (checked by
        // `region`); `out` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn fits(&self, id: u64, offset: usize, len: usize) -> bool {
        self.region(id, offset, len).is_ok()
    }

    fn write(&mut self, id: u64, offset: usize, data: &[u8]) -> Result<(), u32> {
        let dst = self.region(id, offset, data.len())?;
        // SAFETY: as in `read`, with the roles swapped.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }
}

impl Drop for OsSharedMemory<'_> {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.regions.keys().copied().collect();
        for id in ids {
            let _ = self.free(id);
        }
    }
}
