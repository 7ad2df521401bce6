//! BAR ranges exported as dma-bufs: how iommufd maps MMIO.
//!
//! iommufd refuses to pin a BAR's mmap by virtual address (it is a pfnmap, with no pages to
//! pin). Instead the device exports the BAR's physical ranges as a dma-buf
//! (`VFIO_DEVICE_FEATURE_DMA_BUF`) and the IOAS imports that with `IOMMU_IOAS_MAP_FILE`
//! ([`Iommu::map_dma_buf`](crate::Iommu::map_dma_buf)). When the device stops decoding memory
//! or resets, vfio-pci revokes its dma-bufs and iommufd unmaps what it mapped from them.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use vfio_sys::Errno;
use vfio_sys::ioctl as sys;
use vfio_sys::uapi::vfio_region_dma_range;

use crate::error::Context;
use crate::{Bdf, Device, Error, Result};

/// One range of a BAR: `length` bytes from `offset` into it. Both must be page-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSlice {
    /// Bytes from the start of the BAR.
    pub offset: u64,
    /// Bytes in the range.
    pub length: u64,
}

impl BarSlice {
    /// `length` bytes from `offset`.
    pub const fn new(offset: u64, length: u64) -> Self {
        Self { offset, length }
    }
}

impl fmt::Display for BarSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x}", self.offset, self.length)
    }
}

/// A dma-buf exported from a device's BAR. Closing its fd (on drop, or [`DmaBuf::close`])
/// releases it once nothing imported it any more.
#[derive(Debug)]
pub struct DmaBuf {
    fd: OwnedFd,
    bdf: Bdf,
    bar: u32,
    len: u64,
}

impl DmaBuf {
    /// The dma-buf fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Its size: the sum of the exported ranges.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never: the kernel refuses empty ranges).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where it comes from, e.g. `dma-buf of 0000:00:03.0 BAR2`.
    pub fn describe(&self) -> String {
        format!("dma-buf of {} BAR{}", self.bdf, self.bar)
    }

    /// Closes the fd now, reporting a failed `close`.
    ///
    /// # Errors
    /// `close`'s errno.
    pub fn close(self) -> Result<()> {
        let what = self.describe();
        sys::close(self.fd).op(|| format!("close({what})"))
    }
}

impl Device {
    /// Exports `ranges` of BAR `bar` as one dma-buf, close-on-exec and read-write:
    /// `VFIO_DEVICE_FEATURE_DMA_BUF` (Linux 6.19).
    ///
    /// # Errors
    /// [`Error::Unsupported`] (ENOTTY) when the kernel or the device's driver lacks the
    /// feature; else the kernel's refusal: EINVAL for an empty, unaligned or out-of-BAR range,
    /// ENODEV for a BAR the device doesn't have.
    #[doc(alias = "VFIO_DEVICE_FEATURE_DMA_BUF")]
    pub fn export_dma_buf(&self, bar: u32, ranges: &[BarSlice]) -> Result<DmaBuf> {
        let raw: Vec<_> = ranges.iter().map(|r| vfio_region_dma_range { offset: r.offset, length: r.length }).collect();
        let open_flags = (rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC).bits();
        let bdf = self.bdf();
        let op = || {
            let list: Vec<String> = ranges.iter().map(ToString::to_string).collect();
            format!("VFIO_DEVICE_FEATURE_DMA_BUF({bdf}, BAR{bar}, [{}])", list.join(", "))
        };
        let fd = sys::device_feature_dma_buf(self.fd(), bar, &raw, open_flags).map_err(|e| match e {
            Errno::NOTTY => Error::unsupported(
                crate::Feature::DmaBuf,
                format!(
                    "{}: ENOTTY: the kernel lacks VFIO_DEVICE_FEATURE_DMA_BUF (Linux 6.19+, CONFIG_VFIO_PCI_DMABUF)",
                    op()
                ),
            ),
            e => Error::sys(op(), e),
        })?;
        let len = ranges.iter().map(|r| r.length).sum();
        Ok(DmaBuf { fd, bdf, bar, len })
    }
}
