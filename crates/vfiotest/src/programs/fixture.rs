//! The device fixture the programs share: a device opened in one IOMMU mode with its BARs
//! mapped, as upstream's `vfio_pci_device_init()` leaves it, and its checked teardown.

use std::sync::Arc;

use ksft::{Outcome, Verdict, ensure};
use vfio::driver::{self, DRIVER_MEMORY, DmaDriver};
use vfio::pci::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX};
use vfio::{Backing, BarMapping, Bdf, Device, DmaBuffer, Feature, Iommu, IommuMode, IovaAllocator, Mmap};

/// Opens `bdf` into `iommu` and maps every mmappable BAR, with the checks upstream's
/// `vfio_pci_device_init()` makes for every test: VFIO never offers config space for mmap(),
/// the MSI and MSI-X IRQ infos can be read, and every BAR's size is a power of two (as PCI
/// defines it; a sub-page BAR included).
pub fn open_with_bars(bdf: Bdf, iommu: &Arc<Iommu>) -> Result<(Device, Vec<BarMapping>), Verdict> {
    // Only a run that requires remapping asks; nothing else could show it missing.
    vfio::feature::ensure_required_irq_remapping()?;
    let device = Device::open(bdf, iommu)?;
    let config = device
        .region(VFIO_PCI_CONFIG_REGION_INDEX)
        .ok_or_else(|| Verdict::Fail(format!("{bdf} has no config space region")))?;
    ensure!(!config.mmappable(), "PCI config space of {bdf} should not support mmap()");
    device.irq_info(VFIO_PCI_MSI_IRQ_INDEX)?;
    device.irq_info(VFIO_PCI_MSIX_IRQ_INDEX)?;
    for bar in device.bars() {
        ensure!(bar.size.is_power_of_two(), "BAR{} of {bdf} is {:#x} bytes, not a power of two", bar.index, bar.size);
    }
    let mappable: Vec<u32> = device.bars().filter(|r| r.mmappable()).map(|r| r.index).collect();
    let bars = mappable.into_iter().map(|index| device.map_bar(index)).collect::<vfio::Result<Vec<_>>>()?;
    Ok((device, bars))
}

/// Upstream's `vfio_pci_device_cleanup()`: every BAR unmapped, then the device closed, each
/// checked.
pub fn close_with_bars(device: Device, bars: Vec<BarMapping>) -> Outcome {
    for bar in bars {
        bar.unmap()?;
    }
    Ok(device.close()?)
}

/// A device opened in one IOMMU mode with every mmappable BAR mapped, as upstream's
/// `vfio_pci_device_init()` leaves it. Fields drop in order: BARs, device, IOMMU.
pub struct DeviceFixture {
    pub bars: Vec<BarMapping>,
    pub device: Device,
    pub iommu: Arc<Iommu>,
    pub iova: IovaAllocator,
}

/// Upstream's `vfio_pci_device_cleanup()` and `iommu_cleanup()`: every BAR unmapped, the
/// device and then the IOMMU context closed, each checked. The context must be free by then:
/// a mapping or device still holding it fails the test.
impl ksft::Teardown for DeviceFixture {
    fn teardown(self) -> Outcome {
        for bar in self.bars {
            bar.unmap()?;
        }
        ensure_nothing_mapped(&self.iommu)?;
        self.device.close()?;
        Ok(self.iommu.close()?)
    }
}

/// Fails the test if its context still maps anything once every mapping it made should be
/// gone (and unmaps it, so nothing outlives the test): the kernel's own count, asked while the
/// devices are still attached (a legacy container forgets its mappings with its last group).
pub fn ensure_nothing_mapped(iommu: &Iommu) -> Outcome {
    let left = iommu.unmap_all()?;
    ensure!(left == 0, "{left:#x} bytes were still mapped in the {} context after the test", iommu.mode());
    Ok(())
}

impl DeviceFixture {
    /// Opens `bdf` in the first mode of [`IommuMode::PREFERENCE`] that this kernel and device
    /// offer, for programs whose subject is not the mode. Upstream uses native iommufd and fails
    /// without it; here a fallback is printed, and only if no mode works is it a SKIP.
    pub fn open_best(bdf: Bdf) -> Result<Self, Verdict> {
        let mut missing = Vec::new();
        for mode in IommuMode::PREFERENCE {
            match Self::open(bdf, mode) {
                Ok(fixture) => {
                    if !missing.is_empty() {
                        println!("Using IOMMU mode {mode}: {}", missing.join("; "));
                    }
                    return Ok(fixture);
                }
                Err(Verdict::Skip(reason)) => missing.push(format!("{mode}: {reason}")),
                Err(fail) => return Err(fail),
            }
        }
        Err(Verdict::Skip(format!("no IOMMU mode works here ({})", missing.join("; "))))
    }

    /// Opens `bdf` in `mode`; a mode the kernel lacks is a SKIP.
    pub fn open(bdf: Bdf, mode: IommuMode) -> Result<Self, Verdict> {
        let iommu = Iommu::open(mode)?;
        let (device, bars) = open_with_bars(bdf, &iommu)?;
        let iova = IovaAllocator::new(iommu.iova_ranges()?)?;
        Ok(Self { bars, device, iommu, iova })
    }
}

/// The first of the largest `items` by `size`: how a program picks "the largest BAR", the
/// first of equal ones as upstream's loops do.
pub fn largest<T>(items: impl IntoIterator<Item = T>, size: impl Fn(&T) -> u64) -> Option<T> {
    items.into_iter().fold(None, |best: Option<T>, item| match &best {
        Some(b) if size(b) >= size(&item) => best,
        _ => Some(item),
    })
}

/// A device's DMA engine for the tests: its userspace driver, brought up with memory of its
/// own in the device's IOMMU context.
pub struct Engine {
    /// The driver, initialized.
    pub driver: Box<dyn DmaDriver>,
    memory: Arc<DmaBuffer>,
}

impl Engine {
    /// Probes `device`'s driver and brings it up with [`DRIVER_MEMORY`] of memory mapped at
    /// `iova` in `iommu`; `Ok(None)` if no driver knows the device.
    ///
    /// # Errors
    /// The mapping or the driver's bring-up failed.
    pub fn start(device: &Device, iommu: &Arc<Iommu>, iova: u64) -> Result<Option<Self>, Verdict> {
        let Some(mut driver) = driver::probe(device) else { return Ok(None) };
        let memory = Arc::new(DmaBuffer::new(iommu, iova, DRIVER_MEMORY)?);
        driver.init(device, Arc::clone(&memory))?;
        Ok(Some(Self { driver, memory }))
    }

    /// The driver's memory, to bring it up again.
    pub fn memory(&self) -> Arc<DmaBuffer> {
        Arc::clone(&self.memory)
    }

    /// Upstream's driver teardown: the device stops its DMA before its memory goes, then the
    /// memory leaves the IOMMU and is unmapped, each step checked.
    pub fn stop(mut self, device: &Device) -> Outcome {
        self.driver.remove(device)?;
        drop(self.driver);
        let memory = Arc::try_unwrap(self.memory)
            .map_err(|_| Verdict::Fail("the driver kept its memory after remove()".into()))?;
        Ok(memory.close()?)
    }
}

/// `size` bytes of anonymous memory of `backing`. Hugetlb pages are a boot-time reservation:
/// where the mmap fails, the machine has none to give, so the test can't run here (SKIP, or
/// FAIL under `--require`), with upstream's reason word for word (its trailing newline too).
pub fn anonymous_memory(size: usize, backing: Backing) -> Result<Mmap, Verdict> {
    match Mmap::anonymous_backed(size, backing) {
        Err(e) if backing != Backing::Normal && e.errno().is_some() => {
            let errno = e.errno().unwrap_or(vfio::Errno::NOMEM);
            let feature = match backing {
                Backing::Hugetlb1G => Feature::Hugetlb1G,
                _ => Feature::Hugetlb2M,
            };
            let reason = format!("mmap() failed: {} ({})\n", vfio::Errnum(errno).strerror(), errno.raw_os_error());
            Err(vfio::Error::unsupported(feature, reason).into())
        }
        memory => Ok(memory?),
    }
}

#[cfg(test)]
mod tests {
    use super::largest;

    #[test]
    fn the_first_of_the_largest_wins() {
        assert_eq!(largest([(0, 4096u64), (2, 1 << 30), (3, 1 << 30)], |&(_, s)| s), Some((2, 1 << 30)));
        assert_eq!(largest(Vec::<(u32, u64)>::new(), |&(_, s)| s), None);
        assert_eq!(largest([(5, 16u64)], |&(_, s)| s), Some((5, 16)));
    }
}
