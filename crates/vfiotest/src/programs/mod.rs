//! The test programs, named as upstream's, and the fixtures they share.

mod dma_mapping;
mod dma_mapping_mmio;
mod init_perf;
mod iommufd_setup;
mod pci_device;
mod pci_driver;

use ksft::{Program, Test, Verdict};
use std::sync::Arc;
use vfio::{BarMapping, Bdf, Device, Iommu, IommuMode, IovaAllocator};

/// A test program: upstream's name and how to build its tests.
pub struct ProgramSpec {
    /// The upstream name, e.g. `vfio_dma_mapping_mmio_test`.
    pub name: &'static str,
    /// Builds the tests.
    pub tests: Devices,
    /// For per-device programs: why the program can't serve a device, if it can't.
    pub unfit: fn(Bdf) -> Option<String>,
}

fn fits_any(_: Bdf) -> Option<String> {
    None
}

/// Which devices a program's tests take.
pub enum Devices {
    /// One device: the program runs once per device.
    Each(fn(Bdf) -> Vec<Test>),
    /// All devices together, in one run.
    All(fn(&[Bdf]) -> Vec<Test>),
}

/// Every program, in the order `vfiotest run` runs them.
pub const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec { name: "vfio_dma_mapping_test", tests: Devices::Each(dma_mapping::tests), unfit: fits_any },
    ProgramSpec { name: "vfio_dma_mapping_mmio_test", tests: Devices::Each(dma_mapping_mmio::tests), unfit: fits_any },
    ProgramSpec { name: "vfio_iommufd_setup_test", tests: Devices::Each(iommufd_setup::tests), unfit: fits_any },
    ProgramSpec { name: "vfio_pci_device_test", tests: Devices::Each(pci_device::tests), unfit: fits_any },
    ProgramSpec { name: "vfio_pci_driver_test", tests: Devices::Each(pci_driver::tests), unfit: pci_driver::unfit },
    ProgramSpec { name: "vfio_pci_device_init_perf_test", tests: Devices::All(init_perf::tests), unfit: fits_any },
];

/// The programs to run: `only` (or all). Per-device programs run once for each device; with
/// several devices their names get the BDF appended.
pub fn catalogue(only: Option<&str>, bdfs: &[Bdf]) -> Vec<Program> {
    let mut programs = Vec::new();
    for spec in PROGRAMS.iter().filter(|p| only.is_none_or(|name| name == p.name)) {
        match spec.tests {
            Devices::Each(tests) => {
                for &bdf in bdfs {
                    let name = match bdfs.len() {
                        1 => spec.name.to_owned(),
                        _ => format!("{} {bdf}", spec.name),
                    };
                    let skip = (spec.unfit)(bdf);
                    programs.push(Program { name, tests: tests(bdf), skip });
                }
            }
            Devices::All(tests) => {
                let name = spec.name.to_owned();
                programs.push(Program { name, tests: tests(bdfs), skip: None });
            }
        }
    }
    programs
}

/// Turns library errors into verdicts: what the kernel or machine lacks is a SKIP with the
/// reason, anything else a failure.
pub trait OrSkip<T> {
    /// `Unsupported` → SKIP, other errors → FAIL.
    fn or_skip(self) -> Result<T, Verdict>;
}

impl<T> OrSkip<T> for vfio::Result<T> {
    fn or_skip(self) -> Result<T, Verdict> {
        self.map_err(|e| match e.is_unsupported() {
            true => Verdict::Skip(e.to_string()),
            false => Verdict::Fail(e.to_string()),
        })
    }
}

/// The variants that replicate a fixture across every IOMMU mode.
pub fn mode_variants() -> Vec<(&'static str, IommuMode)> {
    IommuMode::ALL.iter().map(|&m| (m.name(), m)).collect()
}

/// Opens `bdf` into `iommu` and maps every mmappable BAR, as upstream's
/// `vfio_pci_device_init()` does.
pub fn open_with_bars(bdf: Bdf, iommu: &Arc<Iommu>) -> vfio::Result<(Device, Vec<BarMapping>)> {
    let device = Device::open(bdf, iommu)?;
    let mappable: Vec<u32> = device.bars().filter(|r| r.mmappable()).map(|r| r.index).collect();
    let bars = mappable.into_iter().map(|index| device.map_bar(index)).collect::<vfio::Result<Vec<_>>>()?;
    Ok((device, bars))
}

/// A device opened in one IOMMU mode with every mmappable BAR mapped, as upstream's
/// `vfio_pci_device_init()` leaves it. Fields drop in order: BARs, device, IOMMU.
pub struct DeviceFixture {
    pub bars: Vec<BarMapping>,
    pub device: Device,
    pub iommu: Arc<Iommu>,
    pub iova: IovaAllocator,
}

impl DeviceFixture {
    /// Opens `bdf` in `mode`; a mode the kernel lacks is a SKIP.
    pub fn open(bdf: Bdf, mode: IommuMode) -> Result<Self, Verdict> {
        let iommu = Iommu::open(mode).or_skip()?;
        let (device, bars) = open_with_bars(bdf, &iommu).or_skip()?;
        let iova = IovaAllocator::new(iommu.iova_ranges()?)?;
        Ok(Self { bars, device, iommu, iova })
    }
}
