//! Reading the IOMMU's own page tables back, to check at what level, and at what physical
//! address, a mapping landed.
//!
//! Tests ask one question, [`leaf`]: the leaf that maps an IOVA for a device (its size and the
//! physical address it points at), or "this IOMMU's page tables can't be read here". Which
//! [`PageTableReader`] answers depends on the IOMMU that translates the device. Intel's driver
//! dumps a device's translation table in debugfs
//! (`/sys/kernel/debug/iommu/intel/<bdf>/domain_translation_struct`), one line per leaf:
//! `0x<iova pfn> |\t<PML5E>\t<PML4E>\t<PDPE>[\t<PDE>[\t<PTE>]]`. AMD's debugfs (7.3) shows
//! only the device-table entry, so its reader walks the table itself ([`amd`]). virtio-iommu's
//! mappings are the host's, and nothing in the guest shows them: it has no reader.

pub mod amd;

use std::path::{Path, PathBuf};

use crate::feature::Feature;
use crate::{Bdf, Error, Result};

/// The leaf of an IOMMU page table that maps an IOVA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The page size: 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    /// The physical address the leaf maps, down to its size.
    pub phys: u64,
    /// The entries on the walk to it, as the reader shows them (for messages).
    pub walk: String,
}

/// Who can read a device's IOMMU page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTableReader {
    /// The Intel IOMMU's debugfs (`CONFIG_INTEL_IOMMU_DEBUGFS`, debugfs mounted).
    IntelDebugfs,
    /// AMD-Vi's device table in its debugfs (`CONFIG_AMD_IOMMU_DEBUGFS`), and the page table
    /// walked from it through `/proc/kcore` (`CONFIG_PROC_KCORE`).
    AmdDebugfsKcore,
}

impl PageTableReader {
    /// The reader for the IOMMU that translates `bdf`, found from the device's `iommu` link in
    /// sysfs (`dmarN` is an Intel VT-d unit).
    ///
    /// # Errors
    /// [`Error::Unsupported`] ([`Feature::IommuPageTables`]) where no reader applies, naming the
    /// IOMMU and what is missing.
    pub fn for_device(bdf: Bdf) -> Result<Self> {
        let link = Path::new("/sys/bus/pci/devices").join(bdf.to_string()).join("iommu");
        let unit = std::fs::read_link(&link).ok().and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let lacks =
            |why: String| Error::unsupported(Feature::IommuPageTables, format!("no IOMMU page-table reader: {why}"));
        match unit {
            Some(unit) if unit.starts_with("dmar") => match Path::new(INTEL_DEBUGFS).exists() {
                true => Ok(Self::IntelDebugfs),
                false => Err(lacks(format!(
                    "no {INTEL_DEBUGFS} (the Intel IOMMU {unit} needs CONFIG_INTEL_IOMMU_DEBUGFS and debugfs mounted)"
                ))),
            },
            Some(unit) if unit.starts_with("ivhd") => {
                let devtbl = Path::new(amd::DEBUGFS).join("devtbl");
                match (devtbl.exists(), Path::new(amd::KCORE).exists()) {
                    (true, true) => Ok(Self::AmdDebugfsKcore),
                    (false, _) => Err(lacks(format!(
                        "no {} (the AMD IOMMU {unit} needs CONFIG_AMD_IOMMU_DEBUGFS and debugfs mounted)",
                        devtbl.display()
                    ))),
                    (true, false) => Err(lacks(format!(
                        "no {} (walking the AMD IOMMU {unit}'s page table needs CONFIG_PROC_KCORE)",
                        amd::KCORE
                    ))),
                }
            }
            Some(unit) => Err(lacks(format!("{bdf}'s IOMMU {unit} has no page-table dump"))),
            None => Err(lacks(format!("{bdf} has no IOMMU ({} is missing)", link.display()))),
        }
    }

    /// The leaf sizes its page-table format has, as a bitmap of powers of two: Intel VT-d's
    /// second-level table 4 KiB, 2 MiB and 1 GiB; AMD v1 every power of two from 4 KiB (a size
    /// between two levels' is written as a run of entries that encode it).
    pub fn leaf_sizes(self) -> u64 {
        match self {
            Self::IntelDebugfs => (4 << 10) | (2 << 20) | (1 << 30),
            Self::AmdDebugfsKcore => !0xfff,
        }
    }

    /// Where this reader reads `bdf`'s table.
    pub fn source(self, bdf: Bdf) -> PathBuf {
        match self {
            Self::IntelDebugfs => Path::new(INTEL_DEBUGFS).join(bdf.to_string()).join("domain_translation_struct"),
            Self::AmdDebugfsKcore => Path::new(amd::DEBUGFS).join("devtbl"),
        }
    }

    /// The leaf that maps `iova` for `bdf`; `Ok(None)` if nothing does.
    ///
    /// # Errors
    /// A read error.
    pub fn leaf(self, bdf: Bdf, iova: u64) -> Result<Option<Leaf>> {
        match self {
            Self::IntelDebugfs => {
                let path = self.source(bdf);
                let dump = match std::fs::read_to_string(&path) {
                    Ok(dump) => dump,
                    // Older kernels (6.1) dump every device's table in one file, a section each.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let all = Path::new(INTEL_DEBUGFS).join("domain_translation_struct");
                        let dump = std::fs::read_to_string(&all).map_err(|e| Error::file(&all, e))?;
                        device_section(&dump, bdf).to_owned()
                    }
                    Err(e) => return Err(Error::file(&path, e)),
                };
                Ok(find_leaf(&dump, iova).and_then(|walk| walk.leaf()))
            }
            Self::AmdDebugfsKcore => amd::leaf(bdf, iova),
        }
    }
}

/// `bdf`'s section of an Intel `domain_translation_struct` that dumps every device: the lines
/// after `Device <bdf> @0x<pgd>`, up to the blank line that ends it; empty if it has none.
fn device_section(dump: &str, bdf: Bdf) -> &str {
    let header = format!("Device {bdf} @");
    let Some(start) = dump.find(&header) else { return "" };
    let body = &dump[start..];
    let body = &body[body.find('\n').map_or(body.len(), |n| n + 1)..];
    &body[..body.find("\n\n").map_or(body.len(), |n| n + 1)]
}

/// Where the Intel IOMMU driver's debugfs lives.
const INTEL_DEBUGFS: &str = "/sys/kernel/debug/iommu/intel";

/// The leaf an IOMMU that uses the largest leaves it can gives `len` bytes mapped from `iova`
/// to `phys`, in equal leaves: the largest of `sizes` (a bitmap of powers of two) that `len`,
/// `iova` and `phys` are all multiples of; `None` if none is.
pub fn largest_leaf(sizes: u64, len: u64, iova: u64, phys: u64) -> Option<u64> {
    (0..64)
        .rev()
        .map(|bit| 1u64 << bit)
        .find(|&size| sizes & size != 0 && [len, iova, phys].iter().all(|n| n.is_multiple_of(size)) && size <= len)
}

/// The leaf that maps `iova` in `bdf`'s IOMMU page table; `Ok(None)` if nothing does.
///
/// # Errors
/// [`Error::Unsupported`] where no reader can show this IOMMU's tables
/// ([`PageTableReader::for_device`]); a read error.
pub fn leaf(bdf: Bdf, iova: u64) -> Result<Option<Leaf>> {
    PageTableReader::for_device(bdf)?.leaf(bdf, iova)
}

/// The entries on the walk to one leaf; absent levels are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageWalk {
    /// 5th-level entry (0 with 4-level tables).
    pub pml5e: u64,
    /// 4th-level entry.
    pub pml4e: u64,
    /// 3rd-level entry: the leaf for a 1 GiB page.
    pub pdpe: u64,
    /// 2nd-level entry: the leaf for a 2 MiB page.
    pub pde: u64,
    /// 1st-level entry: the leaf for a 4 KiB page.
    pub pte: u64,
}

impl PageWalk {
    /// The leaf this walk ends in, if any.
    pub fn leaf(&self) -> Option<Leaf> {
        let walk = format!(
            "PML5E {:#018x} PML4E {:#018x} PDPE {:#018x} PDE {:#018x} PTE {:#018x}",
            self.pml5e, self.pml4e, self.pdpe, self.pde, self.pte
        );
        Some(Leaf { size: self.leaf_size()?, phys: self.leaf_address()?, walk })
    }

    /// The size of the page this walk ends in.
    pub fn leaf_size(&self) -> Option<u64> {
        match (self.pdpe, self.pde, self.pte) {
            (_, _, pte) if pte != 0 => Some(4 << 10),
            (_, pde, _) if pde != 0 => Some(2 << 20),
            (pdpe, _, _) if pdpe != 0 => Some(1 << 30),
            _ => None,
        }
    }

    /// The physical address the leaf maps: its entry's address bits (12 to 51), down to the
    /// leaf's size. Shows where a mapping points, e.g. at a BAR.
    pub fn leaf_address(&self) -> Option<u64> {
        let size = self.leaf_size()?;
        let entry = match size {
            0x1000 => self.pte,
            0x20_0000 => self.pde,
            _ => self.pdpe,
        };
        Some(entry & ((1 << 52) - 1) & !(size - 1))
    }
}

/// Finds the leaf that maps `iova` (it may start below it) in a `domain_translation_struct` dump.
pub fn find_leaf(dump: &str, iova: u64) -> Option<PageWalk> {
    dump.lines().find_map(|line| {
        let mut fields = line.split(|c: char| c == '|' || c.is_whitespace()).filter(|f| !f.is_empty());
        let hex = |f: &str| u64::from_str_radix(f.strip_prefix("0x")?, 16).ok();
        let start = hex(fields.next()?)? << 12;
        if start > iova {
            return None;
        }
        let mut entries = fields.map(|f| hex(f).unwrap_or_default());
        let mut next = || entries.next().unwrap_or_default();
        let walk = PageWalk { pml5e: next(), pml4e: next(), pdpe: next(), pde: next(), pte: next() };
        // The dump has a line per leaf, at the leaf's first IOVA: a huge leaf maps the IOVAs
        // after it too.
        let size = walk.leaf_size()?;
        (iova - start < size).then_some(walk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "Device 0000:00:05.0 @0x10d6d000\n\
        IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE\n\
        0x0000000000000 |\t0x0000000000000000\t0x000000010d6e0003\t0x000000010d6f0003\t0x000000010d7a0003\t0x0000000104c4d003\n\
        0x0000000000200 |\t0x0000000000000000\t0x000000010d6e0003\t0x000000010d6f0003\t0x0000000106000083\n\
        0x0000000040000 |\t0x0000000000000000\t0x000000010d6e0003\t0x0000000140000083\n";

    #[test]
    fn finds_each_leaf_level() {
        assert_eq!(find_leaf(DUMP, 0).unwrap().leaf_size(), Some(4096));
        let two_meg = find_leaf(DUMP, 0x20_0000).unwrap();
        assert_eq!((two_meg.pde, two_meg.pte), (0x1_0600_0083, 0));
        assert_eq!(two_meg.leaf_size(), Some(2 << 20));
        assert_eq!(find_leaf(DUMP, 1 << 30).unwrap().leaf_size(), Some(1 << 30));
    }

    #[test]
    fn finds_the_leaf_an_iova_inside_it_is_mapped_by() {
        assert_eq!(find_leaf(DUMP, 0x20_1000), find_leaf(DUMP, 0x20_0000), "a page inside the 2 MiB leaf");
        assert_eq!(find_leaf(DUMP, 0x3f_ffff).map(|w| w.leaf_size()), Some(Some(2 << 20)));
        assert_eq!(find_leaf(DUMP, (1 << 30) + 0x123_4567).map(|w| w.pdpe), Some(0x1_4000_0083));
        assert_eq!(find_leaf(DUMP, 0x1000), None, "after the 4 KiB leaf at 0, nothing");
        assert_eq!(find_leaf(DUMP, 0x40_0000), None, "after the 2 MiB leaf, nothing");
    }

    #[test]
    fn an_old_kernels_single_dump_is_read_by_device() {
        let dump = "Device 0000:00:03.0 @0x1000\nIOVA_PFN\t\tPML5E\n0x0000000000100 |\ta\tb\n\n\
                    Device 0000:00:04.0 @0x2000\nIOVA_PFN\t\tPML5E\n0x0000000000200 |\tc\td\n\n";
        let four: Bdf = "0000:00:04.0".parse().unwrap();
        assert_eq!(device_section(dump, four), "IOVA_PFN\t\tPML5E\n0x0000000000200 |\tc\td\n");
        let three: Bdf = "0000:00:03.0".parse().unwrap();
        assert!(
            device_section(dump, three).contains("0x0000000000100") && !device_section(dump, three).contains("0x200")
        );
        assert_eq!(device_section(dump, "0000:00:05.0".parse().unwrap()), "");
    }

    #[test]
    fn leaf_address_drops_flags_and_high_bits() {
        assert_eq!(find_leaf(DUMP, 0).unwrap().leaf_address(), Some(0x1_04c4_d000));
        assert_eq!(find_leaf(DUMP, 0x20_0000).unwrap().leaf_address(), Some(0x1_0600_0000));
        assert_eq!(find_leaf(DUMP, 1 << 30).unwrap().leaf_address(), Some(0x1_4000_0000));
        // A first-level entry with XD (bit 63) set.
        let walk = PageWalk { pdpe: 0x8000_0080_4000_0083, ..Default::default() };
        assert_eq!(walk.leaf_address(), Some(0x80_4000_0000));
        assert_eq!(PageWalk::default().leaf_address(), None);
    }

    #[test]
    fn the_largest_leaf_fits_the_length_and_both_addresses() {
        let intel = PageTableReader::IntelDebugfs.leaf_sizes();
        let amd = PageTableReader::AmdDebugfsKcore.leaf_sizes();
        assert_eq!(largest_leaf(intel, 128 << 30, 4 << 30, 128 << 30), Some(1 << 30));
        assert_eq!(largest_leaf(amd, 128 << 30, 4 << 30, 128 << 30), Some(4 << 30), "the IOVA's alignment caps it");
        assert_eq!(largest_leaf(intel, 1 << 20, 0, 0xfea0_0000), Some(4 << 10));
        assert_eq!(largest_leaf(amd, 1 << 20, 0, 0xfea0_0000), Some(1 << 20));
        assert_eq!(largest_leaf(amd, 4 << 20, 0, 0xc0_0020_0000), Some(2 << 20), "phys only 2 MiB-aligned");
        assert_eq!(largest_leaf(intel, 0x800, 0, 0), None, "under a page");
    }

    #[test]
    fn unmapped_iova_is_absent() {
        assert_eq!(find_leaf(DUMP, 0x1000), None);
        assert_eq!(find_leaf("", 0), None);
        assert_eq!(find_leaf("garbage | line\n", 0), None);
    }
}
