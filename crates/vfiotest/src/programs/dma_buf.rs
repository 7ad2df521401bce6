//! `vfio_dma_buf_test` (ours): the iommufd way to DMA-map MMIO, the positive twin of
//! `vfio_dma_mapping_mmio_test` (where every iommufd mode refuses a BAR's mmap). A BAR range is
//! exported as a dma-buf (`VFIO_DEVICE_FEATURE_DMA_BUF`) and imported into an IOAS
//! (`IOMMU_IOAS_MAP_FILE`); the IOMMU's own page table then shows at what level, and at what
//! physical address, the BAR landed. Disabling the device's memory decode revokes the dma-buf.

use std::time::Instant;

use ksft::{Case, Outcome, Test, Verdict, ensure, ensure_eq, skip};
use vfio::pci::PCI_COMMAND_MEMORY;
use vfio::pgtable;
use vfio::sysfs::{BarResource, Sysfs};
use vfio::{BarSlice, Bdf, DmaBuf, Errno, IommuMode, Probe, Prot, page_size};

use super::{DeviceFixture, check_iopte, largest, mode_variants_where};

const EXPORT: &str = "vfio_dma_buf_export";
const MAP: &str = "vfio_dma_buf_map";
const TWO_MIB: u64 = 2 << 20;

/// A device and its largest memory BAR of a page or more: the one worth exporting.
struct BufFixture {
    dev: DeviceFixture,
    /// That BAR's index and physical placement, if the device has one.
    largest: Option<(u32, BarResource)>,
}

impl ksft::Teardown for BufFixture {
    fn teardown(self) -> Outcome {
        self.dev.teardown()
    }
}

impl BufFixture {
    fn setup(dev: DeviceFixture) -> Result<Self, Verdict> {
        let page = page_size() as u64;
        let bars = memory_bars(dev.device.bdf())?.into_iter().filter(|(_, res)| res.len >= page);
        let largest = largest(bars, |(_, res)| res.len);
        Ok(Self { dev, largest })
    }

    /// The BAR to export: its index and placement; a SKIP if the device has none.
    fn bar(&self) -> Result<(u32, BarResource), Verdict> {
        match self.largest {
            Some(largest) => Ok(largest),
            None => skip!("{} has no memory BAR of a page or more", self.dev.device.bdf()),
        }
    }

    fn export(&self, ranges: &[BarSlice]) -> Result<DmaBuf, Verdict> {
        Ok(self.dev.device.export_dma_buf(self.bar()?.0, ranges)?)
    }
}

/// The device's memory BARs, by index, as sysfs places them.
fn memory_bars(bdf: Bdf) -> Result<Vec<(u32, BarResource)>, Verdict> {
    let sysfs = Sysfs::system();
    let mut bars = Vec::new();
    for bar in 0..vfio::pci::PCI_STD_NUM_BARS {
        if let Some(res) = sysfs.bar_resource(bdf, bar)?.filter(BarResource::is_memory) {
            bars.push((bar, res));
        }
    }
    Ok(bars)
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    let mut tests = ksft::fixture(
        EXPORT,
        &[("", ())],
        move |_: &()| BufFixture::setup(DeviceFixture::open_best(bdf)?),
        &[
            Case::new("export_ranges", export_ranges),
            Case::new("bad_ranges", bad_ranges),
            Case::new("sub_page_bar", sub_page_bar),
        ],
    );
    // Only an iommufd takes a file; the legacy containers map MMIO by its mmap.
    tests.extend(ksft::fixture(
        MAP,
        &mode_variants_where(IommuMode::is_iommufd),
        move |&mode| BufFixture::setup(DeviceFixture::open(bdf, mode)?),
        &[
            Case::new("map_whole_bar", map_whole_bar),
            Case::new("map_slice", map_slice),
            Case::new("map_beyond_buf", map_beyond_buf),
            Case::new("several_ranges", several_ranges),
            Case::new("revoke_on_memory_disable", revoke_on_memory_disable),
            Case::new("revoke_on_reset", revoke_on_reset),
        ],
    ));
    tests
}

/// The size the kernel gives a dma-buf: `lseek(fd, 0, SEEK_END)`.
fn buf_size(buf: &DmaBuf) -> Result<u64, Verdict> {
    rustix::fs::seek(buf.fd(), rustix::fs::SeekFrom::End(0))
        .map_err(|e| Verdict::Fail(format!("lseek({}, 0, SEEK_END): {e}", buf.describe())))
}

/// Subject: the export. One range, the first page, and (when the BAR has two pages) its first
/// and last page together: each exports, and the dma-buf's size is the sum of its ranges.
fn export_ranges(t: &mut BufFixture) -> Outcome {
    let (bar, res) = t.bar()?;
    let (page, size) = (page_size() as u64, res.len);
    let mut cases = vec![vec![BarSlice::new(0, size)], vec![BarSlice::new(0, page)]];
    if size >= 2 * page {
        cases.push(vec![BarSlice::new(0, page), BarSlice::new(size - page, page)]);
    }
    for ranges in cases {
        let buf = t.export(&ranges)?;
        let want: u64 = ranges.iter().map(|r| r.length).sum();
        ensure_eq!(buf_size(&buf)?, want, "size of a {} from {ranges:?}", buf.describe());
        println!("# exported {ranges:?} of BAR{bar}: {want} bytes");
        buf.close()?;
    }
    Ok(())
}

/// Subject: the refusals. Each malformed request is refused with the errno 7.3's
/// `vfio_pci_core_feature_dma_buf()` gives it, and leaves no dma-buf behind. A kernel without
/// the feature refuses everything with ENOTTY: a SKIP, as for `export_ranges`.
fn bad_ranges(t: &mut BufFixture) -> Outcome {
    let (bar, res) = t.bar()?;
    let (page, size) = (page_size() as u64, res.len);
    let absent = (0..vfio::pci::PCI_STD_NUM_BARS).find(|&i| t.dev.device.region(i).is_none_or(|r| r.size == 0));
    let mut cases: Vec<(&str, u32, Vec<BarSlice>, Errno)> = vec![
        ("no ranges", bar, vec![], Errno::INVAL),
        ("an empty range", bar, vec![BarSlice::new(0, 0)], Errno::INVAL),
        ("an unaligned length", bar, vec![BarSlice::new(0, 1)], Errno::INVAL),
        ("a range past the BAR's end", bar, vec![BarSlice::new(0, size + page)], Errno::INVAL),
        ("an offset that overflows the BAR's address", bar, vec![BarSlice::new(!(page - 1), page)], Errno::OVERFLOW),
        ("the ROM (not a BAR)", vfio::pci::VFIO_PCI_ROM_REGION_INDEX, vec![BarSlice::new(0, page)], Errno::NODEV),
    ];
    if size >= 2 * page {
        cases.push(("an unaligned offset", bar, vec![BarSlice::new(1, page)], Errno::INVAL));
    }
    if let Some(absent) = absent {
        cases.push(("a BAR the device lacks", absent, vec![BarSlice::new(0, page)], Errno::NODEV));
    }
    for (what, index, ranges, errno) in cases {
        match t.dev.device.export_dma_buf(index, &ranges) {
            Ok(buf) => ensure!(false, "{what} ({ranges:?} of region {index}) was exported: {}", buf.describe()),
            Err(e) if e.is_unsupported() => return Err(e.into()),
            Err(e) => {
                ensure_eq!(e.errno(), Some(errno), "errno for {what}: {e}");
                println!("# {what}: {e}");
            }
        }
    }
    Ok(())
}

/// Subject: the refusal. A memory BAR smaller than a page has no page-aligned range to export:
/// a dma-buf is pages. A kernel without the feature (ENOTTY) is a SKIP.
fn sub_page_bar(t: &mut BufFixture) -> Outcome {
    let page = page_size() as u64;
    let bdf = t.dev.device.bdf();
    let small: Vec<(u32, BarResource)> = memory_bars(bdf)?.into_iter().filter(|(_, r)| r.len < page).collect();
    if small.is_empty() {
        skip!("{bdf} has no memory BAR smaller than a page");
    }
    for (bar, res) in small {
        match t.dev.device.export_dma_buf(bar, &[BarSlice::new(0, page)]) {
            Ok(buf) => ensure!(false, "BAR{bar} ({:#x} bytes) was exported as a page: {}", res.len, buf.describe()),
            Err(e) if e.is_unsupported() => return Err(e.into()),
            Err(e) => {
                ensure_eq!(e.errno(), Some(Errno::INVAL), "{e}");
                println!("# BAR{bar} of {:#x} bytes: {e}", res.len);
            }
        }
    }
    Ok(())
}

/// How many bytes from a mapping's start may share its first leaf in `mode`: all `len`, but
/// for iommufd's TYPE1 v1 emulation, which disables large IOPTEs so that an unmap can cut any
/// page out of an area as v1 allows (vfio_compat.c); legacy v1 gets them.
fn leaf_span(mode: IommuMode, len: u64) -> u64 {
    match mode.is_type1_v1() {
        true => page_size() as u64,
        false => len,
    }
}

/// Checks that `iova` is in no leaf of the IOMMU page table: a SKIP where the machine can't
/// show its page tables, since then nothing about the IOMMU was checked.
fn ensure_unmapped(t: &BufFixture, iova: u64, when: &str) -> Outcome {
    let found = pgtable::leaf(t.dev.device.bdf(), iova)?;
    ensure!(found.is_none(), "IOVA {iova:#x} is still in the IOMMU page table {when}: {found:x?}");
    Ok(())
}

/// `check_iopte` for this fixture's device; the leaf's size.
fn ensure_leaf(t: &BufFixture, iova: u64, span: u64, phys: u64) -> Result<u64, ksft::Verdict> {
    check_iopte(t.dev.device.bdf(), iova, span, phys)
}

/// Subject: the IOPTEs a dma-buf import makes (a SKIP without a page-table reader). The whole
/// BAR maps in one call, in the largest IOPTEs the IOMMU has that fit (Intel: 128 GiB in 128
/// PDPE leaves; AMD v1: leaves as large as the addresses' alignment allows), pointing at the
/// BAR: its first and last leaves are checked. The VA path takes minutes when it must go 4 KiB
/// at a time. iommufd's v1 emulation maps 4 KiB IOPTEs only, so there the first
/// 2 MiB stand for the BAR (a 2 MiB leaf anywhere else): 128 GiB would be 32 M PTEs, about a
/// minute under TCG, and a debugfs dump of 32 M lines.
fn map_whole_bar(t: &mut BufFixture) -> Outcome {
    let (_, res) = t.bar()?;
    let mode = t.dev.iommu.mode();
    let len = match mode.is_type1_v1() {
        true => res.len.min(TWO_MIB),
        false => res.len,
    };
    let buf = t.export(&[BarSlice::new(0, len)])?;
    let iova = t.dev.iova.alloc(len)?;
    let start = Instant::now();
    let mapping = t.dev.iommu.map_dma_buf(&buf, 0, len, iova, Prot::READ_WRITE)?;
    let took = start.elapsed();
    println!(
        "# {} ({len:#x} bytes at {:#x}) mapped at IOVA {iova:#x} in {:.3} ms",
        buf.describe(),
        res.start,
        took.as_secs_f64() * 1e3
    );
    let leaf = ensure_leaf(t, iova, leaf_span(mode, len), res.start)?;
    ensure_leaf(t, iova + len - leaf, leaf, res.start + len - leaf)?;
    ensure_eq!(mapping.unmap()?, len, "bytes unmapped");
    ensure_unmapped(t, iova, "after unmap")?;
    Ok(buf.close()?)
}

/// Subject: the IOPTE (a SKIP without a page-table reader). `IOMMU_IOAS_MAP_FILE`'s `start`
/// picks a page inside the dma-buf: the IOPTE points at that page of the BAR.
fn map_slice(t: &mut BufFixture) -> Outcome {
    let (bar, res) = t.bar()?;
    let page = page_size() as u64;
    if res.len < 2 * page {
        skip!("BAR{bar} has one page: no slice after the first");
    }
    let buf = t.export(&[BarSlice::new(0, res.len)])?;
    let at = res.len / 2;
    let iova = t.dev.iova.alloc(page)?;
    let mapping = t.dev.iommu.map_dma_buf(&buf, at, page, iova, Prot::READ_WRITE)?;
    ensure_leaf(t, iova, page, res.start + at)?;
    ensure_eq!(mapping.unmap()?, page, "bytes unmapped");
    Ok(buf.close()?)
}

/// Subject: the refusal. A map that runs past the dma-buf's end is refused (EINVAL), and the
/// IOAS holds nothing at its IOVA afterwards (an unmap there finds nothing), which needs no
/// page-table reader.
fn map_beyond_buf(t: &mut BufFixture) -> Outcome {
    let page = page_size() as u64;
    let buf = t.export(&[BarSlice::new(0, page)])?;
    let iova = t.dev.iova.alloc(2 * page)?;
    match t.dev.iommu.map_dma_buf(&buf, 0, 2 * page, iova, Prot::READ_WRITE) {
        Ok(mapping) => {
            ensure!(false, "a 2-page map of a 1-page {} was accepted at {:#x}", buf.describe(), mapping.iova())
        }
        Err(e) => ensure_eq!(e.errno(), Some(Errno::INVAL), "{e}"),
    }
    // Native iommufd says ENOENT for a range with no area; its container emulation unmaps 0
    // bytes (since 6.18).
    match t.dev.iommu.unmap(iova, 2 * page) {
        Ok(bytes) => ensure_eq!(bytes, 0, "bytes unmapped after a refused map"),
        Err(e) => ensure_eq!(e.errno(), Some(Errno::NOENT), "unmap after a refused map: {e}"),
    }
    Ok(buf.close()?)
}

/// Subject: the refusal. A dma-buf of several ranges exports, but 7.3's iommufd takes only single-range VFIO
/// dma-bufs (`vfio_pci_dma_buf_iommufd_map()`: EOPNOTSUPP).
fn several_ranges(t: &mut BufFixture) -> Outcome {
    let (bar, res) = t.bar()?;
    let (page, size) = (page_size() as u64, res.len);
    if size < 2 * page {
        skip!("BAR{bar} has one page: no second range");
    }
    let buf = t.export(&[BarSlice::new(0, page), BarSlice::new(size - page, page)])?;
    let iova = t.dev.iova.alloc(2 * page)?;
    match t.dev.iommu.map_dma_buf(&buf, 0, 2 * page, iova, Prot::READ_WRITE) {
        Ok(mapping) => ensure!(false, "a 2-range {} was mapped at {:#x}", buf.describe(), mapping.iova()),
        Err(e) => {
            ensure_eq!(e.errno(), Some(Errno::OPNOTSUPP), "{e}");
            println!("# {e}");
        }
    }
    Ok(buf.close()?)
}

/// Subject: iommufd's IOPTEs of a revoked dma-buf, read from the IOMMU's page table (a SKIP
/// without a reader: the CPU's SIGBUS alone is vfio-pci's zap, not iommufd's revoke).
/// Clearing the command register's memory-enable bit revokes the device's dma-bufs, and
/// iommufd then removes the IOPTEs it made from them. In 7.3 the revoke is final for that
/// mapping: setting the bit again un-revokes the dma-buf, but iommufd does not map the area
/// back. The area itself stays until it is unmapped, and the dma-buf maps afresh. Meanwhile the
/// CPU's mmap of the BAR raises SIGBUS, as vfio-pci zaps it too.
fn revoke_on_memory_disable(t: &mut BufFixture) -> Outcome {
    let (bar, res) = t.bar()?;
    let page = page_size() as u64;
    let buf = t.export(&[BarSlice::new(0, page)])?;
    let iova = t.dev.iova.alloc(page)?;
    let mapping = t.dev.iommu.map_dma_buf(&buf, 0, page, iova, Prot::READ_WRITE)?;
    ensure_leaf(t, iova, page, res.start)?;

    t.dev.device.update_command(0, PCI_COMMAND_MEMORY)?;
    let cpu = probe_bar(t, bar)?;
    let unmapped = ensure_unmapped(t, iova, "once memory decode is off");
    t.dev.device.update_command(PCI_COMMAND_MEMORY, 0)?;
    unmapped?;
    if let Some(cpu) = cpu {
        ensure_eq!(cpu, Probe::BUS_ERROR, "a CPU read of BAR{bar}'s mmap with memory decode off");
    }
    ensure_unmapped(t, iova, "once memory decode is back on (7.3 does not map a revoked area again)")?;
    ensure_eq!(mapping.unmap()?, page, "bytes unmapped from the revoked area");

    let again = t.dev.iommu.map_dma_buf(&buf, 0, page, iova, Prot::READ_WRITE)?;
    ensure_leaf(t, iova, page, res.start)?;
    ensure_eq!(again.unmap()?, page, "bytes unmapped");
    Ok(buf.close()?)
}

/// A CPU read of BAR `bar`'s mmap in a child process, if the BAR is mmapped.
fn probe_bar(t: &BufFixture, bar: u32) -> Result<Option<Probe>, Verdict> {
    let Some(mapping) = t.dev.bars.iter().find(|b| b.index() == bar) else { return Ok(None) };
    let probe = mapping.window().probe_u32(0)?;
    Ok(Some(probe))
}

/// Subject: iommufd's IOPTEs across a reset (a SKIP without a page-table reader). A reset
/// revokes the device's dma-bufs as memory decode does (vfio-pci zaps and revokes
/// around the reset, then un-revokes): the IOPTEs iommufd made from them are gone for good.
fn revoke_on_reset(t: &mut BufFixture) -> Outcome {
    let (_, res) = t.bar()?;
    if !t.dev.device.info().can_reset() {
        skip!("Device does not support reset");
    }
    let page = page_size() as u64;
    let buf = t.export(&[BarSlice::new(0, page)])?;
    let iova = t.dev.iova.alloc(page)?;
    let mapping = t.dev.iommu.map_dma_buf(&buf, 0, page, iova, Prot::READ_WRITE)?;
    ensure_leaf(t, iova, page, res.start)?;
    t.dev.device.reset()?;
    ensure_unmapped(t, iova, "after a device reset")?;
    ensure_eq!(mapping.unmap()?, page, "bytes unmapped from the revoked area");
    Ok(buf.close()?)
}
