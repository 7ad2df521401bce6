//! The emulated machine: QEMU q35, an Intel vIOMMU, and devices chosen so that together they
//! exercise every BAR shape and feature the suite tests.

use std::path::Path;
use std::process::Command;

/// One emulated PCI device on the root bus.
#[derive(Debug, Clone, Copy)]
pub struct EmulatedDevice {
    /// Its address in the guest.
    pub bdf: &'static str,
    /// The QEMU `-device` argument, without `addr=`.
    pub qemu: &'static str,
    /// Why it is in the topology.
    pub role: &'static str,
}

/// The default topology. Each device covers something the others can't.
pub const TOPOLOGY: &[EmulatedDevice] = &[
    EmulatedDevice {
        bdf: "0000:00:03.0",
        qemu: "pci-testdev,membar=0x2000000000",
        role: "128 GiB unbacked 64-bit BAR2 (the seed's size) and a 4 KiB BAR0",
    },
    EmulatedDevice { bdf: "0000:00:04.0", qemu: "pci-testdev", role: "only a 4 KiB BAR0: the largest BAR is one page" },
    EmulatedDevice {
        bdf: "0000:00:05.0",
        qemu: "edu,dma_mask=0xffffffffffffffff",
        role: "DMA engine with MSI, 1 MiB BAR0",
    },
    EmulatedDevice {
        bdf: "0000:00:06.0",
        qemu: "ivshmem-plain,memdev=vfiotest-shm",
        role: "256-byte register BAR0 and a 4 MiB RAM-backed BAR2",
    },
    EmulatedDevice {
        bdf: "0000:00:07.0",
        qemu: "nvme,serial=vfiotest,drive=vfiotest-null",
        role: "MSI-X with its table inside BAR0, and FLR for reset",
    },
    EmulatedDevice { bdf: "0000:00:08.0", qemu: "i6300esb", role: "only a 16-byte BAR0: a BAR smaller than a page" },
];

/// Backends the devices above refer to.
const BACKENDS: &[&str] = &[
    "-object",
    "memory-backend-ram,id=vfiotest-shm,size=4M",
    "-blockdev",
    "driver=null-co,node-name=vfiotest-null,size=16777216",
];

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: slow, works everywhere.
    Tcg,
    /// Hardware virtualization.
    Kvm,
    /// KVM if a short probe boot works, else TCG.
    Auto,
}

impl Accel {
    /// How a run names the accelerator it used.
    pub fn label(self) -> &'static str {
        match self {
            Self::Kvm => "KVM",
            Self::Tcg | Self::Auto => "TCG",
        }
    }
}

/// Hugetlb pages for the DMA tests, reserved at boot: a 1 GiB page can't be found later.
const HUGEPAGES: &str = "hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=64";

/// Guest RAM. Room for 1 GiB and 2 MiB hugetlb pages besides the kernel.
pub const MEMORY: &str = "4G";

/// The QEMU command that boots `kernel` with `initrd` on the default topology.
pub fn qemu_command(qemu: &Path, accel: Accel, kernel: &Path, initrd: &Path, extra_cmdline: &str) -> Command {
    let mut cmd = Command::new(qemu);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host", "-machine", "q35,kernel-irqchip=split"]),
        _ => cmd.args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"]),
    };
    cmd.args(["-m", MEMORY, "-smp", "2", "-nodefaults", "-no-reboot", "-nic", "none"])
        .args(["-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none"])
        // Room above 4 GiB for the 128 GiB BAR.
        .args(["-global", "q35-pcihost.pci-hole64-size=512G"])
        // The vIOMMU comes first so every device behind it is translated.
        .args(["-device", "intel-iommu,intremap=on,aw-bits=48"])
        .args(BACKENDS);
    for dev in TOPOLOGY {
        let slot = &dev.bdf[8..10];
        cmd.args(["-device", &format!("{},addr=0x{slot}", dev.qemu)]);
    }
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    let cmdline = format!("console=ttyS0 intel_iommu=on panic=-1 oops=panic loglevel=4 {HUGEPAGES} {extra_cmdline}");
    cmd.arg("-append").arg(cmdline.trim_end());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_addresses_are_distinct_root_bus_slots() {
        let mut slots: Vec<_> = TOPOLOGY.iter().map(|d| &d.bdf[8..10]).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), TOPOLOGY.len());
        for d in TOPOLOGY {
            assert!(d.bdf.parse::<vfio::Bdf>().is_ok(), "{}", d.bdf);
        }
    }

    #[test]
    fn command_line_places_each_device() {
        let cmd = qemu_command(Path::new("qemu"), Accel::Tcg, Path::new("bz"), Path::new("rd"), "");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"pci-testdev,membar=0x2000000000,addr=0x03".to_owned()), "{args:?}");
        assert!(args.contains(&"nvme,serial=vfiotest,drive=vfiotest-null,addr=0x07".to_owned()));
        let iommu = args.iter().position(|a| a.starts_with("intel-iommu")).unwrap();
        let first_dev = args.iter().position(|a| a.starts_with("pci-testdev")).unwrap();
        assert!(iommu < first_dev);
    }
}
