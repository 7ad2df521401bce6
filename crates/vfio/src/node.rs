//! Opening the character devices VFIO and iommufd live behind.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::{Error, Result};

/// Opens a device node read-write. A missing node means the kernel lacks the feature behind it,
/// which `missing` explains: [`Error::Unsupported`], so tests SKIP rather than FAIL.
pub(crate) fn open(path: impl AsRef<Path>, missing: impl FnOnce() -> String) -> Result<OwnedFd> {
    let path = path.as_ref();
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok(f.into()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Unsupported(missing())),
        Err(e) => Err(Error::file(path, e)),
    }
}

/// Opens `/dev/iommu`.
pub(crate) fn open_iommufd() -> Result<OwnedFd> {
    open("/dev/iommu", || "/dev/iommu is missing: the kernel lacks CONFIG_IOMMUFD".into())
}
