//! `vfio_pci_device_test`: config space, BARs, reset and interrupts of one device, in the best
//! mode the kernel has (native iommufd, upstream's default, where it exists).

use ksft::{Case, Outcome, Test, Verdict, ensure, ensure_eq, skip};
use vfio::Bdf;
use vfio::pci::{
    PCI_COMMAND, PCI_COMMAND_MASTER, PCI_DEVICE_ID, PCI_STD_NUM_BARS, PCI_VENDOR_ID, VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio::sysfs::Sysfs;

use super::DeviceFixture;

/// At most this many vectors are exercised, whatever the device has (IRTE limits).
const MAX_TEST_MSI: u32 = 16;

struct PciFixture {
    bdf: Bdf,
    dev: DeviceFixture,
}

impl ksft::Teardown for PciFixture {
    fn teardown(self) -> Outcome {
        self.dev.teardown()
    }
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    let setup =
        move |_: &()| -> Result<PciFixture, Verdict> { Ok(PciFixture { bdf, dev: DeviceFixture::open_best(bdf)? }) };
    let mut tests = ksft::fixture(
        "vfio_pci_device_test",
        &[("", ())],
        setup,
        &[
            Case::new("config_space_read_write", config_space_read_write),
            Case::new("validate_bars", validate_bars),
            Case::new("reset", reset),
        ],
    );
    let setup =
        move |_: &u32| -> Result<PciFixture, Verdict> { Ok(PciFixture { bdf, dev: DeviceFixture::open_best(bdf)? }) };
    tests.extend(ksft::fixture(
        "vfio_pci_irq_test",
        &[("msi", VFIO_PCI_MSI_IRQ_INDEX), ("msix", VFIO_PCI_MSIX_IRQ_INDEX)],
        setup,
        &[Case::with_variant("enable_trigger_disable", enable_trigger_disable)],
    ));
    tests
}

fn config_space_read_write(t: &mut PciFixture) -> Outcome {
    let sysfs = Sysfs::system();
    let (vendor, device) = (sysfs.read_hex(t.bdf, "vendor")? as u16, sysfs.read_hex(t.bdf, "device")? as u16);
    ensure_eq!(t.dev.device.config_read_u16(PCI_VENDOR_ID)?, vendor, "vendor ID: config space vs sysfs");
    ensure_eq!(t.dev.device.config_read_u16(PCI_DEVICE_ID)?, device, "device ID: config space vs sysfs");
    println!("Vendor: {vendor:04x}, Device: {device:04x}");

    let command = t.dev.device.config_read_u16(PCI_COMMAND)?;
    ensure!(command & PCI_COMMAND_MASTER == 0, "bus mastering is on before the test (command {command:04x})");
    t.dev.device.config_write_u16(PCI_COMMAND, command | PCI_COMMAND_MASTER)?;
    let command = t.dev.device.config_read_u16(PCI_COMMAND)?;
    ensure!(command & PCI_COMMAND_MASTER != 0, "bus mastering did not turn on (command {command:04x})");
    println!("Enabled Bus Mastering (command: {command:04x})");
    t.dev.device.config_write_u16(PCI_COMMAND, command & !PCI_COMMAND_MASTER)?;
    let command = t.dev.device.config_read_u16(PCI_COMMAND)?;
    ensure!(command & PCI_COMMAND_MASTER == 0, "bus mastering did not turn off (command {command:04x})");
    println!("Disabled Bus Mastering (command: {command:04x})");
    Ok(())
}

fn validate_bars(t: &mut PciFixture) -> Outcome {
    for index in 0..PCI_STD_NUM_BARS {
        let region = t.dev.device.region(index).ok_or_else(|| Verdict::Fail(format!("no region {index}")))?;
        let mapping = t.dev.bars.iter().find(|b| b.index() == index);
        if !region.mmappable() {
            println!("BAR {index} does not support mmap()");
            ensure!(mapping.is_none(), "BAR {index} is mapped although it does not support mmap()");
            continue;
        }
        // BARs that support mmap() are mapped by the fixture, as by vfio_pci_device_init().
        let Some(bar) = mapping else {
            return Err(Verdict::Fail(format!("BAR {index} supports mmap() but is not mapped")));
        };
        // Upstream asserts size != 0, which mmappable() already implies; what can go wrong here
        // is a mapping that doesn't cover the BAR.
        ensure!(
            bar.len() as u64 >= region.size,
            "BAR {index} is mapped over {:#x} bytes, less than its size {:#x}",
            bar.len(),
            region.size
        );
        println!("BAR {index} mapped at {:#x} (size {:#x}, {})", bar.addr(), region.size, bar.placement());
    }
    Ok(())
}

fn reset(t: &mut PciFixture) -> Outcome {
    // Upstream's reasons end in a newline, which leaves an empty line in the TAP; so do ours.
    if !t.dev.device.info().can_reset() {
        skip!("Device does not support reset\n");
    }
    Ok(t.dev.device.reset()?)
}

fn enable_trigger_disable(t: &mut PciFixture, index: &u32) -> Outcome {
    let kind = if *index == VFIO_PCI_MSIX_IRQ_INDEX { "MSI-x" } else { "MSI" };
    let count = t.dev.device.irq_info(*index)?.count.min(MAX_TEST_MSI);
    if count == 0 {
        skip!("{kind}: not supported\n");
    }
    let irqs = t.dev.device.enable_irqs(*index, count)?;
    println!("{kind}: enabled {count} interrupts");
    for vector in 0..count {
        ensure_eq!(irqs.take(vector)?, None, "vector {vector} fired before it was triggered");
        irqs.trigger(vector)?;
        ensure_eq!(irqs.take(vector)?, Some(1), "vector {vector} after one trigger");
    }
    Ok(irqs.disable()?)
}
