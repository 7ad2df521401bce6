//! Device regions (BARs, config space, ...) and their capabilities.

use vfio_sys::uapi::{
    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE,
    VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
    read_at, vfio_region_info, vfio_region_info_cap_sparse_mmap, vfio_region_info_cap_type,
    vfio_region_sparse_mmap_area,
};

use crate::caps::{cap_at, entries_after, walk_chain};
use crate::{Error, Result};

/// A part of a region that may be mmapped, relative to the region's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmapArea {
    /// Offset within the region.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// A region capability, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionCap {
    /// Only these areas may be mmapped (e.g. around an MSI-X table).
    SparseMmap(Vec<MmapArea>),
    /// A device-specific region type.
    Type {
        /// Bus-specific type.
        ty: u32,
        /// Type-specific subtype.
        subtype: u32,
    },
    /// The MSI-X table in this BAR may be mmapped.
    MsixMappable,
    /// A capability this library does not interpret.
    Other {
        /// Its id.
        id: u16,
        /// Its version.
        version: u16,
    },
}

/// `struct vfio_region_info` plus its parsed capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region index (0..=5 are BARs for vfio-pci).
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes; 0 if the region is not implemented.
    pub size: u64,
    /// Offset of the region within the device fd.
    pub offset: u64,
    /// Capabilities, in chain order.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Parses the bytes `VFIO_DEVICE_GET_REGION_INFO` returned for region `index`.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the buffer is short, the chain is broken, or a sparse area lies
    /// outside the region.
    pub fn parse(index: u32, buf: &[u8]) -> Result<Self> {
        let what = format!("region {index} info");
        let fixed = size_of::<vfio_region_info>();
        let info: vfio_region_info =
            read_at(buf, 0).ok_or_else(|| Error::malformed(&what, format!("{} bytes, need {fixed}", buf.len())))?;
        let (flags, size, offset) = (info.flags, info.size, info.offset);
        let mut caps = Vec::new();
        if flags & VFIO_REGION_INFO_FLAG_CAPS != 0 {
            for cap in walk_chain(buf, info.cap_offset, fixed, &what)? {
                caps.push(match cap.id {
                    VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                        type Sparse = vfio_region_info_cap_sparse_mmap;
                        let count = cap_at::<Sparse>(buf, &cap, &what)?.nr_areas;
                        let areas = entries_after::<Sparse, vfio_region_sparse_mmap_area>(buf, &cap, count, &what)?
                            .into_iter()
                            .map(|area| MmapArea { offset: area.offset, size: area.size })
                            .filter(|a| a.size > 0)
                            .collect::<Vec<_>>();
                        if let Some(bad) =
                            areas.iter().find(|a| a.offset.checked_add(a.size).is_none_or(|end| end > size))
                        {
                            return Err(Error::malformed(
                                &what,
                                format!(
                                    "sparse area {:#x}+{:#x} is outside the {size:#x}-byte region",
                                    bad.offset, bad.size
                                ),
                            ));
                        }
                        RegionCap::SparseMmap(areas)
                    }
                    VFIO_REGION_INFO_CAP_TYPE => {
                        let typed: vfio_region_info_cap_type = cap_at(buf, &cap, &what)?;
                        RegionCap::Type { ty: typed.type_, subtype: typed.subtype }
                    }
                    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
                    id => RegionCap::Other { id, version: cap.version },
                });
            }
        }
        Ok(Self { index, flags, size, offset, caps })
    }

    /// A region the device doesn't implement: size 0, no flags.
    pub fn absent(index: u32) -> Self {
        Self { index, flags: 0, size: 0, offset: 0, caps: Vec::new() }
    }

    /// The region can be read.
    pub fn readable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_READ != 0
    }

    /// The region can be written.
    pub fn writable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_WRITE != 0
    }

    /// Some or all of the region can be mmapped.
    pub fn mmappable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0 && self.size > 0
    }

    /// The areas that may be mmapped: the sparse areas if the kernel lists them, else the whole
    /// region if it is mmappable, else none.
    pub fn mmap_areas(&self) -> Vec<MmapArea> {
        if !self.mmappable() {
            return Vec::new();
        }
        self.caps
            .iter()
            .find_map(|c| match c {
                RegionCap::SparseMmap(areas) => Some(areas.clone()),
                _ => None,
            })
            .unwrap_or_else(|| vec![MmapArea { offset: 0, size: self.size }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::tests::put_header;

    fn region_bytes(flags: u32, size: u64, cap_offset: u32, extra: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 32 + extra];
        buf[0..4].copy_from_slice(&((32 + extra) as u32).to_ne_bytes());
        buf[4..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&2u32.to_ne_bytes());
        buf[12..16].copy_from_slice(&cap_offset.to_ne_bytes());
        buf[16..24].copy_from_slice(&size.to_ne_bytes());
        buf[24..32].copy_from_slice(&(2u64 << 40).to_ne_bytes());
        buf
    }

    const RWM: u32 = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;

    #[test]
    fn plain_bar_is_one_area() {
        let info = RegionInfo::parse(2, &region_bytes(RWM, 0x10000, 0, 0)).unwrap();
        assert_eq!(info.offset, 2 << 40);
        assert_eq!(info.mmap_areas(), [MmapArea { offset: 0, size: 0x10000 }]);
        assert!(info.readable() && info.writable());
    }

    #[test]
    fn sparse_areas_and_msix_mappable() {
        let mut buf = region_bytes(RWM | VFIO_REGION_INFO_FLAG_CAPS, 0x4000, 32, 56);
        put_header(&mut buf, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 80);
        buf[40..44].copy_from_slice(&2u32.to_ne_bytes());
        for (i, (off, len)) in [(0u64, 0x1000u64), (0x3000, 0x1000)].into_iter().enumerate() {
            buf[48 + i * 16..56 + i * 16].copy_from_slice(&off.to_ne_bytes());
            buf[56 + i * 16..64 + i * 16].copy_from_slice(&len.to_ne_bytes());
        }
        put_header(&mut buf, 80, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0);
        let info = RegionInfo::parse(0, &buf).unwrap();
        assert_eq!(
            info.mmap_areas(),
            [MmapArea { offset: 0, size: 0x1000 }, MmapArea { offset: 0x3000, size: 0x1000 }]
        );
        assert!(info.caps.contains(&RegionCap::MsixMappable));
    }

    #[test]
    fn sparse_area_outside_region_is_an_error() {
        let mut buf = region_bytes(RWM | VFIO_REGION_INFO_FLAG_CAPS, 0x2000, 32, 32);
        put_header(&mut buf, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0);
        buf[40..44].copy_from_slice(&1u32.to_ne_bytes());
        buf[48..56].copy_from_slice(&0x1000u64.to_ne_bytes());
        buf[56..64].copy_from_slice(&0x2000u64.to_ne_bytes());
        let err = RegionInfo::parse(0, &buf).unwrap_err().to_string();
        assert_eq!(err, "malformed region 0 info: sparse area 0x1000+0x2000 is outside the 0x2000-byte region");
    }

    #[test]
    fn cyclic_chain_is_an_error_not_a_hang() {
        let mut buf = region_bytes(RWM | VFIO_REGION_INFO_FLAG_CAPS, 0x2000, 32, 16);
        put_header(&mut buf, 32, 99, 1, 40);
        put_header(&mut buf, 40, 98, 1, 32);
        assert!(RegionInfo::parse(0, &buf).unwrap_err().to_string().contains("cycle"));
    }

    #[test]
    fn short_buffer_is_an_error() {
        assert!(RegionInfo::parse(0, &[0; 16]).is_err());
    }

    #[test]
    fn unmappable_region_has_no_areas() {
        let info = RegionInfo::parse(7, &region_bytes(VFIO_REGION_INFO_FLAG_READ, 256, 0, 0)).unwrap();
        assert!(info.mmap_areas().is_empty());
    }
}
