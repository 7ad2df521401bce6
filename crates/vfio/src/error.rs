//! The library's error: what failed, on what, and the errno when there is one.

use std::fmt;
use std::path::PathBuf;

use vfio_sys::Errno;

use crate::Bdf;
use crate::feature::{self, Feature};

/// A crate-wide `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An errno with its symbolic name, e.g. `EINVAL (Invalid argument)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errnum(pub Errno);

impl Errnum {
    /// What C's `strerror()` says, e.g. `Cannot allocate memory`.
    pub fn strerror(&self) -> String {
        let text = std::io::Error::from_raw_os_error(self.0.raw_os_error()).to_string();
        text.split(" (os error").next().unwrap_or(&text).to_owned()
    }
}

impl fmt::Display for Errnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", errno_name(self.0), self.strerror())
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
    /// The running kernel or machine provably lacks a feature the request needs: tests SKIP
    /// on this, unless the user required the feature (see [`crate::feature`] for the rule).
    #[error("{reason}")]
    Unsupported {
        /// What is missing.
        feature: Feature,
        /// How the kernel shows it is missing, naming the config option where there is one.
        reason: String,
    },
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
    /// The kernel refused because the IOMMU can't isolate the device's MSIs: the platform has no
    /// interrupt remapping (or it is off) and `module` doesn't allow that.
    #[error(
        "{op}: EPERM: the IOMMU can't isolate this device's MSIs (no interrupt remapping); \
         enable interrupt remapping, or accept the risk with {module}.allow_unsafe_interrupts=1"
    )]
    UnsafeInterrupts {
        /// The refused operation.
        op: String,
        /// The module whose `allow_unsafe_interrupts` parameter would let it through.
        module: &'static str,
    },
    /// Pinning the memory would pass the process's locked-memory limit.
    #[error(
        "{op}: ENOMEM: pinning it would pass RLIMIT_MEMLOCK ({limit} bytes) and the process lacks \
         CAP_IPC_LOCK; raise the limit (ulimit -l, LimitMEMLOCK=) or grant CAP_IPC_LOCK"
    )]
    MemlockLimit {
        /// The refused operation.
        op: String,
        /// The soft limit in bytes.
        limit: u64,
    },
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

    /// The kernel provably lacks `feature`: a SKIP, unless the user required it.
    pub fn unsupported(feature: Feature, reason: impl Into<String>) -> Self {
        Self::Unsupported { feature, reason: reason.into() }
    }

    /// Whether this is a SKIP: the kernel or machine lacks a feature the user did not
    /// require. Everything else is a failure: a required feature that is missing, a host set
    /// up wrongly (which the message names, with the fix), or a kernel that got it wrong.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { feature, .. } if !feature::is_required(*feature))
    }

    /// A failed attach or bind: `EPERM` there means the IOMMU can't isolate MSIs, unless
    /// `module`'s `allow_unsafe_interrupts` is already set (then it is something else, e.g. a
    /// no-IOMMU device without CAP_SYS_RAWIO).
    pub(crate) fn attach(op: String, errno: Errno, module: &'static str) -> Self {
        let param = format!("/sys/module/{module}/parameters/allow_unsafe_interrupts");
        let allowed = std::fs::read_to_string(param).is_ok_and(|v| v.trim() == "Y");
        match errno == Errno::PERM && !allowed {
            true => Self::UnsafeInterrupts { op, module },
            false => Self::sys(op, errno),
        }
    }

    /// A failed map: `ENOMEM` there is the locked-memory limit when the process has one and
    /// can't override it.
    pub(crate) fn pin(op: String, errno: Errno) -> Self {
        match (errno, memlock_limit()) {
            (Errno::NOMEM, Some(limit)) if !has_cap_ipc_lock() => Self::MemlockLimit { op, limit },
            _ => Self::sys(op, errno),
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::File { path: path.into(), source }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Malformed { what: what.into(), detail: detail.into() }
    }
}

/// The soft RLIMIT_MEMLOCK, unless unlimited.
fn memlock_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Memlock).current
}

/// Whether this process may lock memory past its limit.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// A test's verdict from a library error: SKIP when the kernel or machine lacks something,
/// FAIL otherwise, with the error's one-line message either way.
#[cfg(feature = "ksft")]
impl From<Error> for ksft::Verdict {
    fn from(e: Error) -> Self {
        match e {
            _ if e.is_unsupported() => Self::Skip(e.to_string()),
            Error::Unsupported { feature, reason } => {
                Self::Fail(format!("required feature {feature} is missing: {}", reason.trim_end()))
            }
            _ => Self::Fail(e.to_string()),
        }
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

    /// What each kind of error makes of a test: the README's rule for verdicts, as a table.
    #[cfg(feature = "ksft")]
    #[test]
    fn each_error_gives_its_verdict() {
        use ksft::Status::{Fail, Skip};
        let bdf: Bdf = "0000:00:03.0".parse().unwrap();
        let table: Vec<(Error, ksft::Status, &str)> = vec![
            (
                Error::unsupported(Feature::Iommufd, "/dev/iommu is missing: the kernel lacks CONFIG_IOMMUFD"),
                Skip,
                "CONFIG_IOMMUFD",
            ),
            (
                Error::unsupported(
                    Feature::Cdev,
                    format!("{bdf} has no VFIO cdev: the kernel lacks CONFIG_VFIO_DEVICE_CDEV"),
                ),
                Skip,
                "CONFIG_VFIO_DEVICE_CDEV",
            ),
            (
                Error::UnsafeInterrupts {
                    op: "VFIO_SET_IOMMU(vfio_type1v2_iommu, type 3)".into(),
                    module: "vfio_iommu_type1",
                },
                Fail,
                "vfio_iommu_type1.allow_unsafe_interrupts=1",
            ),
            (
                Error::UnsafeInterrupts { op: format!("VFIO_DEVICE_BIND_IOMMUFD({bdf})"), module: "iommufd" },
                Fail,
                "iommufd.allow_unsafe_interrupts=1",
            ),
            (
                Error::MemlockLimit { op: "IOMMU_IOAS_MAP(...)".into(), limit: 8 << 20 },
                Fail,
                "RLIMIT_MEMLOCK (8388608 bytes)",
            ),
            (Error::GroupNotViable { bdf, group: 7 }, Fail, "IOMMU group 7 of 0000:00:03.0 is not viable"),
            (Error::NotBoundToVfio { bdf, driver: Some("nvme".into()) }, Fail, "run `vfiotest setup 0000:00:03.0`"),
            (Error::NoSuchDevice(bdf), Fail, "no PCI device 0000:00:03.0"),
            (Error::sys("VFIO_IOMMU_MAP_DMA(iova=0x0, size=0x1000)", Errno::INVAL), Fail, "EINVAL (Invalid argument)"),
            (Error::malformed("region 2 info", "cap chain loops"), Fail, "malformed region 2 info"),
            (Error::Timeout("igb: copy did not complete".into()), Fail, "did not complete"),
        ];
        for (error, status, says) in table {
            let message = error.to_string();
            let verdict = ksft::Verdict::from(error);
            assert_eq!(verdict.status(), status, "{message}");
            assert!(verdict.reason().contains(says), "{message:?} should say {says:?}");
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
    }

    #[test]
    fn eperm_on_attach_is_diagnosed_unless_allowed() {
        // No such module on any machine: its parameter reads as not set.
        let e = Error::attach("VFIO_SET_IOMMU".into(), Errno::PERM, "no_such_module");
        assert!(matches!(e, Error::UnsafeInterrupts { module: "no_such_module", .. }), "{e}");
        let e = Error::attach("VFIO_SET_IOMMU".into(), Errno::BUSY, "no_such_module");
        assert_eq!(e.errno(), Some(Errno::BUSY), "other errnos stay as the kernel said");
    }

    #[test]
    fn errno_shows_name_and_text() {
        let e = Error::sys("VFIO_IOMMU_MAP_DMA(iova=0x1000, size=0x2000)", Errno::INVAL);
        assert_eq!(e.to_string(), "VFIO_IOMMU_MAP_DMA(iova=0x1000, size=0x2000): EINVAL (Invalid argument)");
        assert_eq!(e.errno(), Some(Errno::INVAL));
    }
}
