//! An IOMMU context in one of the five modes, and DMA mappings in it.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use vfio_sys::ioctl as sys;
use vfio_sys::mm::{DmaRange, Prot};
use vfio_sys::uapi::{VFIO_API_VERSION, VFIO_DMA_UNMAP_FLAG_ALL};

use crate::dmabuf::DmaBuf;
use crate::error::Context;
use crate::feature::Feature;
use crate::iova::{self, IovaRange};
use crate::node;
use crate::{Backend, Error, IommuMode, Result};

/// An IOMMU context: a VFIO container (legacy or iommufd-backed) or an iommufd IOAS.
///
/// Devices attach to it as they open. Share it with `Arc`: devices and DMA mappings keep it
/// alive, so it is torn down last.
#[derive(Debug)]
pub struct Iommu {
    mode: IommuMode,
    fd: OwnedFd,
    /// What devices attach to through `fd`, with what only a container keeps.
    kind: Kind,
    /// What this context has mapped.
    mapped: Mutex<Mappings>,
}

/// A context's own side: a container's attach state, or an IOAS.
#[derive(Debug)]
enum Kind {
    Container {
        /// `VFIO_SET_IOMMU`'s type.
        iommu_type: u32,
        /// Whether `VFIO_SET_IOMMU` has succeeded here; it needs a group attached first.
        type_set: Mutex<bool>,
        /// Whether attaches from several threads are serialized (the default; see
        /// [`Iommu::open_racing`]).
        serialized: bool,
    },
    Ioas(u32),
}

/// `VFIO_CHECK_EXTENSION` said no to `kind`: a SKIP only if the type1 backend is provably
/// absent from the kernel. iommufd's container emulation has both types whenever it exists, and
/// a loaded type1 module that says no is broken.
fn no_iommu_type(mode: IommuMode, path: &str, kind: u32) -> Error {
    let refused = format!("VFIO_CHECK_EXTENSION({path}, {kind}) says {mode} is not supported");
    match () {
        _ if mode.is_iommufd() => Error::Invalid(format!("{refused}, though iommufd emulates both type1 versions")),
        _ if std::path::Path::new("/sys/module/vfio_iommu_type1").exists() => {
            Error::Invalid(format!("{refused}, though vfio_iommu_type1 is in the kernel"))
        }
        _ if crate::feature::module_built_not_loaded("vfio_iommu_type1") => {
            Error::Invalid(format!("{refused}: vfio_iommu_type1 is built but not loaded (modprobe vfio_iommu_type1)"))
        }
        _ => Error::unsupported(Feature::Container, format!("{refused}: the kernel lacks CONFIG_VFIO_IOMMU_TYPE1")),
    }
}

/// What devices attach to: a container of some IOMMU type, or an IOAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A VFIO container (legacy or iommufd's emulation) with this `VFIO_SET_IOMMU` type.
    Container { iommu_type: u32 },
    /// An IOAS of a native iommufd.
    Ioas(u32),
}

impl Iommu {
    /// Opens a context in `mode`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if the kernel lacks the mode (no `/dev/iommu`, no type1 driver);
    /// else the failing syscall.
    pub fn open(mode: IommuMode) -> Result<Arc<Self>> {
        Self::open_with(mode, true)
    }

    /// [`Iommu::open`], but devices attaching from several threads reach the kernel at the
    /// same time, as upstream's selftests let them: for tests of the kernel's own locking.
    /// [`Iommu::open`] serializes them, because iommufd's container emulation has a race there
    /// (see `attach_group`).
    ///
    /// # Errors
    /// As [`Iommu::open`].
    pub fn open_racing(mode: IommuMode) -> Result<Arc<Self>> {
        Self::open_with(mode, false)
    }

    fn open_with(mode: IommuMode, serialized: bool) -> Result<Arc<Self>> {
        let (fd, kind) = match mode.backend() {
            Backend::Container { path, iommu_type: kind } => {
                let fd = match mode.is_iommufd() {
                    true => node::open_iommufd()?,
                    false => node::open_vfio_container()?,
                };
                let version = sys::get_api_version(&fd).op(|| format!("VFIO_GET_API_VERSION({path})"))?;
                if version != VFIO_API_VERSION {
                    return Err(Error::Invalid(format!("{path} speaks VFIO API {version}, not {VFIO_API_VERSION}")));
                }
                let supported =
                    sys::check_extension(&fd, kind).op(|| format!("VFIO_CHECK_EXTENSION({path}, {kind})"))?;
                if supported <= 0 {
                    return Err(no_iommu_type(mode, path, kind));
                }
                (fd, Kind::Container { iommu_type: kind, type_set: Mutex::new(false), serialized })
            }
            Backend::Iommufd => {
                let fd = node::open_iommufd()?;
                let ioas = sys::ioas_alloc(&fd).op(|| "IOMMU_IOAS_ALLOC".into())?;
                (fd, Kind::Ioas(ioas))
            }
        };
        Ok(Arc::new(Self { mode, fd, kind, mapped: Mutex::new(Mappings::default()) }))
    }

    /// The mode this context was opened in.
    pub fn mode(&self) -> IommuMode {
        self.mode
    }

    /// The container fd or iommufd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// What devices attach to.
    pub(crate) fn target(&self) -> Target {
        match self.kind {
            Kind::Container { iommu_type, .. } => Target::Container { iommu_type },
            Kind::Ioas(ioas) => Target::Ioas(ioas),
        }
    }

    /// Attaches a VFIO group to this container and, the first time, sets the IOMMU type.
    pub(crate) fn attach_group(&self, group: BorrowedFd<'_>, group_no: u32) -> Result<()> {
        let Kind::Container { iommu_type: kind, type_set, serialized } = &self.kind else {
            return Err(Error::Invalid(format!("{} has no container", self.mode)));
        };
        let (kind, serialized) = (*kind, *serialized);
        // Several devices (threads) may attach at once; only the first sets the type. The lock
        // also covers SET_CONTAINER: on an iommufd, the first one creates the compat IOAS and
        // publishes it before it is finalized, so another group racing through
        // GET_DEVICE_FD can find it and fail with ENOENT (seen on 7.3 under parallel init).
        let lock = || type_set.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let serial = serialized.then(lock);
        sys::group_set_container(group, &self.fd).op(|| format!("VFIO_GROUP_SET_CONTAINER(group {group_no})"))?;
        let set = sys::set_iommu(&self.fd, kind);
        let mut type_set = serial.unwrap_or_else(lock);
        match set {
            Ok(()) => *type_set = true,
            // The type stays set while any group is in the container; once the last one leaves,
            // the kernel unsets it and the next group must set it again. Racing, another
            // thread may have set it a moment ago, as upstream's selftests allow.
            Err(vfio_sys::Errno::INVAL) if *type_set || !serialized => {}
            Err(e) => {
                let op = format!("VFIO_SET_IOMMU({}, type {kind})", self.mode);
                return Err(Error::attach(op, e, self.mode.isolation_module()));
            }
        }
        Ok(())
    }

    /// Closes the context now, reporting a failed `close` (dropping the last `Arc` ignores one).
    /// Closing an iommufd frees its IOAS with it.
    ///
    /// # Errors
    /// [`Error::Invalid`] if devices or mappings still hold the context (they must be closed
    /// first; it is not closed then), else `close`'s errno.
    pub fn close(self: Arc<Self>) -> Result<()> {
        let this = Arc::try_unwrap(self).map_err(|shared| {
            Error::Invalid(format!(
                "the {} context is still held by {} devices or mappings",
                shared.mode,
                Arc::strong_count(&shared) - 1
            ))
        })?;
        let mode = this.mode;
        sys::close(this.fd).op(|| format!("close({mode} context)"))
    }

    /// The IOVA ranges devices in this context can use, sorted and checked.
    ///
    /// # Errors
    /// The failing ioctl, or [`Error::Malformed`] for a bad answer.
    pub fn iova_ranges(&self) -> Result<Vec<IovaRange>> {
        match self.target() {
            Target::Ioas(ioas) => {
                let (ranges, _alignment) =
                    sys::ioas_iova_ranges(&self.fd, ioas).op(|| format!("IOMMU_IOAS_IOVA_RANGES(ioas {ioas})"))?;
                let ranges = ranges.into_iter().map(|r| IovaRange { start: r.start, last: r.last }).collect();
                iova::normalize(ranges, "IOMMU_IOAS_IOVA_RANGES")
            }
            Target::Container { .. } => {
                iova::parse_type1_iova_ranges(&sys::iommu_get_info(&self.fd).op(|| "VFIO_IOMMU_GET_INFO".into())?)
            }
        }
    }

    /// Maps `range` at `iova`, readable and writable by devices. The mapping is undone when the
    /// returned [`DmaMapping`] drops, or explicitly with [`DmaMapping::unmap`].
    ///
    /// # Errors
    /// The kernel's refusal, as `VFIO_IOMMU_MAP_DMA` or `IOMMU_IOAS_MAP` with its arguments.
    pub fn map(self: &Arc<Self>, range: DmaRange<'_>, iova: u64) -> Result<DmaMapping> {
        self.map_with(range, iova, Prot::READ_WRITE)
    }

    /// [`Iommu::map`] with the device's access spelled out: `VFIO_DMA_MAP_FLAG_READ`/`_WRITE`,
    /// `IOMMU_IOAS_MAP_READABLE`/`_WRITEABLE`.
    ///
    /// # Errors
    /// As [`Iommu::map`]; the kernel refuses write access to memory the process can't write.
    pub fn map_with(self: &Arc<Self>, range: DmaRange<'_>, iova: u64, access: Prot) -> Result<DmaMapping> {
        let (vaddr, len) = (range.addr(), range.len() as u64);
        let rw = access_name(access);
        match self.target() {
            Target::Ioas(ioas) => sys::ioas_map(&self.fd, ioas, range, iova, access).map_err(|e| {
                Error::pin(format!("IOMMU_IOAS_MAP(vaddr={vaddr:#x}, iova={iova:#x}, length={len:#x}, {rw})"), e)
            })?,
            Target::Container { .. } => sys::iommu_map_dma(&self.fd, range, iova, access).map_err(|e| {
                Error::pin(format!("VFIO_IOMMU_MAP_DMA(vaddr={vaddr:#x}, iova={iova:#x}, size={len:#x}, {rw})"), e)
            })?,
        }
        self.registry().insert(vaddr, len, iova);
        Ok(DmaMapping { iommu: Arc::clone(self), iova, len, mapped: true })
    }

    /// Maps `[start, start + len)` of a BAR's dma-buf at `iova`: `IOMMU_IOAS_MAP_FILE`, the way
    /// iommufd maps MMIO (it refuses a BAR's mmap by address). Works in the iommufd modes; in
    /// iommufd's container emulation it maps into the container's IOAS, which exists once a
    /// device has joined.
    ///
    /// # Errors
    /// [`Error::Unsupported`] in a legacy VFIO container, which maps MMIO by its mmap
    /// ([`Iommu::map`]); else the kernel's refusal with the arguments.
    #[doc(alias = "IOMMU_IOAS_MAP_FILE")]
    pub fn map_dma_buf(
        self: &Arc<Self>,
        buf: &DmaBuf,
        start: u64,
        len: u64,
        iova: u64,
        access: Prot,
    ) -> Result<DmaMapping> {
        let ioas = match self.target() {
            Target::Ioas(ioas) => ioas,
            Target::Container { .. } if self.mode.is_iommufd() => {
                sys::vfio_ioas_get(&self.fd).op(|| format!("IOMMU_VFIO_IOAS(GET) of the {} container", self.mode))?
            }
            Target::Container { .. } => {
                return Err(Error::Invalid(format!(
                    "{} maps MMIO by its mmap; dma-bufs map only through an iommufd",
                    self.mode
                )));
            }
        };
        sys::ioas_map_file(&self.fd, ioas, buf.fd(), start, len, iova, access).op(|| {
            format!(
                "IOMMU_IOAS_MAP_FILE({}, start={start:#x}, length={len:#x}, iova={iova:#x}, {})",
                buf.describe(),
                access_name(access)
            )
        })?;
        Ok(DmaMapping { iommu: Arc::clone(self), iova, len, mapped: true })
    }

    /// The IOVA at which `vaddr` is mapped here, if a live mapping made by [`Iommu::map`] holds
    /// it: upstream's `to_iova()`. The answer comes from this context's own record of its
    /// mappings, not from the kernel.
    pub fn to_iova(&self, vaddr: usize) -> Option<u64> {
        self.registry().to_iova(vaddr)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Mappings> {
        self.mapped.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Unmaps `[iova, iova + len)`; returns the number of bytes the kernel unmapped.
    ///
    /// # Errors
    /// The failing ioctl with its arguments.
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        let unmapped = match self.target() {
            Target::Ioas(ioas) => sys::ioas_unmap(&self.fd, ioas, iova, len)
                .op(|| format!("IOMMU_IOAS_UNMAP(iova={iova:#x}, length={len:#x})")),
            Target::Container { .. } => sys::iommu_unmap_dma(&self.fd, iova, len, 0)
                .op(|| format!("VFIO_IOMMU_UNMAP_DMA(iova={iova:#x}, size={len:#x})")),
        }?;
        self.registry().forget(iova, len);
        Ok(unmapped)
    }

    /// Unmaps everything; returns the number of bytes unmapped.
    ///
    /// # Errors
    /// The failing ioctl.
    pub fn unmap_all(&self) -> Result<u64> {
        let unmapped = match self.target() {
            Target::Ioas(ioas) => sys::ioas_unmap(&self.fd, ioas, 0, u64::MAX).op(|| "IOMMU_IOAS_UNMAP(all)".into()),
            Target::Container { .. } => sys::iommu_unmap_dma(&self.fd, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL)
                .op(|| "VFIO_IOMMU_UNMAP_DMA(VFIO_DMA_UNMAP_FLAG_ALL)".into()),
        }?;
        self.registry().clear();
        Ok(unmapped)
    }
}

/// How a map call names the device's access: `rw`, `r`, `w` or `none`.
fn access_name(access: Prot) -> &'static str {
    match (access.read, access.write) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "none",
    }
}

/// A live DMA mapping: `[iova, iova + len)` in an IOMMU context. Unmapped on drop.
#[derive(Debug)]
#[must_use = "dropping a DmaMapping unmaps it at once"]
pub struct DmaMapping {
    iommu: Arc<Iommu>,
    iova: u64,
    len: u64,
    mapped: bool,
}

impl DmaMapping {
    /// The first IOVA.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the mapping is empty (never: the kernel refuses empty maps).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the mapping without unmapping it, because the caller already removed it another
    /// way (an unmap-all, or an unmap of a covering range).
    pub fn already_unmapped(mut self) {
        self.mapped = false;
    }

    /// Unmaps now and reports the result; returns the number of bytes the kernel unmapped.
    ///
    /// # Errors
    /// The failing ioctl. The mapping counts as gone either way.
    pub fn unmap(mut self) -> Result<u64> {
        self.mapped = false;
        self.iommu.unmap(self.iova, self.len)
    }
}

impl Drop for DmaMapping {
    fn drop(&mut self) {
        if self.mapped {
            // Nothing useful can be done with an error here; tests that care call `unmap`.
            let _ = self.iommu.unmap(self.iova, self.len);
        }
    }
}

/// A context's record of its own mappings: first vaddr → (length, IOVA).
#[derive(Debug, Default)]
struct Mappings(BTreeMap<usize, (u64, u64)>);

impl Mappings {
    fn insert(&mut self, vaddr: usize, len: u64, iova: u64) {
        self.0.insert(vaddr, (len, iova));
    }

    fn to_iova(&self, vaddr: usize) -> Option<u64> {
        let (&start, &(len, iova)) = self.0.range(..=vaddr).next_back()?;
        let offset = (vaddr - start) as u64;
        (offset < len).then_some(iova + offset)
    }

    /// Forgets the mappings wholly inside `[iova, iova + len)`, which the kernel just unmapped.
    fn forget(&mut self, iova: u64, len: u64) {
        let end = iova.saturating_add(len);
        self.0.retain(|_, &mut (l, i)| !(i >= iova && i.saturating_add(l) <= end));
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vaddrs_translate_inside_live_mappings_only() {
        let mut m = Mappings::default();
        m.insert(0x7000_0000, 0x2000, 0x10_0000);
        m.insert(0x7100_0000, 0x1000, 0x20_0000);
        assert_eq!(m.to_iova(0x7000_0000), Some(0x10_0000));
        assert_eq!(m.to_iova(0x7000_1fff), Some(0x10_1fff));
        assert_eq!(m.to_iova(0x7000_2000), None, "one past the end");
        assert_eq!(m.to_iova(0x6fff_ffff), None, "before the first");
        m.forget(0x10_0000, 0x1000);
        assert_eq!(m.to_iova(0x7000_0000), Some(0x10_0000), "a partial unmap leaves the record");
        m.forget(0x0, 0x10_2000);
        assert_eq!(m.to_iova(0x7000_0000), None);
        assert_eq!(m.to_iova(0x7100_0000), Some(0x20_0000));
        m.clear();
        assert_eq!(m.to_iova(0x7100_0000), None);
    }
}
