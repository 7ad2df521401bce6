//! `swapon(2)` and `swapoff(2)`, which rustix lacks: the guest's proof that `vfiotest setup`
//! refuses a disk in use as swap puts swap on one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Errno;

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)
}

/// `swapon(path, 0)`: starts swapping to the block device or file at `path`.
///
/// # Errors
/// The errno, e.g. EINVAL for a device without a swap signature, EBUSY if it is in use.
///
/// # References
/// `swapon(2)`.
pub fn swapon(path: &Path) -> Result<(), Errno> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only reads it.
    match unsafe { libc::swapon(path.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// `swapoff(path)`: stops swapping to `path`.
///
/// # Errors
/// The errno, e.g. EINVAL if `path` is not active swap.
///
/// # References
/// `swapoff(2)`.
pub fn swapoff(path: &Path) -> Result<(), Errno> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only reads it.
    match unsafe { libc::swapoff(path.as_ptr()) } {
        0 => Ok(()),
        _ => Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))),
    }
}
