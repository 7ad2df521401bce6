//! `vfio_bar_mapping_test` (ours): huge mappings proven, not assumed. The library must place
//! every mmappable BAR at a virtual address congruent to its region offset modulo the largest
//! huge page that fits it, which is what lets the kernel use huge pfnmaps (a self-test of the
//! library: 7.3's VFIO has no `get_unmapped_area`, so the kernel's own placement ignores the
//! offset and the library reserves and trims); and a type1 container mapping such a BAR by
//! its address must get huge IOPTEs that point at the BAR (the largest the IOMMU's page-table
//! format has that fit, read back from its page table), which a device reset leaves in place.
//! The iommufd path's IOPTEs are checked by `vfio_dma_buf_test`.

use ksft::{Case, Outcome, Test, Verdict, ensure, ensure_eq, skip};
use vfio::sysfs::Sysfs;
use vfio::{BarMapping, Bdf, IommuMode, Probe, page_size};

use super::{DeviceFixture, check_iopte, largest, mode_variants_where};

const ONE_GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;

pub fn tests(bdf: Bdf) -> Vec<Test> {
    let mut tests = ksft::fixture(
        "vfio_bar_mmap",
        &[("", ())],
        move |_: &()| DeviceFixture::open_best(bdf),
        &[Case::new("library_placement", library_placement)],
    );
    tests.extend(ksft::fixture(
        "vfio_bar_va_map",
        &mode_variants_where(IommuMode::allows_va_mmio),
        move |&mode| DeviceFixture::open(bdf, mode),
        &[Case::new("huge_iopte", huge_iopte), Case::new("reset", reset)],
    ));
    tests
}

/// The largest page the kernel can map `len` bytes of MMIO with: a PUD (1 GiB) or PMD (2 MiB)
/// when the range holds one, else a base page. Computed here from the sizes, independently of
/// the library's placement arithmetic.
fn huge_page_for(len: u64) -> u64 {
    match len {
        _ if len >= ONE_GIB => ONE_GIB,
        _ if len >= TWO_MIB => TWO_MIB,
        _ => page_size() as u64,
    }
}

/// Subject: the library's placement, not the kernel's (a self-test). Every mmapped area of every
/// BAR: vaddr ≡ region offset (mod the huge page it can use), computed here apart from the
/// library's arithmetic; the line printed says which path placed it.
fn library_placement(t: &mut DeviceFixture) -> Outcome {
    if t.bars.is_empty() {
        skip!("{} has no mmappable BAR", t.device.bdf());
    }
    for bar in &t.bars {
        for area in bar.areas() {
            let align = huge_page_for(area.size);
            let vaddr = (bar.addr() as u64) + area.offset;
            let offset = bar.region().offset + area.offset;
            ensure_eq!(
                vaddr % align,
                offset % align,
                "BAR{} area {:#x}+{:#x} at {vaddr:#x} vs region offset {offset:#x}, modulo {align:#x}",
                bar.index(),
                area.offset,
                area.size
            );
            println!(
                "# BAR{} area {:#x}+{:#x}: vaddr {vaddr:#x} ≡ offset {offset:#x} (mod {align:#x}), {}",
                bar.index(),
                area.offset,
                area.size,
                bar.placement()
            );
        }
    }
    Ok(())
}

/// The largest mmappable BAR, by its address, up to its first 1 GiB (one PUD, which keeps
/// type1's 4 KiB-a-step unmap short): the IOPTE at its IOVA must be the huge page that fits,
/// and point at the BAR's physical address.
fn huge_iopte(t: &mut DeviceFixture) -> Outcome {
    let bdf = t.device.bdf();
    let Some(bar) = largest(t.bars.iter().filter(|b| b.is_whole()), |b| b.region().size) else {
        skip!("{bdf} has no mmappable BAR mapped whole");
    };
    let page = page_size() as u64;
    if bar.region().size < page {
        skip!("BAR{} is smaller than a page: its page is vfio-pci's, not the BAR's", bar.index());
    }
    let phys = bar_address(bdf, bar)?;
    let len = bar.region().size.min(ONE_GIB);
    let iova = t.iova.alloc(len)?;
    let range = bar.range(0, len as usize).expect("the first GiB of a whole mapping");
    let mapping = t.iommu.map(range, iova)?;
    println!("# BAR{} ({len:#x} bytes of it) mapped by address at IOVA {iova:#x}", bar.index());
    check_iopte(bdf, iova, len, phys)?;
    ensure_eq!(mapping.unmap()?, len, "bytes unmapped");
    Ok(())
}

/// A type1 container maps a BAR by its pfns and is never told when the device resets: the
/// IOPTE outlives the reset in 7.3 (iommufd revokes its dma-buf's instead, see
/// `vfio_dma_buf_map.*.revoke_on_reset`). The CPU's mmap, zapped during the reset, faults back
/// in afterwards.
fn reset(t: &mut DeviceFixture) -> Outcome {
    let bdf = t.device.bdf();
    if !t.device.info().can_reset() {
        skip!("Device does not support reset");
    }
    let page = page_size() as u64;
    let Some(bar) = t.bars.iter().find(|b| b.is_whole() && b.region().size >= page) else {
        skip!("{bdf} has no mmappable BAR of a page or more");
    };
    let phys = bar_address(bdf, bar)?;
    let iova = t.iova.alloc(page)?;
    let range = bar.range(0, page as usize).expect("a page of a whole mapping");
    let mapping = t.iommu.map(range, iova)?;
    t.device.reset()?;
    check_iopte(bdf, iova, page, phys)?;
    let read = bar.window().probe_u32(0)?;
    ensure!(matches!(read, Probe::Value(_)), "a CPU read of BAR{} after the reset: {read:?}", bar.index());
    ensure_eq!(mapping.unmap()?, page, "bytes unmapped");
    Ok(())
}

/// Where BAR `bar` of `bdf` starts in physical memory.
fn bar_address(bdf: Bdf, bar: &BarMapping) -> Result<u64, Verdict> {
    match Sysfs::system().bar_resource(bdf, bar.index())? {
        Some(res) => Ok(res.start),
        None => Err(Verdict::Fail(format!("sysfs has no BAR{} for {bdf}", bar.index()))),
    }
}
