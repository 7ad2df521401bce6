//! Memory mappings a device may reach: an owned virtual window, placed with care.
//!
//! An [`MmapWindow`] owns a range of address space. Parts of it may be file mappings (a BAR
//! through the VFIO device fd) and the rest stays `PROT_NONE`, so holes in a sparse BAR keep
//! their place and the whole window goes away with one `munmap` on drop.
//!
//! Its memory is never lent out as `&[u8]`: a device may write it at any time, so access is
//! volatile and bounds-checked. That is also what makes DMA-mapping a [`DmaRange`] safe.

use core::ffi::c_void;
use core::ptr::NonNull;
use std::os::fd::AsFd;

use rustix::io::{Errno, Result};
use rustix::mm::{Advice, MapFlags, ProtFlags};

/// What a read in a child process found ([`MmapWindow::probe_u32`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The read completed with this value.
    Value(u32),
    /// The read killed the child with this signal (e.g. `SIGBUS`, 7).
    Signal(i32),
}

impl Probe {
    /// What reading MMIO that may not be accessed right now gives (a BAR whose device has
    /// memory decode off or is resetting).
    pub const BUS_ERROR: Probe = Probe::Signal(libc::SIGBUS);
}

/// The system page size.
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// How a mapping's protection is asked for, from the region's READ/WRITE flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

impl Prot {
    /// Read and write.
    pub const READ_WRITE: Prot = Prot { read: true, write: true };
    /// Read only.
    pub const READ_ONLY: Prot = Prot { read: true, write: false };

    fn flags(self) -> ProtFlags {
        let mut flags = ProtFlags::empty();
        if self.read {
            flags |= ProtFlags::READ;
        }
        if self.write {
            flags |= ProtFlags::WRITE;
        }
        flags
    }
}

/// The pages behind anonymous memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Base pages (transparent huge pages as the kernel sees fit).
    Normal,
    /// 2 MiB hugetlb pages (`MAP_HUGETLB | MAP_HUGE_2MB`).
    Hugetlb2M,
    /// 1 GiB hugetlb pages (`MAP_HUGETLB | MAP_HUGE_1GB`).
    Hugetlb1G,
}

/// An owned range of virtual address space, unmapped as a whole on drop.
#[derive(Debug)]
pub struct MmapWindow {
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: the window is plain address space owned by this value; nothing in it is tied to the
// creating thread, and all access goes through volatile reads and writes.
unsafe impl Send for MmapWindow {}
// SAFETY: as above; shared access only reads addresses or does volatile I/O.
unsafe impl Sync for MmapWindow {}

impl MmapWindow {
    /// Changes the protection of `[at, at + len)` of the window (`mprotect`), e.g. to make
    /// memory read-only. A write there afterwards (through [`MmapWindow::fill`], say) ends the
    /// process with SIGSEGV.
    ///
    /// # Errors
    /// `EINVAL` for a range that is not page-aligned or not inside the window; else what
    /// `mprotect` said.
    pub fn protect(&self, at: usize, len: usize, prot: Prot) -> Result<()> {
        let end = at.checked_add(len).ok_or(Errno::INVAL)?;
        if !at.is_multiple_of(page_size()) || len == 0 || end > self.len {
            return Err(Errno::INVAL);
        }
        let flags = rustix::mm::MprotectFlags::from_bits_truncate(prot.flags().bits());
        // SAFETY: the range lies inside the window, which is ours; changing its protection
        // invalidates no Rust reference, since all access goes through checked volatile I/O.
        unsafe { rustix::mm::mprotect((self.addr() + at) as *mut c_void, len, flags) }
    }

    /// Unmaps the window now, reporting `munmap`'s error, which dropping it ignores.
    ///
    /// # Errors
    /// What `munmap` said.
    pub fn unmap(self) -> Result<()> {
        let window = core::mem::ManuallyDrop::new(self);
        // SAFETY: the window is ours and no reference into it outlives `self`, which is
        // consumed here and never dropped, so the range is unmapped once.
        unsafe { rustix::mm::munmap(window.base.as_ptr(), window.len) }
    }

    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`: a shared file mapping wherever the kernel
    /// places it. The caller checks the placement (see [`MmapWindow::addr`]).
    ///
    /// # Errors
    /// The `mmap` errno.
    pub fn map_shared(fd: impl AsFd, len: usize, prot: Prot, offset: u64) -> Result<Self> {
        // SAFETY: a new shared mapping at an address the kernel picks overlaps nothing we own.
        let ptr = unsafe { rustix::mm::mmap(core::ptr::null_mut(), len, prot.flags(), MapFlags::SHARED, fd, offset) }?;
        Ok(Self::from_raw(ptr, len))
    }

    /// Reserves `len` bytes of `PROT_NONE` address space whose base is congruent to `phase`
    /// modulo `align` (a power of two), by over-reserving `len + align` and trimming both ends.
    ///
    /// # Errors
    /// `EINVAL` if `align` is not a power of two or `len` is not page-aligned; else the
    /// `mmap`/`munmap` errno.
    pub fn reserve(len: usize, align: usize, phase: usize) -> Result<Self> {
        let page = page_size();
        if !align.is_power_of_two() || len == 0 || !len.is_multiple_of(page) || !phase.is_multiple_of(page) {
            return Err(Errno::INVAL);
        }
        let align = align.max(page);
        let span = len.checked_add(align).ok_or(Errno::NOMEM)?;
        // SAFETY: a new private PROT_NONE anonymous mapping at a kernel-chosen address.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                span,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let raw_addr = raw as usize;
        let base = crate::align::place(raw_addr, align, phase % align);
        let head = base - raw_addr;
        let tail = span - head - len;
        if head > 0 {
            // SAFETY: [raw, base) is the front of the reservation just made, owned by nobody else.
            unsafe { rustix::mm::munmap(raw, head) }?;
        }
        if tail > 0 {
            // SAFETY: [base + len, raw + span) is the back of the same reservation.
            unsafe { rustix::mm::munmap((base + len) as *mut c_void, tail) }?;
        }
        Ok(Self::from_raw(base as *mut c_void, len))
    }

    /// Anonymous private read-write memory of `len` bytes (zeroed), for DMA buffers.
    ///
    /// # Errors
    /// The `mmap` errno.
    pub fn anonymous(len: usize) -> Result<Self> {
        Self::anonymous_backed(len, Backing::Normal)
    }

    /// Anonymous private read-write memory of `len` bytes on the given pages.
    ///
    /// # Errors
    /// The `mmap` errno; `ENOMEM` when not enough hugetlb pages are reserved.
    pub fn anonymous_backed(len: usize, backing: Backing) -> Result<Self> {
        let flags = MapFlags::PRIVATE
            | match backing {
                Backing::Normal => MapFlags::empty(),
                Backing::Hugetlb2M => MapFlags::HUGETLB | MapFlags::HUGE_2MB,
                Backing::Hugetlb1G => MapFlags::HUGETLB | MapFlags::HUGE_1GB,
            };
        // SAFETY: a new private anonymous mapping at a kernel-chosen address.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(core::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, flags)
        }?;
        Ok(Self::from_raw(ptr, len))
    }

    fn from_raw(ptr: *mut c_void, len: usize) -> Self {
        Self { base: NonNull::new(ptr).expect("mmap never returns NULL on success"), len }
    }

    /// `mmap(base + at, len, prot, MAP_SHARED | MAP_FIXED, fd, offset)` inside this window.
    ///
    /// # Errors
    /// `EINVAL` if `[at, at + len)` is not page-aligned or not inside the window; else the
    /// `mmap` errno.
    pub fn map_shared_fixed(&mut self, at: usize, len: usize, prot: Prot, fd: impl AsFd, offset: u64) -> Result<()> {
        let page = page_size();
        let end = at.checked_add(len).ok_or(Errno::INVAL)?;
        if !at.is_multiple_of(page) || len == 0 || end > self.len {
            return Err(Errno::INVAL);
        }
        let addr = (self.addr() + at) as *mut c_void;
        // SAFETY: [addr, addr + len) lies inside this window, which we own; MAP_FIXED replaces
        // only our own reservation there.
        unsafe { rustix::mm::mmap(addr, len, prot.flags(), MapFlags::SHARED | MapFlags::FIXED, fd, offset) }?;
        Ok(())
    }

    /// `madvise(MADV_HUGEPAGE)` over `[at, at + len)` of the window.
    ///
    /// # Errors
    /// `EINVAL` if the range is outside the window; else the `madvise` errno.
    pub fn advise_hugepage(&self, at: usize, len: usize) -> Result<()> {
        let range = self.range(at, len).ok_or(Errno::INVAL)?;
        // SAFETY: the range lies inside our own window; MADV_HUGEPAGE changes no contents.
        unsafe { rustix::mm::madvise(range.addr() as *mut c_void, len, Advice::LinuxHugepage) }
    }

    /// The window's first address.
    pub fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// The window's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty (never, for a successful mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `[at, at + len)` of this window as something a device may be given, if it fits.
    pub fn range(&self, at: usize, len: usize) -> Option<DmaRange<'_>> {
        let end = at.checked_add(len)?;
        (len > 0 && end <= self.len).then_some(DmaRange { window: self, at, len })
    }

    /// The whole window as a [`DmaRange`].
    pub fn whole(&self) -> DmaRange<'_> {
        DmaRange { window: self, at: 0, len: self.len }
    }

    /// The address of a `T` at byte offset `at`, if it is aligned and inside the window.
    fn checked_ptr<T>(&self, at: usize) -> Result<*mut T> {
        let end = at.checked_add(size_of::<T>()).ok_or(Errno::INVAL)?;
        if end > self.len || !at.is_multiple_of(align_of::<T>()) {
            return Err(Errno::INVAL);
        }
        Ok((self.addr() + at) as *mut T)
    }

    /// One volatile load of a `T` at byte offset `at`.
    fn load<T: Copy>(&self, at: usize) -> Result<T> {
        let ptr = self.checked_ptr::<T>(at)?;
        // SAFETY: `ptr` is aligned and inside the window. The caller has mapped that part
        // readable; a PROT_NONE hole faults, as a wild MMIO access would.
        Ok(unsafe { ptr.read_volatile() })
    }

    /// One volatile store of a `T` at byte offset `at`.
    fn store<T: Copy>(&self, at: usize, value: T) -> Result<()> {
        let ptr = self.checked_ptr::<T>(at)?;
        // SAFETY: as in `load`; the memory is never behind a Rust reference, so a shared
        // `&self` write can't alias one.
        unsafe { ptr.write_volatile(value) };
        Ok(())
    }

    /// A volatile read of a `u32` at byte offset `at`.
    ///
    /// # Errors
    /// `EINVAL` if `at` is out of bounds or misaligned.
    pub fn read_u32(&self, at: usize) -> Result<u32> {
        self.load(at)
    }

    /// [`MmapWindow::read_u32`] in a forked child, so that a fault kills the child and not the
    /// caller: how a test sees that MMIO whose device stopped decoding raises SIGBUS.
    ///
    /// # Errors
    /// `EINVAL` if `at` is out of bounds or misaligned; `pipe`, `fork` or `waitpid` failing.
    pub fn probe_u32(&self, at: usize) -> Result<Probe> {
        let ptr = self.checked_ptr::<u32>(at)?;
        let (reader, writer) = rustix::pipe::pipe()?;
        // SAFETY: the child runs only async-signal-safe code (a volatile load, write(2),
        // _exit(2)) on memory and fds it inherited, so forking a multi-threaded parent is
        // sound; it never returns into Rust code.
        match unsafe { libc::fork() } {
            -1 => Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))),
            0 => {
                use std::os::fd::AsRawFd;
                // SAFETY: `ptr` is aligned and inside the window (checked above); a fault here
                // ends this child only. `value` outlives the write, which reads 4 bytes of it.
                unsafe {
                    let value = ptr.read_volatile();
                    libc::write(writer.as_raw_fd(), (&raw const value).cast(), 4);
                    libc::_exit(0)
                }
            }
            child => {
                drop(writer);
                let pid = rustix::process::Pid::from_raw(child).ok_or(Errno::SRCH)?;
                let mut bytes = [0u8; 4];
                let got = rustix::io::read(&reader, &mut bytes).unwrap_or(0);
                let (_, status) =
                    rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())?.ok_or(Errno::CHILD)?;
                Ok(match status.terminating_signal() {
                    Some(signal) => Probe::Signal(signal),
                    None if got == 4 => Probe::Value(u32::from_ne_bytes(bytes)),
                    // The child ended without a signal and without the value: nothing to say.
                    None => return Err(Errno::IO),
                })
            }
        }
    }

    /// A volatile write of a `u32` at byte offset `at`.
    ///
    /// # Errors
    /// `EINVAL` if `at` is out of bounds or misaligned.
    pub fn write_u32(&self, at: usize, value: u32) -> Result<()> {
        self.store(at, value)
    }

    /// A volatile read of a `u64` at byte offset `at`, as one 8-byte access.
    ///
    /// # Errors
    /// `EINVAL` if `at` is out of bounds or misaligned.
    pub fn read_u64(&self, at: usize) -> Result<u64> {
        self.load(at)
    }

    /// A volatile write of a `u64` at byte offset `at`, as one 8-byte access.
    ///
    /// # Errors
    /// `EINVAL` if `at` is out of bounds or misaligned.
    pub fn write_u64(&self, at: usize, value: u64) -> Result<()> {
        self.store(at, value)
    }

    /// Fills `[at, at + len)` with `byte`, with volatile stores (a device may be reading it).
    ///
    /// # Errors
    /// `EINVAL` if the range is outside the window.
    pub fn fill(&self, at: usize, len: usize, byte: u8) -> Result<()> {
        let range = self.range(at, len).ok_or(Errno::INVAL)?;
        let base = range.addr() as *mut u8;
        for i in 0..len {
            // SAFETY: `base + i` is inside the checked range of our own mapping.
            unsafe { base.add(i).write_volatile(byte) };
        }
        Ok(())
    }

    /// Copies `[at, at + len)` out with volatile loads.
    ///
    /// # Errors
    /// `EINVAL` if the range is outside the window.
    pub fn read_bytes(&self, at: usize, len: usize) -> Result<Vec<u8>> {
        let range = self.range(at, len).ok_or(Errno::INVAL)?;
        let base = range.addr() as *const u8;
        // SAFETY: each `base + i` is inside the checked range of our own mapping.
        Ok((0..len).map(|i| unsafe { base.add(i).read_volatile() }).collect())
    }
}

impl Drop for MmapWindow {
    fn drop(&mut self) {
        // SAFETY: the window is ours and no reference into it outlives `self`. An error here
        // can't be handled and leaks only address space, so it is ignored.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr(), self.len) };
    }
}

/// A bounds-checked part of an [`MmapWindow`] that may be handed to an IOMMU.
#[derive(Debug, Clone, Copy)]
pub struct DmaRange<'a> {
    window: &'a MmapWindow,
    at: usize,
    len: usize,
}

impl DmaRange<'_> {
    /// The first virtual address.
    pub fn addr(&self) -> usize {
        self.window.addr() + self.at
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never: ranges are made non-empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_reads_in_a_child_and_survives_its_fault() {
        let page = page_size();
        let memory = MmapWindow::anonymous(page).unwrap();
        memory.write_u32(8, 0xfeed_f00d).unwrap();
        assert_eq!(memory.probe_u32(8).unwrap(), Probe::Value(0xfeed_f00d));
        // A reservation is PROT_NONE: the child's read faults, and this process goes on.
        let hole = MmapWindow::reserve(page, page, 0).unwrap();
        assert_eq!(hole.probe_u32(0).unwrap(), Probe::Signal(libc::SIGSEGV));
        assert_eq!(memory.probe_u32(page).unwrap_err(), Errno::INVAL, "out of the window");
    }
}
