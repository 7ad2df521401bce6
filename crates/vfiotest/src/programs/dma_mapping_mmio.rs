//! `vfio_dma_mapping_mmio_test`: DMA-map a BAR's mmap, the seed's P2P scenario.
//!
//! The legacy type1 backends follow the BAR's PFNMAP and must map and unmap it; every iommufd
//! mode must refuse a VA mapping of MMIO (iommufd takes MMIO only as a dma-buf).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ksft::{Case, Outcome, Test, Verdict, ensure, skip};
use vfio::align::round_up;
use vfio::{BarMapping, Bdf, DmaRange, Iommu, IommuMode, IovaAllocator, Mmap, Prot, page_size};

use super::{DeviceFixture, largest, mode_variants};

const FIXTURE: &str = "vfio_dma_mapping_mmio_test";
const ONE_GIB: u64 = 1 << 30;

struct MmioFixture {
    dev: DeviceFixture,
    /// Index into `dev.bars` of the largest mapped read/write BAR.
    bar: usize,
}

impl ksft::Teardown for MmioFixture {
    fn teardown(self) -> Outcome {
        self.dev.teardown()
    }
}

impl MmioFixture {
    fn setup(bdf: Bdf, mode: IommuMode) -> Result<Self, Verdict> {
        let dev = DeviceFixture::open(bdf, mode)?;
        // The largest mapped BAR that is readable and writable, as the map asks for both.
        let read_write = dev.bars.iter().enumerate().filter(|(_, b)| b.region().readable() && b.region().writable());
        match largest(read_write, |(_, b)| b.region().size) {
            Some((bar, _)) => Ok(Self { dev, bar }),
            None => skip!("No mappable BAR found on device {bdf}"),
        }
    }

    fn bar(&self) -> &BarMapping {
        &self.dev.bars[self.bar]
    }
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    // Upstream's default 30 s timeout. The slowest case, unmapping the whole 128 GiB BAR (type1
    // walks it 4 KiB at a time), takes 6-7 s under TCG on an idle 2-core host, 11 s at worst
    // seen on a busy one (vfiotest vm --slowest).
    ksft::fixture(
        FIXTURE,
        &mode_variants(),
        move |&mode| MmioFixture::setup(bdf, mode),
        &[
            Case::new("map_full_bar", map_full_bar),
            Case::new("map_partial_bar", map_partial_bar),
            Case::new("map_bar_misaligned", map_bar_misaligned),
        ],
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Maps `range` at a fresh IOVA and checks the mode's verdict: type1 maps and unmaps, iommufd
/// refuses. Prints what was mapped and how long each ioctl took.
fn map_and_check(iommu: &Arc<Iommu>, iovas: &mut IovaAllocator, what: &str, range: DmaRange<'_>) -> Outcome {
    let mode = iommu.mode();
    let (vaddr, size) = (range.addr(), range.len());
    let iova = iovas.alloc(size as u64)?;
    let start = Instant::now();
    let mapped = iommu.map(range, iova);
    let map_time = start.elapsed();
    if mode.allows_va_mmio() {
        let mapping = mapped?;
        let start = Instant::now();
        let unmapped = mapping.unmap()?;
        let unmap_time = start.elapsed();
        println!(
            "# {what}: vaddr={vaddr:#x} size={size:#x} iova={iova:#x} MAP_DMA {} UNMAP_DMA {}",
            ms(map_time),
            ms(unmap_time)
        );
        ensure!(unmapped == size as u64, "UNMAP_DMA unmapped {unmapped:#x} of {size:#x} bytes");
    } else {
        // Since 6.18 compat unmap of an empty range returns 0, so only the map is checked.
        match mapped {
            Ok(_) => ensure!(false, "{mode} accepted a VA mapping of MMIO at {vaddr:#x} (size {size:#x})"),
            Err(e) => println!("# {what}: vaddr={vaddr:#x} size={size:#x} iova={iova:#x} refused as expected: {e}"),
        }
    }
    Ok(())
}

fn describe(bar: &BarMapping) -> String {
    let size = bar.region().size;
    let mut text = format!(
        "BAR{} size={size:#x} at {:#x} ({}, align {:#x})",
        bar.index(),
        bar.addr(),
        bar.placement(),
        bar.align()
    );
    if size < page_size() as u64 {
        text.push_str(", sub-page: the whole page vfio-pci reserves for it is mapped");
    }
    text
}

fn map_full_bar(t: &mut MmioFixture) -> Outcome {
    let DeviceFixture { bars, iommu, iova, .. } = &mut t.dev;
    let bar = &bars[t.bar];
    let what = describe(bar);
    let page = page_size() as u64;
    // A sparse BAR is mapped area by area: the holes between areas are not ours to map.
    for area in bar.areas() {
        let len = round_up(area.size, page).unwrap_or(area.size) as usize;
        let range = bar
            .range(area.offset as usize, len)
            .ok_or_else(|| Verdict::Fail(format!("area {:#x}+{len:#x} lies outside the BAR mapping", area.offset)))?;
        if iommu.mode().allows_va_mmio() && len as u64 > PROBE_ABOVE {
            fits_in_time(iommu, iova, bar, area.offset as usize, len)?;
        }
        map_and_check(iommu, iova, &what, range)?;
    }
    Ok(())
}

/// A BAR area larger than this is first tried on pieces, so a kernel that maps it too slowly
/// is told up front rather than by the timeout.
const PROBE_ABOVE: u64 = 16 << 30;
/// The first piece tried, small enough for a kernel that faults a pfnmap in page by page.
const SMALL_PROBE: usize = 32 << 20;
/// The second piece: a whole 1 GiB leaf, as the full map uses. A small piece says little on a
/// kernel that maps huge leaves: its time is mostly the ioctl's and the fault's, not per page.
const LEAF_PROBE: usize = 1 << 30;
/// The longest the second piece may take to be worth trying.
const LEAF_PROBE_LIMIT: Duration = Duration::from_secs(5);
/// What the whole map may take, of the test's 30 s (its unmap takes as long again).
const MAP_BUDGET: Duration = Duration::from_secs(12);

/// SKIPs, saying why, if mapping `len` bytes of `bar` at `offset` would outlast the test's
/// time: type1 before Linux 6.15 maps a pfnmap 4 KiB at a time (128 GiB: minutes), where
/// since 0fd06844de5d it takes the pfnmap's own huge mappings whole.
fn fits_in_time(iommu: &Arc<Iommu>, iovas: &mut IovaAllocator, bar: &BarMapping, offset: usize, len: usize) -> Outcome {
    let mut time_map = |piece: usize| -> Result<Duration, Verdict> {
        let range = bar.range(offset, piece).expect("the probe lies inside the area");
        let at = iovas.alloc(piece as u64)?;
        let start = Instant::now();
        let mapping = iommu.map(range, at)?;
        let took = start.elapsed();
        mapping.unmap()?;
        Ok(took)
    };
    let scaled = |took: Duration, piece: usize, to: usize| took.mul_f64(to as f64 / piece as f64);
    let small = time_map(SMALL_PROBE)?;
    let (piece, took) = match scaled(small, SMALL_PROBE, LEAF_PROBE) {
        leaf if leaf > LEAF_PROBE_LIMIT || len < LEAF_PROBE => (SMALL_PROBE, small),
        _ => (LEAF_PROBE, time_map(LEAF_PROBE)?),
    };
    let whole = scaled(took, piece, len);
    println!(
        "# probe: {} MiB mapped in {}: all {} GiB would take about {:.1} s",
        piece >> 20,
        ms(took),
        len >> 30,
        whole.as_secs_f64()
    );
    if whole > MAP_BUDGET {
        skip!(
            "this kernel maps the BAR's pfnmap too slowly for the test's time: {} MiB took {}, so all {} GiB \
             would take about {:.0} s (type1 maps a pfnmap 4 KiB at a time before 0fd06844de5d \
             \"vfio/type1: Use mapping page mask for pfnmaps\", Linux 6.15)",
            piece >> 20,
            ms(took),
            len >> 30,
            whole.as_secs_f64()
        );
    }
    Ok(())
}

fn map_partial_bar(t: &mut MmioFixture) -> Outcome {
    let DeviceFixture { bars, iommu, iova, .. } = &mut t.dev;
    let bar = &bars[t.bar];
    let page = page_size();
    let size = bar.region().size;
    if size < 2 * page as u64 {
        skip!("BAR too small (size={size:#x})");
    }
    let Some(first) = bar.areas().first().filter(|a| a.size >= page as u64) else {
        skip!("BAR{} has no mmappable area of a page or more", bar.index());
    };
    let range = bar.range(first.offset as usize, page).expect("a page inside a mapped area");
    map_and_check(iommu, iova, &format!("first page of {}", describe(bar)), range)
}

/// Maps the BAR at a vaddr that is deliberately one page off 1 GiB alignment.
fn map_bar_misaligned(t: &mut MmioFixture) -> Outcome {
    let page = page_size() as u64;
    let region = t.bar().region().clone();
    if !t.bar().is_whole() {
        skip!("BAR{} is sparse: it can't be mapped whole at another address", region.index);
    }
    // Bound the time on huge BARs, as upstream does.
    let size = round_up(region.size.min(ONE_GIB), page).unwrap_or(page) as usize;
    let mut window = Mmap::reserve(size, ONE_GIB as usize, page as usize)?;
    let prot = Prot { read: region.readable(), write: region.writable() };
    window.map_shared_fixed(0, size, prot, t.dev.device.fd(), region.offset)?;
    let what = format!("BAR{} size={:#x} misaligned by a page", region.index, region.size);
    map_and_check(&t.dev.iommu, &mut t.dev.iova, &what, window.whole())?;
    Ok(window.unmap()?)
}
