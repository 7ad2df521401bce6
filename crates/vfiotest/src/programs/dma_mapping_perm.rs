//! `vfio_dma_mapping_perm_test` (ours): the device's access to a DMA mapping can't exceed the
//! process's. Memory the process maps read-only (anonymous memory, or a BAR's mmap) must be
//! refused when asked for with write access, and mapped when asked for read-only, in every
//! mode. The kernel pins the pages for the device; pinning for write needs a writable mapping.

use ksft::{Case, Outcome, Test, Verdict, ensure, skip};
use vfio::{Bdf, DmaRange, Errno, IommuMode, Mmap, Prot, page_size};

use super::{DeviceFixture, largest, mode_variants_by};

/// Where the read-only memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Anonymous memory, `mprotect`ed read-only.
    Anonymous,
    /// The first page(s) of the device's largest BAR mmap, `mprotect`ed read-only.
    Bar,
}

#[derive(Debug, Clone, Copy)]
struct PermVariant {
    mode: IommuMode,
    source: Source,
}

/// At most this much of a BAR: enough for a huge IOPTE's worth, cheap to unmap.
const BAR_SLICE: usize = 2 << 20;

struct PermFixture {
    // Field order is drop order: the anonymous memory after nothing maps it.
    anonymous: Option<Mmap>,
    /// Index into `dev.bars` and the length of the read-only slice.
    bar: Option<(usize, usize)>,
    dev: DeviceFixture,
}

impl ksft::Teardown for PermFixture {
    fn teardown(self) -> Outcome {
        if let Some(memory) = self.anonymous {
            memory.unmap()?;
        }
        self.dev.teardown()
    }
}

impl PermFixture {
    fn setup(bdf: Bdf, variant: PermVariant) -> Result<Self, Verdict> {
        let page = page_size();
        match variant.source {
            Source::Anonymous => {
                let dev = DeviceFixture::open(bdf, variant.mode)?;
                let memory = Mmap::anonymous(page)?;
                memory.protect(0, page, Prot::READ_ONLY)?;
                Ok(Self { anonymous: Some(memory), bar: None, dev })
            }
            Source::Bar => {
                if !variant.mode.allows_va_mmio() {
                    skip!("{} maps MMIO only from a dma-buf, never by its VA", variant.mode);
                }
                let dev = DeviceFixture::open(bdf, variant.mode)?;
                let Some((index, bar)) = largest(dev.bars.iter().enumerate(), |(_, b)| b.region().size) else {
                    skip!("No mappable BAR found on device {bdf}");
                };
                let area =
                    bar.areas().first().copied().ok_or_else(|| Verdict::Fail("a mapped BAR without areas".into()))?;
                let len = (area.size as usize).div_ceil(page).saturating_mul(page).min(BAR_SLICE);
                bar.window().protect(area.offset as usize, len, Prot::READ_ONLY)?;
                Ok(Self { anonymous: None, bar: Some((index, len)), dev })
            }
        }
    }

    /// The read-only memory, for DMA mapping.
    fn memory(&self) -> Result<DmaRange<'_>, Verdict> {
        let range = match (&self.anonymous, self.bar) {
            (Some(memory), _) => Some(memory.whole()),
            (None, Some((index, len))) => {
                let bar = &self.dev.bars[index];
                let offset = bar.areas().first().map_or(0, |a| a.offset as usize);
                bar.range(offset, len)
            }
            (None, None) => None,
        };
        range.ok_or_else(|| Verdict::Fail("the read-only range is outside its mapping".into()))
    }
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    let sources = [("anonymous", Source::Anonymous), ("bar", Source::Bar)];
    let names = mode_variants_by(&sources, |mode, source| PermVariant { mode, source });
    let variants: Vec<(&str, PermVariant)> = names.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    ksft::fixture(
        "vfio_dma_map_readonly",
        &variants,
        move |&variant: &PermVariant| PermFixture::setup(bdf, variant),
        &[Case::new("write_refused", write_refused), Case::new("read_allowed", read_allowed)],
    )
}

/// Asking for write access to read-only memory is refused, with EFAULT: the pin for write
/// fails, not the request's shape.
fn write_refused(t: &mut PermFixture) -> Outcome {
    let iova = t.dev.iova.alloc(t.memory()?.len() as u64)?;
    match t.dev.iommu.map_with(t.memory()?, iova, Prot::READ_WRITE) {
        Ok(mapping) => {
            mapping.unmap()?;
            ensure!(false, "read-only memory was DMA-mapped with write access at IOVA {iova:#x}");
        }
        Err(e) => {
            println!("Refused as it must be: {e}");
            ensure!(e.errno() == Some(Errno::FAULT), "expected EFAULT for write access to read-only memory, got {e}");
        }
    }
    Ok(())
}

/// Read-only access to the same memory is granted, and unmaps whole.
fn read_allowed(t: &mut PermFixture) -> Outcome {
    let len = t.memory()?.len() as u64;
    let iova = t.dev.iova.alloc(len)?;
    let mapping = t.dev.iommu.map_with(t.memory()?, iova, Prot::READ_ONLY)?;
    println!("Mapped {len:#x} read-only bytes at IOVA {iova:#x}");
    let unmapped = mapping.unmap()?;
    ensure!(unmapped == len, "unmapped {unmapped:#x} of {len:#x} bytes");
    Ok(())
}
