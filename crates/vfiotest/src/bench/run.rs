//! Measuring the cells on a device bound to vfio-pci: map, unmap, repeat.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use vfio::align::round_up;
use vfio::pgtable;
use vfio::{Backing, BarMapping, BarSlice, Bdf, Device, DmaBuf, DmaRange, Iommu, IommuMode, IovaAllocator, Mmap, Prot};

use super::matrix::{Alignment, Cell, Memory, human};
use super::stats::{Spread, seconds};

const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;

/// What one cell measured, or why it was not measured.
#[derive(Debug, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub cell: Cell,
    /// Seconds per `VFIO_IOMMU_MAP_DMA` / `IOMMU_IOAS_MAP(_FILE)`.
    pub map: Option<Spread>,
    /// Seconds per unmap of the same range.
    pub unmap: Option<Spread>,
    /// The IOMMU page size at the first IOVA after the first map (Intel IOMMU debugfs), when
    /// the dump is small enough to read.
    pub iopte_bytes: Option<u64>,
    /// What the first map added to the process's pinned and locked memory (`VmPin` + `VmLck`).
    pub pinned_kib: Option<u64>,
    /// Why it was not measured, or stopped early.
    pub skipped: Option<String>,
}

/// How to measure.
pub struct Options {
    pub samples: usize,
    /// A cell predicted to take longer than this (all samples) is skipped, and so are the
    /// larger cells of its series.
    pub budget: Duration,
}

/// One mode's context with the device in it, and what the BAR looks like there. Fields drop
/// in order: the BAR's mmap, the device, the context.
struct Testbed {
    bar: Option<BarMapping>,
    device: Device,
    iommu: Arc<Iommu>,
    iovas: IovaAllocator,
}

impl Testbed {
    fn open(bdf: Bdf, bar: Option<u32>, mode: IommuMode) -> vfio::Result<Self> {
        let iommu = Iommu::open(mode)?;
        let device = Device::open(bdf, &iommu)?;
        let bar = match bar {
            Some(index) if mode.allows_va_mmio() => Some(device.map_bar(index)?),
            _ => None,
        };
        let iovas = IovaAllocator::new(iommu.iova_ranges()?)?;
        Ok(Self { bar, device, iommu, iovas })
    }
}

/// The memory of one cell, mapped into the process (or exported, for iommufd's BAR).
enum Source {
    Range { window: Mmap, at: usize },
    Bar { at: usize },
    Misaligned(Mmap),
    DmaBuf(DmaBuf),
}

/// Runs every cell on `bdf`'s BAR `bar` (if any), printing progress on `progress`.
pub fn measure(
    cells: &[Cell],
    bdf: Bdf,
    bar: Option<u32>,
    options: &Options,
    progress: &mut dyn Write,
) -> Vec<Measured> {
    let started = Instant::now();
    let mut out: Vec<Measured> = Vec::new();
    let mut context: Option<(IommuMode, Result<Testbed, String>)> = None;
    for (n, &cell) in cells.iter().enumerate() {
        if context.as_ref().is_none_or(|(mode, _)| *mode != cell.mode) {
            drop(context.take()); // the last mode's context closes before the next opens
            context = Some((cell.mode, Testbed::open(bdf, bar, cell.mode).map_err(|e| e.to_string())));
        }
        let ctx = context.as_mut().map(|(_, c)| c).expect("just opened");
        let measured = match ctx {
            Err(e) => skipped(cell, e.clone()),
            Ok(ctx) => match predicted(&out, cell, options.samples) {
                Some(Prediction::SeriesOverBudget) => {
                    skipped(cell, format!("a smaller cell was already over the budget of {}", secs(options.budget)))
                }
                Some(Prediction::Takes(p)) if p > options.budget => {
                    skipped(cell, format!("predicted {} over the budget of {}", secs(p), secs(options.budget)))
                }
                _ => measure_cell(ctx, bar, cell, options).unwrap_or_else(|e| skipped(cell, e.to_string())),
            },
        };
        let done = n + 1;
        let eta = started.elapsed().as_secs_f64() / done as f64 * (cells.len() - done) as f64;
        let _ = writeln!(progress, "[bench] {done}/{} {} (about {} left)", cells.len(), line(&measured), seconds(eta));
        out.push(measured);
    }
    out
}

fn secs(d: Duration) -> String {
    seconds(d.as_secs_f64())
}

fn skipped(cell: Cell, why: String) -> Measured {
    Measured { cell, map: None, unmap: None, iopte_bytes: None, pinned_kib: None, skipped: Some(why) }
}

/// One progress line: the cell and its medians.
pub fn line(m: &Measured) -> String {
    let c = &m.cell;
    let what = format!("{} {} {} {}", c.memory.name(), c.alignment.name(), c.mode.name(), human(c.size));
    match (&m.map, &m.unmap, &m.skipped) {
        (Some(map), Some(unmap), _) => {
            format!("{what}: map {} unmap {}", seconds(map.median), seconds(unmap.median))
        }
        (_, _, Some(why)) => format!("{what}: skipped ({why})"),
        _ => what,
    }
}

/// What a cell is expected to take.
enum Prediction {
    /// All its samples, scaled from the last cell of its series.
    Takes(Duration),
    /// A smaller cell of its series was skipped or stopped for the budget: a larger one only
    /// takes longer.
    SeriesOverBudget,
}

/// What the cell's samples should take, from the last cell of its series (same memory,
/// alignment and mode) scaled by size: mapping cost grows with size at worst linearly.
fn predicted(done: &[Measured], cell: Cell, samples: usize) -> Option<Prediction> {
    let last = done
        .iter()
        .rev()
        .find(|m| (m.cell.memory, m.cell.alignment, m.cell.mode) == (cell.memory, cell.alignment, cell.mode))?;
    if last.skipped.as_ref().is_some_and(|why| why.contains("budget")) {
        return Some(Prediction::SeriesOverBudget);
    }
    let per_sample = last.map.as_ref()?.median + last.unmap.as_ref()?.median;
    let scale = cell.size as f64 / last.cell.size as f64;
    Some(Prediction::Takes(Duration::from_secs_f64(per_sample * scale * samples as f64)))
}

/// `VmPin` + `VmLck` of this process, in KiB.
fn pinned_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(field("VmPin:")? + field("VmLck:")?)
}

fn prepare(ctx: &Testbed, bar: Option<u32>, cell: Cell) -> vfio::Result<Source> {
    let size = cell.size as usize;
    let off = cell.alignment.offset() as usize;
    match cell.memory {
        Memory::Bar => {
            let index = bar.ok_or_else(|| vfio::Error::Invalid("no BAR to map".into()))?;
            if !cell.mode.allows_va_mmio() {
                return Ok(Source::DmaBuf(ctx.device.export_dma_buf(index, &[BarSlice::new(0, cell.size)])?));
            }
            if off == 0 {
                return Ok(Source::Bar { at: 0 });
            }
            // The BAR again, at an address `off` past 1 GiB alignment.
            let region = ctx.device.region(index).cloned().ok_or_else(|| vfio::Error::Invalid("no BAR".into()))?;
            let mut window = Mmap::reserve(size, GIB as usize, off)?;
            window.map_shared_fixed(0, size, Prot::READ_WRITE, ctx.device.fd(), region.offset)?;
            Ok(Source::Misaligned(window))
        }
        Memory::Anonymous => {
            // 2 MiB-aligned (for THP) plus the offset.
            let len = size + off + TWO_MIB as usize;
            let window = Mmap::anonymous(len)?;
            window.advise_hugepage(0, len);
            let start = round_up(window.addr() as u64, TWO_MIB).expect("no overflow") as usize - window.addr();
            let at = start + off;
            // Faulted in first, so the map measures pinning, not zeroing.
            window.fill(at, size, 0)?;
            Ok(Source::Range { window, at })
        }
        Memory::Hugetlb2m | Memory::Hugetlb1g => {
            let backing = if cell.memory == Memory::Hugetlb2m { Backing::Hugetlb2M } else { Backing::Hugetlb1G };
            let window = Mmap::anonymous_backed(size, backing)?;
            window.fill(0, size, 0)?;
            Ok(Source::Range { window, at: 0 })
        }
    }
}

fn range<'a>(ctx: &'a Testbed, source: &'a Source, size: usize) -> Option<DmaRange<'a>> {
    match source {
        Source::Range { window, at } => window.range(*at, size),
        Source::Bar { at } => ctx.bar.as_ref()?.range(*at, size),
        Source::Misaligned(window) => window.range(0, size),
        Source::DmaBuf(_) => None,
    }
}

fn measure_cell(ctx: &mut Testbed, bar: Option<u32>, cell: Cell, options: &Options) -> vfio::Result<Measured> {
    let source = prepare(ctx, bar, cell)?;
    let iova = ctx.iovas.alloc(cell.size)?;
    let (mut maps, mut unmaps) = (Vec::new(), Vec::new());
    let (mut iopte_bytes, mut pinned) = (None, None);
    let mut skipped = None;
    let budget_start = Instant::now();
    for sample in 0..options.samples {
        let before = pinned_kib();
        let start = Instant::now();
        let mapping = match &source {
            Source::DmaBuf(buf) => ctx.iommu.map_dma_buf(buf, 0, cell.size, iova, Prot::READ_WRITE)?,
            _ => {
                let range = range(ctx, &source, cell.size as usize)
                    .ok_or_else(|| vfio::Error::Invalid("the range lies outside its memory".into()))?;
                ctx.iommu.map(range, iova)?
            }
        };
        maps.push(start.elapsed().as_secs_f64());
        if sample == 0 {
            pinned = before.zip(pinned_kib()).map(|(b, a)| a.saturating_sub(b));
            // The debugfs dump lists every leaf of the domain: read it only when it is short.
            let few_leaves =
                cell.size <= 256 << 20 || (cell.alignment == Alignment::Aligned && !cell.mode.is_type1_v1());
            if few_leaves {
                iopte_bytes = pgtable::leaf(ctx.device.bdf(), iova).ok().flatten().map(|leaf| leaf.size);
            }
        }
        let start = Instant::now();
        mapping.unmap()?;
        unmaps.push(start.elapsed().as_secs_f64());
        if budget_start.elapsed() > options.budget && sample + 1 < options.samples {
            skipped =
                Some(format!("stopped after {} samples: over the budget of {}", sample + 1, secs(options.budget)));
            break;
        }
    }
    if let Source::DmaBuf(buf) = source {
        buf.close()?;
    }
    Ok(Measured { cell, map: Spread::of(&maps), unmap: Spread::of(&unmaps), iopte_bytes, pinned_kib: pinned, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(size: u64, map: f64, unmap: f64, skipped: Option<&str>) -> Measured {
        Measured {
            cell: Cell { memory: Memory::Bar, alignment: Alignment::PageOff, mode: IommuMode::VfioType1v2, size },
            map: Spread::of(&[map]),
            unmap: Spread::of(&[unmap]),
            iopte_bytes: None,
            pinned_kib: None,
            skipped: skipped.map(str::to_owned),
        }
    }

    #[test]
    fn a_cell_is_predicted_from_the_last_of_its_series_scaled_by_size() {
        let cell =
            Cell { memory: Memory::Bar, alignment: Alignment::PageOff, mode: IommuMode::VfioType1v2, size: 4 << 30 };
        assert!(predicted(&[], cell, 5).is_none(), "nothing to go by");
        let done = [measured(1 << 30, 0.25, 0.05, None), measured(2 << 30, 0.5, 0.1, None)];
        let Some(Prediction::Takes(t)) = predicted(&done, cell, 5) else { panic!("a prediction") };
        assert!((t.as_secs_f64() - 2.0 * 0.6 * 5.0).abs() < 1e-9, "{t:?}");
        let other = Cell { mode: IommuMode::Iommufd, ..cell };
        assert!(predicted(&done, other, 5).is_none(), "another series");
        let over = [measured(2 << 30, 0.5, 0.1, Some("predicted 40 s over the budget of 30 s"))];
        assert!(matches!(predicted(&over, cell, 5), Some(Prediction::SeriesOverBudget)));
    }
}
