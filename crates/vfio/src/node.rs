//! Opening the character devices VFIO and iommufd live behind.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::feature::{self, Feature, KernelHas};
use crate::{Error, Result};

/// Opens a device node read-write. A missing node is judged by [`feature::missing_node`] from
/// what `kernel` says the kernel has: a SKIP only if it lacks `feature`.
pub(crate) fn open(path: impl AsRef<Path>, feature: Feature, kernel: impl FnOnce() -> KernelHas) -> Result<OwnedFd> {
    let path = path.as_ref();
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok(f.into()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(feature::missing_node(feature, path, kernel())),
        Err(e) => Err(Error::file(path, e)),
    }
}

/// Opens `/dev/iommu`, the misc device `iommu` of the `iommufd` module.
pub(crate) fn open_iommufd() -> Result<OwnedFd> {
    open("/dev/iommu", Feature::Iommufd, || feature::misc_device("iommu", "iommufd", "CONFIG_IOMMUFD"))
}

/// Opens `/dev/vfio/vfio`, the misc device `vfio` of the `vfio` module.
pub(crate) fn open_vfio_container() -> Result<OwnedFd> {
    open("/dev/vfio/vfio", Feature::Container, || feature::misc_device("vfio", "vfio", "CONFIG_VFIO_CONTAINER"))
}
