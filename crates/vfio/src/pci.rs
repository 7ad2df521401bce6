//! PCI constants from `include/uapi/linux/pci_regs.h`, and VFIO's PCI indexes.

pub use vfio_sys::uapi::{
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_BARS as PCI_STD_NUM_BARS, VFIO_PCI_ROM_REGION_INDEX,
};

/// Config space: vendor ID (u16).
pub const PCI_VENDOR_ID: u64 = 0x00;
/// Config space: device ID (u16).
pub const PCI_DEVICE_ID: u64 = 0x02;
/// Config space: command register (u16).
pub const PCI_COMMAND: u64 = 0x04;
/// Command: respond to memory space accesses.
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
/// Command: bus mastering (the device may DMA).
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;
