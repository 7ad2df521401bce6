//! IOVA ranges and a bump allocator over them.

use vfio_sys::uapi::{
    VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, read_at, vfio_iommu_type1_info,
    vfio_iommu_type1_info_cap_iova_range, vfio_iova_range,
};

use crate::caps::{cap_at, entries_after, walk_chain};
use crate::{Error, Result};

/// An inclusive range of IO virtual addresses, as iommufd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IovaRange {
    /// First usable IOVA.
    pub start: u64,
    /// Last usable IOVA (inclusive).
    pub last: u64,
}

/// Parses the IOVA ranges out of a `VFIO_IOMMU_GET_INFO` buffer.
///
/// # Errors
/// [`Error::Malformed`] for a broken chain or one without the IOVA-range capability.
pub fn parse_type1_iova_ranges(buf: &[u8]) -> Result<Vec<IovaRange>> {
    let what = "VFIO_IOMMU_GET_INFO";
    let fixed = size_of::<vfio_iommu_type1_info>();
    let info: vfio_iommu_type1_info =
        read_at(buf, 0).ok_or_else(|| Error::malformed(what, format!("{} bytes, need {fixed}", buf.len())))?;
    if info.flags & VFIO_IOMMU_INFO_CAPS == 0 {
        // Every type1 since Linux 5.4 reports its IOVA ranges: a kernel that doesn't is broken.
        return Err(Error::malformed("VFIO_IOMMU_GET_INFO", "no capability chain (no IOVA ranges)"));
    }
    let cap = walk_chain(buf, info.cap_offset, fixed, what)?
        .into_iter()
        .find(|c| c.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
        .ok_or_else(|| Error::malformed("VFIO_IOMMU_GET_INFO", "no IOVA-range capability"))?;
    type Ranges = vfio_iommu_type1_info_cap_iova_range;
    let count = cap_at::<Ranges>(buf, &cap, what)?.nr_iovas;
    let ranges = entries_after::<Ranges, vfio_iova_range>(buf, &cap, count, what)?
        .into_iter()
        .map(|r| IovaRange { start: r.start, last: r.end })
        .collect();
    normalize(ranges, what)
}

/// Sorts ranges and checks they are non-empty, well-formed and disjoint.
///
/// # Errors
/// [`Error::Malformed`] naming `what`.
pub fn normalize(mut ranges: Vec<IovaRange>, what: &str) -> Result<Vec<IovaRange>> {
    ranges.sort();
    if ranges.is_empty() {
        return Err(Error::malformed(what, "no IOVA ranges"));
    }
    if let Some(r) = ranges.iter().find(|r| r.start > r.last) {
        return Err(Error::malformed(what, format!("IOVA range {:#x}..={:#x} is inverted", r.start, r.last)));
    }
    if let Some(w) = ranges.windows(2).find(|w| w[0].last >= w[1].start) {
        return Err(Error::malformed(
            what,
            format!(
                "IOVA ranges {:#x}..={:#x} and {:#x}..={:#x} overlap",
                w[0].start, w[0].last, w[1].start, w[1].last
            ),
        ));
    }
    Ok(ranges)
}

/// Hands out IOVAs from the kernel's ranges, lowest first, never reusing one.
///
/// Each allocation is aligned to its size rounded up to a power of two (at most 1 GiB), so a
/// huge-page-aligned buffer gets an IOVA that allows huge IOPTEs.
///
/// ```
/// use vfio::{IovaAllocator, IovaRange};
///
/// // The x86 MSI window splits the space in two, as the kernel reports it.
/// let below = IovaRange { start: 0, last: 0xfedf_ffff };
/// let above = IovaRange { start: 0xfef0_0000, last: (1 << 48) - 1 };
/// let mut iovas = IovaAllocator::new(vec![above, below])?;
/// assert_eq!(iovas.alloc(4096)?, 0);
/// // 2 MiB goes on a 2 MiB boundary, so the IOMMU can map it with one huge IOPTE.
/// assert_eq!(iovas.alloc(2 << 20)?, 2 << 20);
/// // 4 GiB doesn't fit below the window: it goes above it, 1 GiB aligned.
/// assert_eq!(iovas.alloc(4 << 30)?, 0x1_0000_0000);
/// # Ok::<(), vfio::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    ranges: Vec<IovaRange>,
    /// Index of the range the cursor is in.
    range: usize,
    /// Next free IOVA within `ranges[range]`.
    cursor: u64,
}

impl IovaAllocator {
    /// An allocator over `ranges` (normalized first).
    ///
    /// # Errors
    /// [`Error::Malformed`] if the ranges are empty, inverted or overlap.
    pub fn new(ranges: Vec<IovaRange>) -> Result<Self> {
        let ranges = normalize(ranges, "IOVA ranges")?;
        let cursor = ranges[0].start;
        Ok(Self { ranges, range: 0, cursor })
    }

    /// The ranges this allocator draws from.
    pub fn ranges(&self) -> &[IovaRange] {
        &self.ranges
    }

    /// Allocates `size` bytes of IOVA space.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a zero size, [`Error::IovaExhausted`] when no range has room.
    pub fn alloc(&mut self, size: u64) -> Result<u64> {
        if size == 0 {
            return Err(Error::Invalid("IOVA allocation of 0 bytes".into()));
        }
        let align = size.checked_next_power_of_two().unwrap_or(1 << 63).min(1 << 30);
        while let Some(range) = self.ranges.get(self.range) {
            let start = self.cursor.max(range.start);
            let aligned = vfio_sys::align::round_up(start, align);
            let last = aligned.and_then(|a| a.checked_add(size - 1));
            match (aligned, last) {
                (Some(iova), Some(last)) if last <= range.last => {
                    if last == range.last {
                        self.range += 1;
                        self.cursor = self.ranges.get(self.range).map_or(0, |r| r.start);
                    } else {
                        self.cursor = last + 1;
                    }
                    return Ok(iova);
                }
                _ => {
                    self.range += 1;
                    self.cursor = self.ranges.get(self.range).map_or(0, |r| r.start);
                }
            }
        }
        Err(Error::IovaExhausted { size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange { start, last }
    }

    #[test]
    fn allocations_are_aligned_and_disjoint() {
        let mut a = IovaAllocator::new(vec![r(0, (1 << 32) - 1)]).unwrap();
        assert_eq!(a.alloc(0x1000).unwrap(), 0);
        assert_eq!(a.alloc(0x20_0000).unwrap(), 0x20_0000, "2 MiB aligned");
        assert_eq!(a.alloc(0x1000).unwrap(), 0x40_0000);
        assert_eq!(a.alloc(0x3000).unwrap(), 0x40_4000, "non-power-of-two aligned to 16K");
    }

    #[test]
    fn skips_to_the_next_range_and_sorts_them() {
        // x86 reserves the MSI window 0xfee00000..=0xfeefffff, splitting the space.
        let mut a = IovaAllocator::new(vec![r(0xfef0_0000, u64::MAX >> 16), r(0, 0xfedf_ffff)]).unwrap();
        assert_eq!(a.alloc(1 << 30).unwrap(), 0);
        assert_eq!(a.alloc(1 << 30).unwrap(), 1 << 30);
        assert_eq!(a.alloc(1 << 30).unwrap(), 2 << 30);
        // 0xc0000000 + 1G would cross the MSI hole: go past it, 1G aligned.
        assert_eq!(a.alloc(1 << 30).unwrap(), 4 << 30);
        assert_eq!(a.alloc(0x1000).unwrap(), (5 << 30));
    }

    #[test]
    fn the_last_page_of_the_space_can_be_allocated() {
        let mut a = IovaAllocator::new(vec![r(0, u64::MAX)]).unwrap();
        assert_eq!(a.alloc(1 << 63).unwrap(), 0);
        assert_eq!(a.alloc(1 << 62).unwrap(), 1 << 63);
        assert_eq!(a.alloc(1 << 62).unwrap(), 3 << 62);
        assert!(matches!(a.alloc(0x1000), Err(Error::IovaExhausted { size: 0x1000 })));
    }

    #[test]
    fn exhaustion_and_zero_size_are_errors() {
        let mut a = IovaAllocator::new(vec![r(0, 0xfff)]).unwrap();
        assert!(a.alloc(0).is_err());
        assert_eq!(a.alloc(0x1000).unwrap(), 0);
        assert_eq!(a.alloc(0x1000).unwrap_err().to_string(), "no free IOVA range for 0x1000 bytes");
    }

    #[test]
    fn rejects_overlapping_or_inverted_ranges() {
        assert!(IovaAllocator::new(vec![r(0, 0x2000), r(0x1000, 0x3000)]).is_err());
        assert!(IovaAllocator::new(vec![r(0x2000, 0x1000)]).is_err());
        assert!(IovaAllocator::new(vec![]).is_err());
    }

    #[test]
    fn parses_type1_info_ranges() {
        let mut buf = vec![0u8; 24 + 16 + 32];
        buf[4..8].copy_from_slice(&VFIO_IOMMU_INFO_CAPS.to_ne_bytes());
        buf[16..20].copy_from_slice(&24u32.to_ne_bytes());
        crate::caps::tests::put_header(&mut buf, 24, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0);
        buf[32..36].copy_from_slice(&2u32.to_ne_bytes());
        for (i, v) in [0xfef0_0000u64, 0xffff_ffff_ffff, 0, 0xfedf_ffff].into_iter().enumerate() {
            buf[40 + i * 8..48 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_type1_iova_ranges(&buf).unwrap(), [r(0, 0xfedf_ffff), r(0xfef0_0000, 0xffff_ffff_ffff)]);
    }
}
