//! The bench's matrix: memory kind × size × alignment × mode, expanded into cells.

use serde::{Deserialize, Serialize};
use vfio::IommuMode;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Memory {
    /// A BAR: its mmap in the type1 modes, a dma-buf of it in the iommufd modes.
    Bar,
    /// Anonymous memory on base pages (THP as the kernel likes).
    Anonymous,
    /// Anonymous memory on 2 MiB hugetlb pages.
    #[serde(rename = "hugetlb-2m")]
    Hugetlb2m,
    /// Anonymous memory on 1 GiB hugetlb pages.
    #[serde(rename = "hugetlb-1g")]
    Hugetlb1g,
}

impl Memory {
    /// Every kind, in table order.
    pub const ALL: [Memory; 4] = [Memory::Bar, Memory::Anonymous, Memory::Hugetlb2m, Memory::Hugetlb1g];

    /// Its name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Memory::Bar => "bar",
            Memory::Anonymous => "anonymous",
            Memory::Hugetlb2m => "hugetlb-2m",
            Memory::Hugetlb1g => "hugetlb-1g",
        }
    }

    /// The page a mapping of this memory is made of: sizes are multiples of it, and only
    /// whole pages can be misaligned.
    pub fn page(self) -> u64 {
        match self {
            Memory::Bar | Memory::Anonymous => 4 * KIB,
            Memory::Hugetlb2m => 2 * MIB,
            Memory::Hugetlb1g => GIB,
        }
    }
}

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Memory::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            format!("unknown memory {s:?}: expected one of {}", Memory::ALL.map(Memory::name).join(", "))
        })
    }
}

/// Where the mapping starts relative to the alignment a huge mapping needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alignment {
    /// vaddr ≡ offset modulo the size's huge page (1 GiB at most).
    Aligned,
    /// One 4 KiB page off.
    PageOff,
    /// 2 MiB off (still 2 MiB-aligned, so 1 GiB pages are lost but 2 MiB pages are not).
    #[serde(rename = "2m-off")]
    TwoMibOff,
}

impl Alignment {
    /// Every alignment, in table order.
    pub const ALL: [Alignment; 3] = [Alignment::Aligned, Alignment::PageOff, Alignment::TwoMibOff];

    /// Its name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Alignment::Aligned => "aligned",
            Alignment::PageOff => "page-off",
            Alignment::TwoMibOff => "2m-off",
        }
    }

    /// Bytes off alignment.
    pub fn offset(self) -> u64 {
        match self {
            Alignment::Aligned => 0,
            Alignment::PageOff => 4 * KIB,
            Alignment::TwoMibOff => 2 * MIB,
        }
    }
}

impl std::str::FromStr for Alignment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Alignment::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            format!("unknown alignment {s:?}: expected one of {}", Alignment::ALL.map(Alignment::name).join(", "))
        })
    }
}

/// One measurement: map and unmap `size` bytes of `memory`, `alignment`, in `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub memory: Memory,
    pub alignment: Alignment,
    #[serde(serialize_with = "mode_name")]
    pub mode: IommuMode,
    pub size: u64,
}

fn mode_name<S: serde::Serializer>(mode: &IommuMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.name())
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Spec {
    pub memory: Vec<Memory>,
    pub alignments: Vec<Alignment>,
    pub modes: Vec<IommuMode>,
    pub min_size: u64,
    pub max_size: u64,
}

/// What the machine offers: the BAR's size and how much of each memory it can give.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The benchmarked BAR's size (0: no BAR).
    pub bar: u64,
    /// Anonymous memory the bench may pin at once.
    pub anonymous: u64,
    /// 2 MiB hugetlb pages free × 2 MiB.
    pub hugetlb_2m: u64,
    /// 1 GiB hugetlb pages free × 1 GiB.
    pub hugetlb_1g: u64,
}

impl Limits {
    fn of(&self, memory: Memory) -> u64 {
        match memory {
            Memory::Bar => self.bar,
            Memory::Anonymous => self.anonymous,
            Memory::Hugetlb2m => self.hugetlb_2m,
            Memory::Hugetlb1g => self.hugetlb_1g,
        }
    }
}

/// Every cell worth measuring, in table order (memory, alignment, mode, size up). Sizes are
/// the powers of two from `min_size` to `max_size` that the memory has room for (a misaligned
/// cell needs its offset on top) and that are whole pages of it. Misalignment only exists for
/// mappings by address of memory on 4 KiB pages: hugetlb mmaps are always aligned, and a BAR
/// in an iommufd mode is a dma-buf, which has no address.
pub fn expand(spec: &Spec, limits: &Limits) -> Vec<Cell> {
    let mut cells = Vec::new();
    for &memory in &spec.memory {
        for &alignment in &spec.alignments {
            for &mode in &spec.modes {
                let by_address = memory != Memory::Bar || mode.allows_va_mmio();
                if alignment != Alignment::Aligned && (memory.page() > 4 * KIB || !by_address) {
                    continue;
                }
                let mut size = spec.min_size.max(1).next_power_of_two();
                while size <= spec.max_size {
                    if size.is_multiple_of(memory.page()) && size + alignment.offset() <= limits.of(memory) {
                        cells.push(Cell { memory, alignment, mode, size });
                    }
                    size = match size.checked_mul(2) {
                        Some(next) => next,
                        None => break,
                    };
                }
            }
        }
    }
    cells
}

/// `size` for people: `4K`, `2M`, `128G`.
pub fn human(size: u64) -> String {
    match size {
        s if s >= GIB && s.is_multiple_of(GIB) => format!("{}G", s / GIB),
        s if s >= MIB && s.is_multiple_of(MIB) => format!("{}M", s / MIB),
        s if s >= KIB && s.is_multiple_of(KIB) => format!("{}K", s / KIB),
        s => format!("{s}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { bar: 128 * GIB, anonymous: 64 * MIB, hugetlb_2m: 128 * MIB, hugetlb_1g: GIB };

    fn spec(memory: &[Memory], alignments: &[Alignment], modes: &[IommuMode], max: u64) -> Spec {
        Spec {
            memory: memory.to_vec(),
            alignments: alignments.to_vec(),
            modes: modes.to_vec(),
            min_size: 4 * KIB,
            max_size: max,
        }
    }

    #[test]
    fn sizes_are_powers_of_two_within_what_each_memory_has() {
        let cells = expand(&spec(&[Memory::Anonymous], &[Alignment::Aligned], &[IommuMode::Iommufd], GIB), &LIMITS);
        let sizes: Vec<u64> = cells.iter().map(|c| c.size).collect();
        assert_eq!(sizes.first(), Some(&(4 * KIB)));
        assert_eq!(sizes.last(), Some(&(64 * MIB)), "anonymous memory stops at its limit");
        assert_eq!(sizes.len(), 15, "4K..64M");
        assert!(sizes.windows(2).all(|w| w[1] == 2 * w[0]));
    }

    #[test]
    fn a_misaligned_cell_needs_room_for_its_offset() {
        let cells = expand(&spec(&[Memory::Anonymous], &[Alignment::TwoMibOff], &[IommuMode::Iommufd], GIB), &LIMITS);
        assert_eq!(cells.last().map(|c| c.size), Some(32 * MIB), "64M + 2M does not fit in 64M");
    }

    #[test]
    fn hugetlb_sizes_are_whole_huge_pages_and_always_aligned() {
        let all = [Alignment::Aligned, Alignment::PageOff, Alignment::TwoMibOff];
        let cells =
            expand(&spec(&[Memory::Hugetlb2m, Memory::Hugetlb1g], &all, &[IommuMode::VfioType1v2], 128 * GIB), &LIMITS);
        assert!(cells.iter().all(|c| c.alignment == Alignment::Aligned), "{cells:?}");
        let one_gig: Vec<u64> = cells.iter().filter(|c| c.memory == Memory::Hugetlb1g).map(|c| c.size).collect();
        assert_eq!(one_gig, [GIB]);
        let two_meg: Vec<u64> = cells.iter().filter(|c| c.memory == Memory::Hugetlb2m).map(|c| c.size).collect();
        assert_eq!(two_meg, [2 * MIB, 4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 128 * MIB]);
    }

    #[test]
    fn a_bar_is_misaligned_only_where_it_is_mapped_by_address() {
        let modes = [IommuMode::VfioType1v2, IommuMode::Iommufd];
        let cells = expand(&spec(&[Memory::Bar], &Alignment::ALL, &modes, 128 * GIB), &LIMITS);
        assert!(cells.iter().filter(|c| c.mode == IommuMode::Iommufd).all(|c| c.alignment == Alignment::Aligned));
        let type1_page_off =
            cells.iter().filter(|c| c.mode == IommuMode::VfioType1v2 && c.alignment == Alignment::PageOff);
        assert_eq!(type1_page_off.map(|c| c.size).max(), Some(64 * GIB), "128G + a page does not fit in the BAR");
        let iommufd_max = cells.iter().filter(|c| c.mode == IommuMode::Iommufd).map(|c| c.size).max();
        assert_eq!(iommufd_max, Some(128 * GIB), "the whole BAR");
    }

    #[test]
    fn no_bar_no_bar_cells_and_names_parse() {
        let limits = Limits { bar: 0, ..LIMITS };
        assert!(expand(&spec(&[Memory::Bar], &Alignment::ALL, &IommuMode::ALL, GIB), &limits).is_empty());
        assert_eq!("hugetlb-2m".parse::<Memory>(), Ok(Memory::Hugetlb2m));
        assert!("huge".parse::<Memory>().unwrap_err().contains("expected one of bar, anonymous"));
        assert_eq!("2m-off".parse::<Alignment>(), Ok(Alignment::TwoMibOff));
        assert_eq!((human(4 * KIB), human(2 * MIB), human(128 * GIB)), ("4K".into(), "2M".into(), "128G".into()));
        // The JSON says what the command line says.
        for memory in Memory::ALL {
            assert_eq!(serde_json::to_value(memory).unwrap(), memory.name());
        }
        for alignment in Alignment::ALL {
            assert_eq!(serde_json::to_value(alignment).unwrap(), alignment.name());
        }
    }
}
