//! BAR mmaps placed so the kernel can map them with huge pages.
//!
//! For a region at device-fd offset `off`, a mapping at `vaddr` gets huge pfnmaps and huge
//! IOPTEs only if `vaddr ≡ off (mod align)`, with `align` the largest page size the area can
//! use. We first let the kernel place the mmap and keep it if it is already congruent (newer
//! kernels place VFIO mmaps well by themselves); otherwise we reserve an aligned window and map
//! each mmappable area into it at its own offset, which keeps every area congruent too.

use vfio_sys::align::{is_congruent, mmap_alignment, round_up};
use vfio_sys::mm::{DmaRange, MmapWindow, Prot, page_size};

use crate::error::Context;
use crate::{Device, Error, Mmap, MmapArea, RegionInfo, Result};

/// How a BAR mapping got its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The kernel's own `mmap(NULL, ...)` address was already congruent.
    Kernel,
    /// We reserved an aligned window and mapped into it with `MAP_FIXED`.
    Reserved,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kernel => "kernel-placed",
            Self::Reserved => "reserved+trimmed",
        })
    }
}

/// An mmapped BAR. Unmapped on drop.
#[derive(Debug)]
pub struct BarMapping {
    region: RegionInfo,
    areas: Vec<MmapArea>,
    window: Mmap,
    align: u64,
    placement: Placement,
}

impl BarMapping {
    /// The BAR's region info.
    pub fn region(&self) -> &RegionInfo {
        &self.region
    }

    /// The BAR index.
    pub fn index(&self) -> u32 {
        self.region.index
    }

    /// The first virtual address of the BAR.
    pub fn addr(&self) -> usize {
        self.window.addr()
    }

    /// The mapped length: the BAR size rounded up to a page (a sub-page BAR maps one page,
    /// which vfio-pci reserves for it).
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether nothing is mapped (never).
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The alignment the address was chosen for.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// How the address was chosen.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The mmapped areas, relative to the BAR.
    pub fn areas(&self) -> &[MmapArea] {
        &self.areas
    }

    /// Whether the whole BAR is mapped, with no sparse holes.
    pub fn is_whole(&self) -> bool {
        matches!(self.areas.as_slice(), [a] if a.offset == 0 && a.size == self.region.size)
    }

    /// The window, for volatile register access.
    pub fn window(&self) -> &Mmap {
        &self.window
    }

    /// `[at, at + len)` of the BAR for DMA mapping, if it is inside the mapping.
    pub fn range(&self, at: usize, len: usize) -> Option<DmaRange<'_>> {
        self.window.range(at, len)
    }

    /// The whole mapping for DMA mapping.
    pub fn whole_range(&self) -> DmaRange<'_> {
        self.window.whole()
    }

    /// Unmaps the BAR now, reporting a failed `munmap` (dropping it ignores one).
    ///
    /// # Errors
    /// `munmap`'s errno.
    pub fn unmap(self) -> Result<()> {
        self.window.unmap()
    }
}

impl Device {
    /// mmaps BAR `index` for read/write as its flags allow, aligned for huge pages, and advises
    /// `MADV_HUGEPAGE`. Sparse areas are mapped at their offsets; the holes stay `PROT_NONE`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the BAR is absent or not mmappable (ask [`RegionInfo::mmappable`]
    /// first: a BAR's shape is the device's, so the caller decides what it means); else the
    /// failing `mmap`.
    ///
    /// [`RegionInfo::mmappable`]: crate::RegionInfo::mmappable
    pub fn map_bar(&self, index: u32) -> Result<BarMapping> {
        let bdf = self.bdf();
        let region = self
            .bars()
            .find(|r| r.index == index)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("{bdf} has no BAR {index}")))?;
        let areas = region.mmap_areas();
        if areas.is_empty() {
            return Err(Error::Invalid(format!("BAR {index} of {bdf} is not mmappable")));
        }
        let name = format!("BAR{index} of {bdf}");
        let page = page_size() as u64;
        let len = round_up(region.size, page)
            .ok_or_else(|| Error::malformed(format!("region {index} info"), "size overflows"))?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Invalid(format!("BAR {index} is larger than the address space")))?;
        let align = mmap_alignment(region.size, page);
        let prot = Prot { read: region.readable(), write: region.writable() };
        let op = |what: &str| format!("mmap({what}, BAR {index} of {bdf}, size={len:#x}, offset={:#x})", region.offset);

        let whole = matches!(areas.as_slice(), [a] if a.offset == 0 && a.size == region.size);
        if whole {
            let window = MmapWindow::map_shared(self.fd(), len, prot, region.offset).op(|| op("kernel-placed"))?;
            if is_congruent(window.addr() as u64, region.offset, align) {
                let window = Mmap::new(window, &name);
                advise_hugepage(&window, &areas, page);
                return Ok(BarMapping { region, areas, window, align, placement: Placement::Kernel });
            }
        }

        let phase = (region.offset % align) as usize;
        let mut window = MmapWindow::reserve(len, align as usize, phase).op(|| op("reserve"))?;
        for area in &areas {
            let area_len = round_up(area.size, page).unwrap_or(area.size) as usize;
            if area.offset % page != 0 {
                return Err(Error::malformed(
                    format!("region {index} info"),
                    format!("sparse area at {:#x} is not page-aligned", area.offset),
                ));
            }
            window
                .map_shared_fixed(area.offset as usize, area_len, prot, self.fd(), region.offset + area.offset)
                .op(|| op(&format!("area {:#x}+{:#x}", area.offset, area.size)))?;
        }
        let window = Mmap::new(window, &name);
        advise_hugepage(&window, &areas, page);
        Ok(BarMapping { region, areas, window, align, placement: Placement::Reserved })
    }
}

fn advise_hugepage(window: &Mmap, areas: &[MmapArea], page: u64) {
    for area in areas {
        let len = round_up(area.size, page).unwrap_or(area.size) as usize;
        // Only a hint: kernels without THP for pfnmaps refuse it, and mapping still works.
        window.advise_hugepage(area.offset as usize, len);
    }
}
