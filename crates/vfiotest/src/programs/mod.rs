//! The test programs, named as upstream's, and the fixtures they share.

mod bar_mapping;
mod container_race;
mod dma_buf;
mod dma_mapping;
mod dma_mapping_mmio;
mod dma_mapping_perm;
mod dma_unmap_split;
mod init_perf;
mod iommufd_setup;
mod p2p_dma;
mod pci_device;
mod pci_driver;
mod sriov_uapi;

use ksft::{Outcome, Program, Refusal, Tap, Test, Verdict, ensure, ensure_eq};
use std::any::Any;
use std::sync::Arc;
use vfio::pci::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX};
use vfio::{BarMapping, Bdf, Device, Iommu, IommuMode, IovaAllocator, pgtable};

/// The kselftest collection the programs belong to, as upstream's (`selftests: vfio: ...`).
pub const COLLECTION: &str = "vfio";

/// A test program: upstream's name and how to build its tests.
pub struct ProgramSpec {
    /// The upstream name, e.g. `vfio_dma_mapping_mmio_test`.
    pub name: &'static str,
    /// Builds the tests.
    pub tests: Devices,
    /// For per-device programs: what runs once before the tests on a device (see
    /// [`ksft::Prologue`]).
    pub prologue: Option<PerDevicePrologue>,
    /// Its time goes mostly to waiting on devices and the kernel's own delays (DMA timers,
    /// link-up, VF enable, threads meeting), not to computing: an emulated machine runs it far
    /// faster with a guest clock that skips idle time.
    pub waits: bool,
}

impl ProgramSpec {
    /// The spec of a program in a run, whose name may carry a BDF (`name 0000:00:03.0`).
    pub fn of(program: &str) -> Option<&'static ProgramSpec> {
        let name = program.split(' ').next().unwrap_or(program);
        PROGRAMS.iter().find(|p| p.name == name)
    }
}

/// A program's prologue for one device.
pub type PerDevicePrologue = fn(Bdf, &mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal>;

/// Which devices a program's tests take.
pub enum Devices {
    /// One device: the program runs once per device.
    Each(fn(Bdf) -> Vec<Test>),
    /// All devices together, in one run.
    All(fn(&[Bdf]) -> Vec<Test>),
}

/// Every program, in the order `vfiotest run` runs them.
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        name: "vfio_dma_mapping_test",
        tests: Devices::Each(dma_mapping::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec {
        name: "vfio_dma_mapping_mmio_test",
        tests: Devices::Each(dma_mapping_mmio::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec {
        name: "vfio_iommufd_setup_test",
        tests: Devices::Each(iommufd_setup::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec { name: "vfio_pci_device_test", tests: Devices::Each(pci_device::tests), prologue: None, waits: false },
    ProgramSpec {
        name: "vfio_pci_driver_test",
        tests: Devices::Each(pci_driver::tests),
        prologue: Some(pci_driver::prologue),
        waits: true,
    },
    ProgramSpec {
        name: "vfio_pci_sriov_uapi_test",
        tests: Devices::Each(sriov_uapi::tests),
        prologue: Some(sriov_uapi::prologue),
        waits: true,
    },
    ProgramSpec {
        name: "vfio_pci_device_init_perf_test",
        tests: Devices::All(init_perf::tests),
        prologue: None,
        waits: true,
    },
    ProgramSpec {
        name: "vfio_dma_mapping_perm_test",
        tests: Devices::Each(dma_mapping_perm::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec {
        name: "vfio_dma_unmap_split_test",
        tests: Devices::Each(dma_unmap_split::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec { name: "vfio_dma_buf_test", tests: Devices::Each(dma_buf::tests), prologue: None, waits: false },
    ProgramSpec {
        name: "vfio_bar_mapping_test",
        tests: Devices::Each(bar_mapping::tests),
        prologue: None,
        waits: false,
    },
    ProgramSpec { name: "vfio_p2p_dma_test", tests: Devices::All(p2p_dma::tests), prologue: None, waits: true },
    ProgramSpec {
        name: "vfio_container_race_test",
        tests: Devices::All(container_race::tests),
        prologue: None,
        waits: true,
    },
];

/// The programs to run: those named in `only` (all if it is empty), in catalogue order.
/// Per-device programs run once for each device; with several devices their names get the BDF
/// appended.
pub fn catalogue(only: &[&str], bdfs: &[Bdf]) -> Vec<Program> {
    let mut programs = Vec::new();
    for spec in PROGRAMS.iter().filter(|p| only.is_empty() || only.contains(&p.name)) {
        match spec.tests {
            Devices::Each(tests) => {
                for &bdf in bdfs {
                    let name = match bdfs.len() {
                        1 => spec.name.to_owned(),
                        _ => format!("{} {bdf}", spec.name),
                    };
                    let program = Program::new(name, tests(bdf));
                    programs.push(match spec.prologue {
                        Some(prologue) => program.with_prologue(move |output| prologue(bdf, output)),
                        None => program,
                    });
                }
            }
            Devices::All(tests) => {
                let name = spec.name.to_owned();
                programs.push(Program::new(name, tests(bdfs)));
            }
        }
    }
    programs
}

/// The variants that replicate a fixture across every IOMMU mode.
pub fn mode_variants() -> Vec<(&'static str, IommuMode)> {
    mode_variants_where(|_| true)
}

/// [`mode_variants`] for the modes a fixture applies to, in upstream's order.
pub fn mode_variants_where(applies: impl Fn(IommuMode) -> bool) -> Vec<(&'static str, IommuMode)> {
    IommuMode::ALL.iter().filter(|&&m| applies(m)).map(|&m| (m.name(), m)).collect()
}

/// Upstream's `FIXTURE_VARIANT_ADD_ALL_IOMMU_MODES(suffix, ...)` once per suffix, in order:
/// every mode with the first suffix, then every mode with the next; each named
/// `<mode>_<suffix>` and built by `make(mode, parameter)`.
pub fn mode_variants_by<T: Copy, V>(suffixes: &[(&str, T)], make: impl Fn(IommuMode, T) -> V) -> Vec<(String, V)> {
    suffixes
        .iter()
        .flat_map(|&(suffix, parameter)| IommuMode::ALL.iter().map(move |&mode| (mode, suffix, parameter)))
        .map(|(mode, suffix, parameter)| (format!("{}_{suffix}", mode.name()), make(mode, parameter)))
        .collect()
}

/// The IOMMU's page table for `bdf` must map `iova` with one `leaf`-byte page at physical
/// address `phys`, as the Intel IOMMU debugfs shows it. Without that debugfs it is a SKIP with
/// the reason (a FAIL where the page tables are required): a test whose subject is the IOPTE
/// checked nothing without it.
pub fn check_iopte(bdf: Bdf, iova: u64, leaf: u64, phys: u64) -> Outcome {
    let reader = pgtable::PageTableReader::for_device(bdf)?;
    let found = reader.leaf(bdf, iova)?;
    let found =
        found.ok_or_else(|| Verdict::Fail(format!("IOVA {iova:#x} is not in {}", reader.source(bdf).display())))?;
    ensure_eq!(found.size, leaf, "IOMMU page size at IOVA {iova:#x} ({})", found.walk);
    ensure_eq!(found.phys, phys, "physical address mapped at IOVA {iova:#x} ({})", found.walk);
    println!("# IOVA {iova:#x}: a {leaf:#x}-byte IOPTE to {phys:#x}");
    Ok(())
}

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
