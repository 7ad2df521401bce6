//! A VFIO PCI device, opened through its group or its cdev depending on the IOMMU mode.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use uuid::Uuid;
use vfio_sys::Errno;
use vfio_sys::ioctl as sys;
use vfio_sys::uapi::{
    VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_BARS, VFIO_PCI_VGA_REGION_INDEX,
};

use crate::cdev::DeviceCdev;
use crate::error::Context;
use crate::feature::{Feature, KernelHas};
use crate::iommu::Target;
use crate::node;
use crate::sysfs::Sysfs;
use crate::{Bdf, Error, Iommu, RegionInfo, Result};

/// The fixed part of `VFIO_DEVICE_GET_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions (max index + 1).
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// The device is a vfio-pci device.
    pub fn is_pci(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_PCI != 0
    }

    /// The device supports `VFIO_DEVICE_RESET`.
    pub fn can_reset(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_RESET != 0
    }
}

/// An open VFIO device attached to an [`Iommu`]. Closing it detaches it.
#[derive(Debug)]
pub struct Device {
    bdf: Bdf,
    // Field order is drop order: the device fd closes before its group.
    fd: OwnedFd,
    group: Option<OwnedFd>,
    iommu: Arc<Iommu>,
    info: DeviceInfo,
    regions: Vec<RegionInfo>,
}

impl Device {
    /// Opens `bdf` and attaches it to `iommu`: through `/dev/vfio/<group>` for container modes,
    /// through `/dev/vfio/devices/vfioN` + bind + attach for native iommufd.
    ///
    /// # Errors
    /// One line naming the cause: no such device, not on vfio-pci, group not viable, a mode the
    /// kernel lacks ([`Error::Unsupported`]), or the failing ioctl.
    pub fn open(bdf: Bdf, iommu: &Arc<Iommu>) -> Result<Self> {
        Self::open_in(&Sysfs::system(), bdf, iommu, None)
    }

    /// [`Device::open`] presenting a VF token: `"BDF vf_token=UUID"` to
    /// `VFIO_GROUP_GET_DEVICE_FD`, or `VFIO_DEVICE_BIND_FLAG_TOKEN` to
    /// `VFIO_DEVICE_BIND_IOMMUFD`. A VF whose PF is on vfio-pci opens only with the PF's
    /// token; a PF without VFs in use takes the token as its new one.
    ///
    /// # Errors
    /// As [`Device::open`]; a token that doesn't match is `EACCES` from the kernel.
    #[doc(alias = "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    pub fn open_with_token(bdf: Bdf, iommu: &Arc<Iommu>, token: Option<Uuid>) -> Result<Self> {
        Self::open_in(&Sysfs::system(), bdf, iommu, token)
    }

    /// [`Device::open_with_token`] with sysfs at another root.
    ///
    /// # Errors
    /// As [`Device::open`].
    pub fn open_in(sysfs: &Sysfs, bdf: Bdf, iommu: &Arc<Iommu>, token: Option<Uuid>) -> Result<Self> {
        sysfs.ensure_vfio_bound(bdf)?;
        let (fd, group) = match iommu.target() {
            Target::Container { .. } => {
                let group_no = sysfs.iommu_group(bdf)?;
                let path = format!("/dev/vfio/{group_no}");
                // The group's node exists wherever the kernel has VFIO groups (its class device).
                let class = format!("/sys/class/vfio/{group_no}");
                let group = node::open(&path, Feature::Container, || match std::path::Path::new(&class).exists() {
                    true => KernelHas::Yes { evidence: class.clone() },
                    false => KernelHas::No { why: format!("the kernel lacks CONFIG_VFIO_GROUP (no {class})") },
                })?;
                let status = sys::group_get_status(&group).op(|| format!("VFIO_GROUP_GET_STATUS({path})"))?;
                if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
                    return Err(Error::GroupNotViable { bdf, group: group_no });
                }
                iommu.attach_group(group.as_fd(), group_no)?;
                let name = match token {
                    Some(uuid) => format!("{bdf} vf_token={}", uuid.hyphenated()),
                    None => bdf.to_string(),
                };
                // Under iommufd's container emulation, this is where the device gets bound.
                let fd = sys::group_get_device_fd(&group, &CString::new(name.as_str()).expect("no NUL in a BDF"))
                    .map_err(|e| {
                        let op = format!("VFIO_GROUP_GET_DEVICE_FD({path}, \"{name}\")");
                        match iommu.mode().is_iommufd() {
                            true => Error::attach(op, e, "iommufd"),
                            false => Error::sys(op, e),
                        }
                    })?;
                (fd, Some(group))
            }
            Target::Ioas(ioas) => {
                let cdev = DeviceCdev::open_in(sysfs, bdf)?;
                cdev.bind_with_token(iommu.fd(), token)?;
                cdev.attach(ioas)?;
                (cdev.into_fd(), None)
            }
        };
        let raw = sys::device_get_info(&fd).op(|| format!("VFIO_DEVICE_GET_INFO({bdf})"))?;
        let info = DeviceInfo { flags: raw.flags, num_regions: raw.num_regions, num_irqs: raw.num_irqs };
        // Every region, keyed by its index: one that can't be read fails the open.
        let regions = (0..info.num_regions)
            .map(|index| match sys::device_get_region_info(&fd, index) {
                Ok(buf) => RegionInfo::parse(index, &buf),
                // vfio-pci counts the VGA region on every device but answers EINVAL for it on
                // devices that aren't VGA: the region is absent, not broken.
                Err(Errno::INVAL) if info.is_pci() && index == VFIO_PCI_VGA_REGION_INDEX => {
                    Ok(RegionInfo::absent(index))
                }
                Err(e) => Err(Error::sys(format!("VFIO_DEVICE_GET_REGION_INFO({bdf}, region {index})"), e)),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { bdf, fd, group, iommu: Arc::clone(iommu), info, regions })
    }

    /// Closes the device fd and then its group fd, reporting a failed `close` (dropping the
    /// device ignores one). The device's hold on its IOMMU context goes with it.
    ///
    /// # Errors
    /// `close`'s errno, naming the fd.
    pub fn close(self) -> Result<()> {
        let Self { bdf, fd, group, .. } = self;
        sys::close(fd).op(|| format!("close(device fd of {bdf})"))?;
        match group {
            Some(group) => sys::close(group).op(|| format!("close(group fd of {bdf})")),
            None => Ok(()),
        }
    }

    /// The device's PCI address.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The device fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The IOMMU context the device is attached to.
    pub fn iommu(&self) -> &Arc<Iommu> {
        &self.iommu
    }

    /// `VFIO_DEVICE_GET_INFO`, as read at open.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// Region `index`, if the device has it.
    pub fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize)
    }

    /// The implemented BARs (size > 0), in index order.
    pub fn bars(&self) -> impl Iterator<Item = &RegionInfo> {
        self.regions.iter().take(VFIO_PCI_NUM_BARS as usize).filter(|r| r.size > 0)
    }

    /// Reads `buf.len()` bytes of PCI config space at `offset`.
    ///
    /// # Errors
    /// The `pread` errno, or a short read.
    pub fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let base = self.config_offset()?;
        let n = rustix::io::pread(&self.fd, &mut *buf, base + offset)
            .op(|| format!("pread(config {offset:#x}, {} bytes)", buf.len()))?;
        if n != buf.len() {
            return Err(Error::Invalid(format!("short config read at {offset:#x}: {n} of {} bytes", buf.len())));
        }
        Ok(())
    }

    /// Writes `buf` to PCI config space at `offset`.
    ///
    /// # Errors
    /// The `pwrite` errno, or a short write.
    pub fn config_write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let base = self.config_offset()?;
        let n = rustix::io::pwrite(&self.fd, buf, base + offset)
            .op(|| format!("pwrite(config {offset:#x}, {} bytes)", buf.len()))?;
        if n != buf.len() {
            return Err(Error::Invalid(format!("short config write at {offset:#x}: {n} of {} bytes", buf.len())));
        }
        Ok(())
    }

    /// Reads a little-endian `u16` register of PCI config space.
    ///
    /// # Errors
    /// As [`Device::config_read`].
    pub fn config_read_u16(&self, offset: u64) -> Result<u16> {
        let mut buf = [0u8; 2];
        self.config_read(offset, &mut buf)?;
        Ok(u16::from_le_bytes(buf))
    }

    /// Writes a little-endian `u16` register of PCI config space.
    ///
    /// # Errors
    /// As [`Device::config_write`].
    pub fn config_write_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.config_write(offset, &value.to_le_bytes())
    }

    /// Sets the bits `set` and clears the bits `clear` of the PCI command register (a
    /// read-modify-write of config space), e.g. to turn bus mastering on for a driver.
    ///
    /// # Errors
    /// As [`Device::config_read`] and [`Device::config_write`].
    pub fn update_command(&self, set: u16, clear: u16) -> Result<()> {
        let command = self.config_read_u16(crate::pci::PCI_COMMAND)?;
        self.config_write_u16(crate::pci::PCI_COMMAND, (command & !clear) | set)
    }

    fn config_offset(&self) -> Result<u64> {
        self.region(VFIO_PCI_CONFIG_REGION_INDEX)
            .map(|r| r.offset)
            .ok_or_else(|| Error::Invalid(format!("{} has no config space region", self.bdf)))
    }

    /// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`: sets this PF's VF token, which its VFs must then
    /// present to open.
    ///
    /// # Errors
    /// The ioctl's errno (`ENOTTY` on a device that is not an SR-IOV PF on vfio-pci).
    #[doc(alias = "VFIO_DEVICE_FEATURE_PCI_VF_TOKEN")]
    pub fn set_vf_token(&self, token: Uuid) -> Result<()> {
        sys::device_feature_set(&self.fd, VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, token.as_bytes())
            .op(|| format!("VFIO_DEVICE_FEATURE(SET PCI_VF_TOKEN {token}, {})", self.bdf))
    }

    /// `VFIO_DEVICE_RESET`, tried again for up to 200 ms while the kernel answers `EAGAIN`
    /// (it uses a trylock on the device, which a concurrent config access can hold).
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn reset(&self) -> Result<()> {
        let mut tries = 20;
        loop {
            match sys::device_reset(&self.fd) {
                Err(Errno::AGAIN) if tries > 0 => {
                    tries -= 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result.op(|| format!("VFIO_DEVICE_RESET({})", self.bdf)),
            }
        }
    }
}
