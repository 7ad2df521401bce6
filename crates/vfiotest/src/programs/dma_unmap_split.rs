//! `vfio_dma_unmap_split_test` (ours): what an unmap that cuts into a mapping does, mode by
//! mode. One mapping of three pages; then an unmap of its middle page, or of its first page.
//! The uAPI documents TYPE1 v1 as reporting what it really unmapped (nothing for a cut that
//! starts inside a mapping, the whole mapping for one that covers its start) and v2 as
//! refusing to bisect a mapping. iommufd's container emulation of v1 cuts the mapping
//! instead, unmapping exactly the range asked for; its v2 and native iommufd refuse with
//! ENOENT. Each test asserts what Linux 7.3 does and what is left mapped afterwards.

use ksft::{Case, Outcome, Test, ensure_eq};
use vfio::{Bdf, Errno, IommuMode, Mmap, page_size};

use super::{DeviceFixture, mode_variants};

/// The three pages' memory, then the device and context.
struct SplitFixture {
    dev: DeviceFixture,
    memory: Mmap,
}

impl ksft::Teardown for SplitFixture {
    fn teardown(self) -> Outcome {
        self.dev.teardown()?;
        Ok(self.memory.unmap()?)
    }
}

/// What an unmap returns: the bytes unmapped, or the errno.
type Answer = Result<u64, Errno>;

/// Maps the three pages, unmaps `[first page + cut, .. + one page)`, checks the answer, then
/// unmaps the whole range and checks how much was still mapped.
fn cut(t: &mut SplitFixture, cut_page: u64, expect: fn(IommuMode, u64) -> (Answer, u64)) -> Outcome {
    let page = page_size() as u64;
    let iova = t.dev.iova.alloc(3 * page)?;
    let mapping = t.dev.iommu.map(t.memory.whole(), iova)?;
    let mode = t.dev.iommu.mode();
    let (answer, left) = expect(mode, page);
    let got = t.dev.iommu.unmap(iova + cut_page * page, page).map_err(|e| e.errno().unwrap_or(Errno::IO));
    let said = got.map_or_else(|e| vfio::Errnum(e).to_string(), |n| format!("{n:#x} bytes unmapped"));
    println!("{mode}: the unmap of page {cut_page} of 3: {said}");
    ensure_eq!(got, answer, "the unmap of page {cut_page} of a 3-page mapping in {mode}");
    let remaining = mapping.unmap()?;
    ensure_eq!(remaining, left, "bytes still mapped after it, in {mode}");
    Ok(())
}

fn unmap_middle(t: &mut SplitFixture) -> Outcome {
    cut(t, 1, |mode, page| match mode {
        // v1: a cut starting inside a mapping unmaps nothing, successfully.
        IommuMode::VfioType1 => (Ok(0), 3 * page),
        // v2: it would bisect the mapping.
        IommuMode::VfioType1v2 => (Err(Errno::INVAL), 3 * page),
        // iommufd's v1 emulation cuts the area and unmaps exactly the page.
        IommuMode::IommufdCompatType1 => (Ok(page), 2 * page),
        IommuMode::IommufdCompatType1v2 | IommuMode::Iommufd => (Err(Errno::NOENT), 3 * page),
    })
}

fn unmap_head(t: &mut SplitFixture) -> Outcome {
    cut(t, 0, |mode, page| match mode {
        // v1: a cut covering a mapping's first IOVA unmaps the whole mapping, and says so.
        IommuMode::VfioType1 => (Ok(3 * page), 0),
        IommuMode::VfioType1v2 => (Err(Errno::INVAL), 3 * page),
        IommuMode::IommufdCompatType1 => (Ok(page), 2 * page),
        IommuMode::IommufdCompatType1v2 | IommuMode::Iommufd => (Err(Errno::NOENT), 3 * page),
    })
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    ksft::fixture(
        "vfio_dma_unmap_split",
        &mode_variants(),
        move |&mode: &IommuMode| {
            let dev = DeviceFixture::open(bdf, mode)?;
            let memory = Mmap::anonymous(3 * page_size())?;
            Ok(SplitFixture { dev, memory })
        },
        &[Case::new("unmap_middle", unmap_middle), Case::new("unmap_head", unmap_head)],
    )
}
