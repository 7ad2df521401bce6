//! The test programs, named as upstream's, and what they share: the catalogue, the variants,
//! the device fixture and the checks.

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

mod catalogue;
mod checks;
mod fixture;
mod variants;

pub use catalogue::{COLLECTION, Devices, PROGRAMS, PerDevicePrologue, ProgramSpec, catalogue};
pub use checks::check_iopte;
pub use fixture::{
    DeviceFixture, Engine, anonymous_memory, close_with_bars, ensure_nothing_mapped, largest, open_with_bars,
};
pub use variants::{mode_variants, mode_variants_by, mode_variants_where};
