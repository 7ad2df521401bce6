//! The VFIO device cdev and `/dev/iommu` at the level of single ioctls, for tests of the
//! iommufd setup sequence itself. [`crate::Device`] does the whole sequence for normal use.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use uuid::Uuid;
use vfio_sys::ioctl as sys;

use crate::error::Context;
use crate::feature::{Feature, KernelHas};
use crate::node;
use crate::sysfs::Sysfs;
use crate::{Bdf, DeviceInfo, Result};

/// An open `/dev/iommu`.
#[derive(Debug)]
pub struct Iommufd {
    fd: OwnedFd,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) if the kernel lacks iommufd.
    pub fn open() -> Result<Self> {
        Ok(Self { fd: node::open_iommufd()? })
    }

    /// Closes `/dev/iommu` now, reporting a failed `close`.
    ///
    /// # Errors
    /// `close`'s errno.
    pub fn close(self) -> Result<()> {
        sys::close(self.fd).op(|| "close(/dev/iommu)".into())
    }

    /// `IOMMU_IOAS_ALLOC`: a new IOAS id (freed when the iommufd closes).
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn alloc_ioas(&self) -> Result<u32> {
        sys::ioas_alloc(&self.fd).op(|| "IOMMU_IOAS_ALLOC".into())
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An open `/dev/vfio/devices/vfioN`, not yet bound to anything.
#[derive(Debug)]
pub struct DeviceCdev {
    bdf: Bdf,
    fd: OwnedFd,
}

impl DeviceCdev {
    /// Opens the cdev of `bdf`.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) without VFIO cdevs; the device errors of [`Sysfs`].
    pub fn open(bdf: Bdf) -> Result<Self> {
        Self::open_in(&Sysfs::system(), bdf)
    }

    /// [`DeviceCdev::open`] with sysfs at another root.
    ///
    /// # Errors
    /// As [`DeviceCdev::open`].
    pub fn open_in(sysfs: &Sysfs, bdf: Bdf) -> Result<Self> {
        sysfs.ensure_vfio_bound(bdf)?;
        let (path, dev_attr) = sysfs.vfio_cdev(bdf)?;
        let fd = node::open(&path, Feature::Cdev, || KernelHas::Yes { evidence: dev_attr.display().to_string() })?;
        Ok(Self { bdf, fd })
    }

    /// Closes the cdev now, reporting a failed `close`.
    ///
    /// # Errors
    /// `close`'s errno.
    pub fn close(self) -> Result<()> {
        let bdf = self.bdf;
        sys::close(self.fd).op(|| format!("close(VFIO cdev of {bdf})"))
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD`: returns the device id.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn bind(&self, iommufd: &Iommufd) -> Result<u32> {
        self.bind_with_token(iommufd.as_fd(), None)
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD` to any iommufd, presenting a VF token when one is given
    /// (`VFIO_DEVICE_BIND_FLAG_TOKEN`).
    ///
    /// # Errors
    /// The ioctl's errno; EPERM is diagnosed ([`crate::Error::UnsafeInterrupts`]).
    pub(crate) fn bind_with_token(&self, iommufd: BorrowedFd<'_>, token: Option<Uuid>) -> Result<u32> {
        let token_bytes = token.map(|uuid| *uuid.as_bytes());
        sys::device_bind_iommufd_with(&self.fd, iommufd.as_raw_fd(), token_bytes.as_ref()).map_err(|e| {
            let with = token.map(|t| format!(", vf_token {t}")).unwrap_or_default();
            crate::Error::attach(format!("VFIO_DEVICE_BIND_IOMMUFD({}{with})", self.bdf), e, "iommufd")
        })
    }

    /// `VFIO_DEVICE_BIND_IOMMUFD` with any fd number, valid or not.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn bind_fd_number(&self, iommufd: RawFd) -> Result<u32> {
        sys::device_bind_iommufd_number(&self.fd, iommufd)
            .op(|| format!("VFIO_DEVICE_BIND_IOMMUFD({}, fd {iommufd})", self.bdf))
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn attach(&self, pt_id: u32) -> Result<u32> {
        sys::device_attach_iommufd_pt(&self.fd, pt_id)
            .op(|| format!("VFIO_DEVICE_ATTACH_IOMMUFD_PT({}, pt {pt_id:#x})", self.bdf))
    }

    /// The device fd, for the [`crate::Device`] it becomes once bound and attached.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn detach(&self) -> Result<()> {
        sys::device_detach_iommufd_pt(&self.fd).op(|| format!("VFIO_DEVICE_DETACH_IOMMUFD_PT({})", self.bdf))
    }

    /// `VFIO_DEVICE_GET_INFO`.
    ///
    /// # Errors
    /// The ioctl's errno (an unbound cdev refuses it).
    pub fn info(&self) -> Result<DeviceInfo> {
        let raw = sys::device_get_info(&self.fd).op(|| format!("VFIO_DEVICE_GET_INFO({})", self.bdf))?;
        Ok(DeviceInfo { flags: raw.flags, num_regions: raw.num_regions, num_irqs: raw.num_irqs })
    }
}
