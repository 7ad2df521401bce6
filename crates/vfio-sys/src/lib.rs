//! The Linux VFIO and iommufd userspace API, and the syscalls around it.
//!
//! This is vfiotest's only crate with `unsafe` code. It holds the `#[repr(C)]` uAPI structs
//! ([`uapi`]), one typed function per ioctl ([`ioctl`]), and owned memory windows that a device
//! may reach ([`mm`]). Everything returns the raw errno; context is added by the `vfio` crate.
//!
//! # References
//! `include/uapi/linux/vfio.h`, `include/uapi/linux/iommufd.h`,
//! `Documentation/driver-api/vfio.rst`, `Documentation/userspace-api/iommufd.rst`.

#![deny(missing_docs)]

pub mod align;
pub mod ioctl;
pub mod mm;
pub mod swap;
pub mod uapi;

pub use rustix::io::Errno;
