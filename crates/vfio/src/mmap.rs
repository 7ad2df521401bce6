//! Memory mapped into the process (anonymous, hugetlb, a BAR's mmap), whose every operation
//! fails with the library's error: what was done, to which window, where, and the errno.

use std::os::fd::AsFd;

use vfio_sys::mm::{Backing, DmaRange, MmapWindow, Probe, Prot};

use crate::{Error, Result};

/// An owned mapping, unmapped on drop (or checked, with [`Mmap::unmap`]). Memory a device may
/// reach is only ever read and written through it, with volatile accesses at checked offsets.
#[derive(Debug)]
pub struct Mmap {
    window: MmapWindow,
    /// What it is, for messages: `BAR2 of 0000:00:03.0`, `anonymous`, ...
    name: String,
}

impl Mmap {
    /// Wraps a window the library mapped, naming it.
    pub(crate) fn new(window: MmapWindow, name: impl Into<String>) -> Self {
        Self { window, name: name.into() }
    }

    /// `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` of `len` bytes, read-write.
    ///
    /// # Errors
    /// `mmap`'s errno.
    pub fn anonymous(len: usize) -> Result<Self> {
        Self::anonymous_backed(len, Backing::Normal)
    }

    /// Anonymous memory of `len` bytes backed by `backing` (base or hugetlb pages).
    ///
    /// # Errors
    /// `mmap`'s errno: ENOMEM when no hugetlb pages are reserved.
    pub fn anonymous_backed(len: usize, backing: Backing) -> Result<Self> {
        let window = MmapWindow::anonymous_backed(len, backing)
            .map_err(|e| Error::sys(format!("mmap(anonymous, {len:#x} bytes, {backing:?})"), e))?;
        Ok(Self::new(window, format!("anonymous {backing:?} memory")))
    }

    /// `len` bytes of `PROT_NONE` address space whose base is `phase` past a multiple of
    /// `align`, to map into with [`Mmap::map_shared_fixed`].
    ///
    /// # Errors
    /// `mmap`'s errno.
    pub fn reserve(len: usize, align: usize, phase: usize) -> Result<Self> {
        let window = MmapWindow::reserve(len, align, phase)
            .map_err(|e| Error::sys(format!("reserve({len:#x} bytes, align {align:#x} + {phase:#x})"), e))?;
        Ok(Self::new(window, "a reservation"))
    }

    fn fail(&self, op: &str, at: usize, len: usize) -> impl FnOnce(vfio_sys::Errno) -> Error + use<'_> {
        let what = format!("{op}({} at {:#x}, {at:#x}+{len:#x})", self.name, self.window.addr());
        move |e| Error::sys(what, e)
    }

    /// Where it starts.
    pub fn addr(&self) -> usize {
        self.window.addr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// `[at, at + len)` of it, to DMA-map; `None` out of bounds.
    pub fn range(&self, at: usize, len: usize) -> Option<DmaRange<'_>> {
        self.window.range(at, len)
    }

    /// All of it, to DMA-map.
    pub fn whole(&self) -> DmaRange<'_> {
        self.window.whole()
    }

    /// `mprotect` of `[at, at + len)`.
    ///
    /// # Errors
    /// The errno, with what was protected.
    pub fn protect(&self, at: usize, len: usize, prot: Prot) -> Result<()> {
        self.window.protect(at, len, prot).map_err(self.fail("mprotect", at, len))
    }

    /// `mmap(MAP_SHARED | MAP_FIXED)` of `fd` at `offset` over `[at, at + len)`.
    ///
    /// # Errors
    /// The errno, with what was mapped where.
    pub fn map_shared_fixed(&mut self, at: usize, len: usize, prot: Prot, fd: impl AsFd, offset: u64) -> Result<()> {
        let fail =
            format!("mmap(MAP_FIXED, offset {offset:#x}, {} at {:#x}, {at:#x}+{len:#x})", self.name, self.addr());
        self.window.map_shared_fixed(at, len, prot, fd, offset).map_err(|e| Error::sys(fail, e))
    }

    /// A volatile read of a `u32` at `at`.
    ///
    /// # Errors
    /// EINVAL out of bounds or misaligned.
    pub fn read_u32(&self, at: usize) -> Result<u32> {
        self.window.read_u32(at).map_err(self.fail("read_u32", at, 4))
    }

    /// A volatile read of a `u64` at `at`, as one access.
    ///
    /// # Errors
    /// EINVAL out of bounds or misaligned.
    pub fn read_u64(&self, at: usize) -> Result<u64> {
        self.window.read_u64(at).map_err(self.fail("read_u64", at, 8))
    }

    /// A volatile write of a `u32` at `at`.
    ///
    /// # Errors
    /// EINVAL out of bounds or misaligned.
    pub fn write_u32(&self, at: usize, value: u32) -> Result<()> {
        self.window.write_u32(at, value).map_err(self.fail("write_u32", at, 4))
    }

    /// A volatile write of a `u64` at `at`, as one access.
    ///
    /// # Errors
    /// EINVAL out of bounds or misaligned.
    pub fn write_u64(&self, at: usize, value: u64) -> Result<()> {
        self.window.write_u64(at, value).map_err(self.fail("write_u64", at, 8))
    }

    /// [`Mmap::read_u32`] in a forked child, so that a fault (SIGBUS from MMIO whose device
    /// stopped decoding) ends the child, not the caller.
    ///
    /// # Errors
    /// EINVAL out of bounds or misaligned; `pipe`, `fork` or `waitpid` failing.
    pub fn probe_u32(&self, at: usize) -> Result<Probe> {
        self.window.probe_u32(at).map_err(self.fail("probe_u32", at, 4))
    }

    /// Fills `[at, at + len)` with `byte`, with volatile stores.
    ///
    /// # Errors
    /// EINVAL out of bounds.
    pub fn fill(&self, at: usize, len: usize, byte: u8) -> Result<()> {
        self.window.fill(at, len, byte).map_err(self.fail("fill", at, len))
    }

    /// Copies `[at, at + len)` out with volatile loads.
    ///
    /// # Errors
    /// EINVAL out of bounds.
    pub fn read_bytes(&self, at: usize, len: usize) -> Result<Vec<u8>> {
        self.window.read_bytes(at, len).map_err(self.fail("read_bytes", at, len))
    }

    /// Writes `bytes` at `at`, eight at a time with volatile stores (a device may be reading).
    ///
    /// # Errors
    /// EINVAL out of bounds, misaligned, or `bytes` not a multiple of 8 long.
    pub fn write_bytes(&self, at: usize, bytes: &[u8]) -> Result<()> {
        if !bytes.len().is_multiple_of(8) {
            return Err(self.fail("write_bytes", at, bytes.len())(vfio_sys::Errno::INVAL));
        }
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let value = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
            self.write_u64(at + i * 8, value)?;
        }
        Ok(())
    }

    /// `munmap`, checked (dropping it unmaps too, ignoring a failure).
    ///
    /// # Errors
    /// `munmap`'s errno.
    pub fn unmap(self) -> Result<()> {
        let what = format!("munmap({} at {:#x}, {:#x} bytes)", self.name, self.addr(), self.len());
        self.window.unmap().map_err(|e| Error::sys(what, e))
    }

    /// `madvise(MADV_HUGEPAGE)` of `[at, at + len)`: advice, so a refusal changes nothing.
    pub fn advise_hugepage(&self, at: usize, len: usize) {
        let _advice_only = self.window.advise_hugepage(at, len);
    }
}
