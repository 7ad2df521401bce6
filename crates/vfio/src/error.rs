//! The library's error: what failed, on what, and the errno when there is one.

use std::fmt;
use std::path::PathBuf;

use vfio_sys::Errno;

use crate::Bdf;

/// A crate-wide `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An errno with its symbolic name, e.g. `EINVAL (Invalid argument)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errnum(pub Errno);

impl fmt::Display for Errnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let io = std::io::Error::from_raw_os_error(self.0.raw_os_error());
        let text = io.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text);
        write!(f, "{} ({text})", errno_name(self.0))
    }
}

fn errno_name(e: Errno) -> String {
    let name = match e {
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::IO => "EIO",
        Errno::BADF => "EBADF",
        Errno::AGAIN => "EAGAIN",
        Errno::NOMEM => "ENOMEM",
        Errno::ACCESS => "EACCES",
        Errno::FAULT => "EFAULT",
        Errno::BUSY => "EBUSY",
        Errno::EXIST => "EEXIST",
        Errno::NODEV => "ENODEV",
        Errno::INVAL => "EINVAL",
        Errno::NOSPC => "ENOSPC",
        Errno::NOTTY => "ENOTTY",
        Errno::RANGE => "ERANGE",
        Errno::MSGSIZE => "EMSGSIZE",
        Errno::OVERFLOW => "EOVERFLOW",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::NXIO => "ENXIO",
        _ => return format!("errno {}", e.raw_os_error()),
    };
    name.to_owned()
}

/// Everything that can go wrong, each with enough context to act on in one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A syscall or ioctl failed.
    #[error("{op}: {errno}")]
    Sys {
        /// The operation and its key arguments, e.g. `VFIO_IOMMU_MAP_DMA(iova=0x0, size=0x1000)`.
        op: String,
        /// What the kernel said.
        errno: Errnum,
    },
    /// The running kernel or machine lacks something the request needs; tests SKIP on this.
    #[error("{0}")]
    Unsupported(String),
    /// No PCI device at that address.
    #[error("no PCI device {0} (not in /sys/bus/pci/devices)")]
    NoSuchDevice(Bdf),
    /// The device exists but is not bound to vfio-pci.
    #[error("{bdf} is bound to {}, not vfio-pci (run `vfiotest setup {bdf}`)", driver.as_deref().unwrap_or("no driver"))]
    NotBoundToVfio {
        /// The device.
        bdf: Bdf,
        /// Its current driver, if any.
        driver: Option<String>,
    },
    /// The device's IOMMU group has devices on other drivers, so VFIO won't hand it out.
    #[error("IOMMU group {group} of {bdf} is not viable: every device in it must be bound to vfio-pci or unbound")]
    GroupNotViable {
        /// The device.
        bdf: Bdf,
        /// Its group number.
        group: u32,
    },
    /// The kernel returned a malformed capability chain or info struct.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which structure, e.g. `region 2 info`.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A string is not a PCI address of the form `dddd:bb:dd.f`.
    #[error("invalid BDF {0:?}: expected segment:bus:device.function, e.g. 0000:00:03.0")]
    BadBdf(String),
    /// A string names no IOMMU mode.
    #[error("unknown IOMMU mode {0:?}: expected one of {modes}", modes = crate::IommuMode::names().join(", "))]
    UnknownMode(String),
    /// The IOVA allocator has no room left for the request.
    #[error("no free IOVA range for 0x{size:x} bytes")]
    IovaExhausted {
        /// The requested size.
        size: u64,
    },
    /// A file under /sys or /dev could not be used.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An argument is out of range for the object it applies to.
    #[error("{0}")]
    Invalid(String),
    /// A device did not finish what it was asked to do in time.
    #[error("{0}")]
    Timeout(String),
}

impl Error {
    /// A failed syscall: `op` names it with its arguments.
    pub fn sys(op: impl Into<String>, errno: Errno) -> Self {
        Self::Sys { op: op.into(), errno: Errnum(errno) }
    }

    /// The errno, if this error came from the kernel.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Sys { errno, .. } => Some(errno.0),
            Self::File { source, .. } => source.raw_os_error().map(Errno::from_raw_os_error),
            _ => None,
        }
    }

    /// Whether the kernel or machine lacks a feature (a SKIP, not a failure).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported(_))
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File { path: path.into(), source }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Malformed { what: what.into(), detail: detail.into() }
    }
}

/// Adds the operation's name to a raw errno result.
pub(crate) trait Context<T> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, Errno> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(op(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_shows_name_and_text() {
        let e = Error::sys("VFIO_IOMMU_MAP_DMA(iova=0x1000, size=0x2000)", Errno::INVAL);
        assert_eq!(e.to_string(), "VFIO_IOMMU_MAP_DMA(iova=0x1000, size=0x2000): EINVAL (Invalid argument)");
        assert_eq!(e.errno(), Some(Errno::INVAL));
    }
}
