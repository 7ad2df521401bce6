//! `#[repr(C)]` mirrors of `include/uapi/linux/vfio.h` and `iommufd.h` (Linux 7.3).
//!
//! Only what vfiotest uses is here. Every struct's size and field offsets are asserted at
//! compile time against the C layout; `tests/uapi_conformance.rs` checks them against the
//! kernel headers themselves when a kernel tree is at hand.

#![allow(non_camel_case_types, missing_docs)]

use core::mem::{offset_of, size_of};

pub use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Reads the uAPI struct `T` out of `buf` at byte `at`, if it fits: the kernel's info buffers
/// (a fixed struct, then capabilities at offsets it names) are read by field name, never by
/// hand-computed offset. `T` must be plain old data, which `FromBytes` proves.
pub fn read_at<T: FromBytes>(buf: &[u8], at: usize) -> Option<T> {
    T::read_from_prefix(buf.get(at..)?).ok().map(|(value, _)| value)
}

/// `VFIO_API_VERSION`, returned by `VFIO_GET_API_VERSION`.
pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;

/// `_IO(';', 100 + n)`: the VFIO ioctl numbers.
pub const VFIO_TYPE: u8 = b';';
pub const VFIO_BASE: u8 = 100;

pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;

pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;
pub const VFIO_DEVICE_FLAGS_CAPS: u32 = 1 << 7;

pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;

pub const VFIO_REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;
pub const VFIO_REGION_INFO_CAP_TYPE: u16 = 2;
pub const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: u16 = 3;

pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;

pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;

pub const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const VFIO_PCI_VGA_REGION_INDEX: u32 = 8;
pub const VFIO_PCI_NUM_BARS: u32 = 6;

pub const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;
pub const VFIO_PCI_MSI_IRQ_INDEX: u32 = 1;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;

pub const VFIO_IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

/// `VFIO_DEVICE_BIND_IOMMUFD`: `token_uuid_ptr` points to a VF token.
pub const VFIO_DEVICE_BIND_FLAG_TOKEN: u32 = 1 << 0;

pub const VFIO_DEVICE_FEATURE_MASK: u32 = 0xffff;
pub const VFIO_DEVICE_FEATURE_GET: u32 = 1 << 16;
pub const VFIO_DEVICE_FEATURE_SET: u32 = 1 << 17;
pub const VFIO_DEVICE_FEATURE_PROBE: u32 = 1 << 18;
/// Feature 0: the PF's VF token, a 16-byte UUID (SET only).
pub const VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: u32 = 0;
/// Feature 11 (Linux 6.19): export ranges of a BAR as a dma-buf (GET only; returns its fd).
pub const VFIO_DEVICE_FEATURE_DMA_BUF: u32 = 11;

/// `IOMMU_VFIO_IOAS` op: which IOAS the VFIO container emulation uses.
pub const IOMMU_VFIO_IOAS_GET: u16 = 0;

pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

/// The ioctl number `n` of `_IO(';', n)`, shared by VFIO and iommufd.
pub mod nr {
    pub const VFIO_GET_API_VERSION: u8 = super::VFIO_BASE;
    pub const VFIO_CHECK_EXTENSION: u8 = super::VFIO_BASE + 1;
    pub const VFIO_SET_IOMMU: u8 = super::VFIO_BASE + 2;
    pub const VFIO_GROUP_GET_STATUS: u8 = super::VFIO_BASE + 3;
    pub const VFIO_GROUP_SET_CONTAINER: u8 = super::VFIO_BASE + 4;
    pub const VFIO_GROUP_GET_DEVICE_FD: u8 = super::VFIO_BASE + 6;
    pub const VFIO_DEVICE_GET_INFO: u8 = super::VFIO_BASE + 7;
    pub const VFIO_DEVICE_GET_REGION_INFO: u8 = super::VFIO_BASE + 8;
    pub const VFIO_DEVICE_GET_IRQ_INFO: u8 = super::VFIO_BASE + 9;
    pub const VFIO_DEVICE_SET_IRQS: u8 = super::VFIO_BASE + 10;
    pub const VFIO_DEVICE_RESET: u8 = super::VFIO_BASE + 11;
    pub const VFIO_IOMMU_GET_INFO: u8 = super::VFIO_BASE + 12;
    pub const VFIO_IOMMU_MAP_DMA: u8 = super::VFIO_BASE + 13;
    pub const VFIO_IOMMU_UNMAP_DMA: u8 = super::VFIO_BASE + 14;
    pub const VFIO_DEVICE_FEATURE: u8 = super::VFIO_BASE + 17;
    pub const VFIO_DEVICE_BIND_IOMMUFD: u8 = super::VFIO_BASE + 18;
    pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u8 = super::VFIO_BASE + 19;
    pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u8 = super::VFIO_BASE + 20;

    pub const IOMMU_DESTROY: u8 = 0x80;
    pub const IOMMU_IOAS_ALLOC: u8 = 0x81;
    pub const IOMMU_IOAS_IOVA_RANGES: u8 = 0x84;
    pub const IOMMU_IOAS_MAP: u8 = 0x85;
    pub const IOMMU_IOAS_UNMAP: u8 = 0x86;
    pub const IOMMU_VFIO_IOAS: u8 = 0x88;
    pub const IOMMU_IOAS_MAP_FILE: u8 = 0x8f;
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_info_cap_header {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_group_status {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_info {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_region_info {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_region_sparse_mmap_area {
    pub offset: u64,
    pub size: u64,
}

/// Header of `struct vfio_region_info_cap_sparse_mmap`; `nr_areas` areas follow.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_region_info_cap_sparse_mmap {
    pub header: vfio_info_cap_header,
    pub nr_areas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_region_info_cap_type {
    pub header: vfio_info_cap_header,
    pub type_: u32,
    pub subtype: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_irq_info {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// Header of `struct vfio_irq_set`; `count` data entries (eventfds here) follow.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_irq_set {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_iommu_type1_info {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_iova_range {
    pub start: u64,
    pub end: u64,
}

/// Header of `struct vfio_iommu_type1_info_cap_iova_range`; `nr_iovas` ranges follow.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, FromBytes)]
pub struct vfio_iommu_type1_info_cap_iova_range {
    pub header: vfio_info_cap_header,
    pub nr_iovas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_map {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_iommu_type1_dma_unmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// The fixed part of `VFIO_DEVICE_FEATURE`'s argument; the feature's data follows it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_feature {
    pub argsz: u32,
    pub flags: u32,
}

/// One range of a BAR to export, by offset into the BAR.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, IntoBytes, Immutable)]
pub struct vfio_region_dma_range {
    pub offset: u64,
    pub length: u64,
}

/// `VFIO_DEVICE_FEATURE_DMA_BUF`'s data; `nr_ranges` [`vfio_region_dma_range`]s follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, IntoBytes, Immutable)]
pub struct vfio_device_feature_dma_buf {
    pub region_index: u32,
    pub open_flags: u32,
    pub flags: u32,
    pub nr_ranges: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_bind_iommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
    pub token_uuid_ptr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_attach_iommufd_pt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
    pub pasid: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_detach_iommufd_pt {
    pub argsz: u32,
    pub flags: u32,
    pub pasid: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_destroy {
    pub size: u32,
    pub id: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_ioas_alloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct iommu_iova_range {
    pub start: u64,
    pub last: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_ioas_iova_ranges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub reserved: u32,
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_ioas_map {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_ioas_map_file {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub fd: i32,
    pub start: u64,
    pub length: u64,
    pub iova: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_vfio_ioas {
    pub size: u32,
    pub ioas_id: u32,
    pub op: u16,
    pub reserved: u16,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct iommu_ioas_unmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

/// Asserts a struct's size and each field's offset at compile time, as C lays them out.
macro_rules! assert_layout {
    ($ty:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = assert!(size_of::<$ty>() == $size);
        $(const _: () = assert!(offset_of!($ty, $field) == $off);)*
    };
}

assert_layout!(vfio_info_cap_header, 8, { id: 0, version: 2, next: 4 });
assert_layout!(vfio_group_status, 8, { argsz: 0, flags: 4 });
assert_layout!(vfio_device_feature, 8, { argsz: 0, flags: 4 });
assert_layout!(vfio_device_info, 24, { argsz: 0, flags: 4, num_regions: 8, num_irqs: 12, cap_offset: 16, pad: 20 });
assert_layout!(vfio_region_info, 32, { argsz: 0, flags: 4, index: 8, cap_offset: 12, size: 16, offset: 24 });
assert_layout!(vfio_region_sparse_mmap_area, 16, { offset: 0, size: 8 });
assert_layout!(vfio_region_info_cap_sparse_mmap, 16, { header: 0, nr_areas: 8, reserved: 12 });
assert_layout!(vfio_region_info_cap_type, 16, { header: 0, type_: 8, subtype: 12 });
assert_layout!(vfio_irq_info, 16, { argsz: 0, flags: 4, index: 8, count: 12 });
assert_layout!(vfio_irq_set, 20, { argsz: 0, flags: 4, index: 8, start: 12, count: 16 });
assert_layout!(vfio_iommu_type1_info, 24, { argsz: 0, flags: 4, iova_pgsizes: 8, cap_offset: 16, pad: 20 });
assert_layout!(vfio_iova_range, 16, { start: 0, end: 8 });
assert_layout!(vfio_iommu_type1_info_cap_iova_range, 16, { header: 0, nr_iovas: 8, reserved: 12 });
assert_layout!(vfio_iommu_type1_dma_map, 32, { argsz: 0, flags: 4, vaddr: 8, iova: 16, size: 24 });
assert_layout!(vfio_iommu_type1_dma_unmap, 24, { argsz: 0, flags: 4, iova: 8, size: 16 });
assert_layout!(vfio_region_dma_range, 16, { offset: 0, length: 8 });
assert_layout!(vfio_device_feature_dma_buf, 16, { region_index: 0, open_flags: 4, flags: 8, nr_ranges: 12 });
assert_layout!(vfio_device_bind_iommufd, 24, { argsz: 0, flags: 4, iommufd: 8, out_devid: 12, token_uuid_ptr: 16 });
assert_layout!(vfio_device_attach_iommufd_pt, 16, { argsz: 0, flags: 4, pt_id: 8, pasid: 12 });
assert_layout!(vfio_device_detach_iommufd_pt, 12, { argsz: 0, flags: 4, pasid: 8 });
assert_layout!(iommu_destroy, 8, { size: 0, id: 4 });
assert_layout!(iommu_ioas_alloc, 12, { size: 0, flags: 4, out_ioas_id: 8 });
assert_layout!(iommu_iova_range, 16, { start: 0, last: 8 });
assert_layout!(iommu_ioas_iova_ranges, 32, { size: 0, ioas_id: 4, num_iovas: 8, reserved: 12, allowed_iovas: 16, out_iova_alignment: 24 });
assert_layout!(iommu_ioas_map, 40, { size: 0, flags: 4, ioas_id: 8, reserved: 12, user_va: 16, length: 24, iova: 32 });
assert_layout!(iommu_ioas_map_file, 40, { size: 0, flags: 4, ioas_id: 8, fd: 12, start: 16, length: 24, iova: 32 });
assert_layout!(iommu_vfio_ioas, 12, { size: 0, ioas_id: 4, op: 8, reserved: 10 });
assert_layout!(iommu_ioas_unmap, 24, { size: 0, ioas_id: 4, iova: 8, length: 16 });

/// `argsz`/`size` for a uAPI struct: its size as the kernel sees it.
pub const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_at_reads_by_field_and_refuses_what_does_not_fit() {
        let mut buf = vec![0u8; 12];
        buf[2..4].copy_from_slice(&7u16.to_ne_bytes());
        buf[4..6].copy_from_slice(&1u16.to_ne_bytes());
        buf[8..12].copy_from_slice(&0x40u32.to_ne_bytes());
        let header: vfio_info_cap_header = read_at(&buf, 4).unwrap();
        assert_eq!((header.id, header.version, header.next), (1, 0, 0x40));
        assert!(read_at::<vfio_info_cap_header>(&buf, 5).is_none(), "7 bytes left, 8 needed");
        assert!(read_at::<vfio_info_cap_header>(&buf, usize::MAX).is_none());
    }
}
