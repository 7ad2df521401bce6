//! The catalogue: every program, named as upstream's, and how its tests are built.

use std::any::Any;

use ksft::{Program, Refusal, Tap, Test};
use vfio::Bdf;

use super::{
    bar_mapping, container_race, dma_buf, dma_mapping, dma_mapping_mmio, dma_mapping_perm, dma_unmap_split, init_perf,
    iommufd_setup, p2p_dma, pci_device, pci_driver, sriov_uapi,
};

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
