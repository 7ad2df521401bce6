//! VFIO and iommufd for userspace.
//!
//! Open an [`Iommu`] in any of the five [`IommuMode`]s, open a [`Device`] into it, read its
//! regions and capabilities, mmap BARs aligned for huge pages ([`BarMapping`]), allocate IOVAs
//! from the kernel's ranges ([`IovaAllocator`]) and DMA-map memory ([`DmaMapping`]). Every
//! object undoes itself on drop; every error says what failed, on what, and the errno.
//!
//! This crate has no `unsafe`: the syscalls live in `vfio-sys`.

#![deny(unsafe_code, missing_docs)]

mod bar;
mod bdf;
mod buffer;
pub mod caps;
pub mod cdev;
mod device;
mod dmabuf;
pub mod driver;
mod error;
pub mod feature;
mod iommu;
pub mod iova;
mod irq;
mod mmap;
mod mode;
mod node;
pub mod pci;
pub mod pgtable;
mod region;
pub mod sysfs;

pub use bar::{BarMapping, Placement};
pub use bdf::Bdf;
pub use buffer::DmaBuffer;
pub use device::{Device, DeviceInfo};
pub use dmabuf::{BarSlice, DmaBuf};
pub use error::{Errnum, Error, Result};
pub use feature::Feature;
pub use iommu::{DmaMapping, Iommu};
pub use iova::{IovaAllocator, IovaRange};
pub use irq::{IrqEventfds, IrqInfo};
pub use mmap::Mmap;
pub use mode::{Backend, IommuMode};
pub use region::{MmapArea, RegionCap, RegionInfo};
pub use uuid::Uuid;
pub use vfio_sys::mm::{Backing, DmaRange, Probe, Prot, page_size};
pub use vfio_sys::{Errno, align};
