//! The emulated machine: QEMU q35, an Intel vIOMMU, and devices chosen so that together they
//! exercise every BAR shape and feature the suite tests.

use std::path::Path;
use std::process::Command;

use super::qemu::Emulator;

/// One emulated PCI device.
#[derive(Debug, Clone, Copy)]
pub struct EmulatedDevice {
    /// Its address in the guest.
    pub bdf: &'static str,
    /// The QEMU `-device` argument, without `addr=` or `bus=`.
    pub qemu: &'static str,
    /// Why it is in the topology.
    pub role: &'static str,
    /// The root-bus slot of the PCIe root port it sits behind (then it is function 0 of bus
    /// `bdf`'s bus), or `None` for a device on the root bus itself.
    pub root_port: Option<&'static str>,
}

/// The default topology. Each device covers something the others can't.
pub const TOPOLOGY: &[EmulatedDevice] = &[
    EmulatedDevice {
        bdf: "0000:00:03.0",
        qemu: "pci-testdev,membar=0x2000000000",
        role: "128 GiB unbacked 64-bit BAR2 (the seed's size) and a 4 KiB BAR0",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:00:04.0",
        qemu: "pci-testdev",
        role: "only a 4 KiB BAR0: the largest BAR is one page",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:00:05.0",
        qemu: "edu,dma_mask=0xffffffffffffffff",
        role: "DMA engine with MSI, 1 MiB BAR0",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:00:06.0",
        qemu: "ivshmem-plain,memdev=vfiotest-shm",
        role: "256-byte register BAR0 and a 4 MiB RAM-backed BAR2",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:00:07.0",
        qemu: "nvme,serial=vfiotest,drive=vfiotest-disk",
        role: "MSI-X with its table inside BAR0, and FLR for reset; a 16 MiB disk the guest's nvme driver holds at boot (the setup proof puts swap on it)",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:00:08.0",
        qemu: "i6300esb",
        role: "only a 16-byte BAR0: a BAR smaller than a page",
        root_port: None,
    },
    EmulatedDevice {
        bdf: "0000:01:00.0",
        qemu: "igb",
        role: "82576 NIC: upstream's DMA driver (TX->RX loopback, MSI-X) and SR-IOV (8 VFs, the first at 01:10.0); behind a PCIe root port because SR-IOV needs PCIe",
        root_port: Some("09"),
    },
];

/// The emulated IOMMU every device sits behind: a variant of the machine, as virtme-ng's
/// architectures are, holding all that differs between vIOMMUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viommu {
    /// Its name on the command line.
    pub name: &'static str,
    /// The QEMU `-device` argument. It comes before the PCI devices, so all sit behind it.
    pub qemu_device: &'static str,
    /// What the guest kernel's command line needs for it.
    pub cmdline: &'static str,
    /// Who reads its page tables in the guest, if anyone can (the tests SKIP without).
    pub page_tables: Option<vfio::pgtable::PageTableReader>,
    /// What the guest can't have behind it, so `--require all` on our machine leaves it out.
    pub lacks: &'static [vfio::Feature],
    /// Why it differs from `intel`, for the matrix table (empty for `intel`).
    pub note: &'static str,
    /// Tests that fail behind it by a known bug of the emulator: `vfiotest run --known-bug`
    /// patterns (`program/test`), each with the bug. They run, and show XFAIL (XPASS once the
    /// bug is fixed).
    pub known_bugs: &'static [(&'static str, &'static str)],
}

/// The kernel parameters that let VFIO take devices whose MSIs the IOMMU can't isolate.
macro_rules! unsafe_interrupts {
    () => {
        "vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1"
    };
}
const UNSAFE_INTERRUPTS: &str = unsafe_interrupts!();

/// Intel VT-d in legacy (second-level) mode, with interrupt remapping and 48-bit addresses;
/// its debugfs shows the page tables.
pub const INTEL: Viommu = Viommu {
    name: "intel",
    qemu_device: "intel-iommu,intremap=on,aw-bits=48",
    cmdline: "intel_iommu=on",
    page_tables: Some(vfio::pgtable::PageTableReader::IntelDebugfs),
    lacks: &[],
    note: "",
    known_bugs: &[],
};

/// Intel VT-d in scalable mode: the guest driver uses scalable-mode context entries and PASID
/// tables (second-stage translation for DMA).
pub const INTEL_SCALABLE: Viommu = Viommu {
    name: "intel-scalable",
    qemu_device: "intel-iommu,intremap=on,aw-bits=48,x-scalable-mode=on",
    cmdline: "intel_iommu=on,sm_on",
    page_tables: Some(vfio::pgtable::PageTableReader::IntelDebugfs),
    lacks: &[],
    note: "scalable-mode tables (intel_iommu=on,sm_on)",
    known_bugs: &[],
};

/// Intel VT-d in scalable mode with first-stage translation offered (`x-flts`).
pub const INTEL_FLTS: Viommu = Viommu {
    name: "intel-flts",
    qemu_device: "intel-iommu,intremap=on,aw-bits=48,x-scalable-mode=on,x-flts=on",
    cmdline: "intel_iommu=on,sm_on",
    page_tables: Some(vfio::pgtable::PageTableReader::IntelDebugfs),
    lacks: &[],
    note: "scalable mode with first-stage translation offered",
    known_bugs: &[],
};

/// virtio-iommu: no interrupt remapping on x86, so VFIO needs unsafe interrupts allowed; its
/// mappings are the host's, and nothing in the guest shows them. The guest invalidates its
/// IOTLB strictly (`iommu.strict=1`): 7.3's shutdown breaks virtio-iommu's queues
/// (`virtio_device_shutdown()`), and a flush-queue timer that fires after that
/// (`fq_flush_timeout()` → `viommu_flush_iotlb_all()`) spins for good in `__viommu_sync_req()`
/// with interrupts off, waiting for requests a broken queue never returns; the guest never
/// powers off. Strict invalidation has no flush queue. VFIO's own domains are strict anyway.
pub const VIRTIO: Viommu = Viommu {
    name: "virtio",
    qemu_device: "virtio-iommu-pci",
    cmdline: concat!(unsafe_interrupts!(), " iommu.strict=1"),
    page_tables: None,
    lacks: &[vfio::Feature::IrqRemap, vfio::Feature::IommuPageTables],
    note: "no interrupt remapping (unsafe interrupts allowed); no page-table reader; iommu.strict=1 (a kernel \
           bug hangs a shutdown with a flush queue pending)",
    known_bugs: &[],
};

/// QEMU 10.0.2's amd-iommu keeps each device's bus number from when its address space was
/// made, before firmware numbered the buses, so a device behind a bridge (the igb, 01:00.0)
/// is translated with device 00:00.0's table entry and its DMA faults. Fixed upstream by
/// "amd_iommu: Fix handling device on buses != 0" (Sairaj Kodilkar, 2025), not in 10.0.2.
const AMD_BUS_NUMBER_BUG: &str = "QEMU 10.0.2 amd-iommu: a device on a bus other than 0 is translated as 00:00.0 \
                                  (its bus number is taken before firmware numbers the buses; fixed upstream by \
                                  'amd_iommu: Fix handling device on buses != 0')";

/// AMD-Vi. QEMU 10.0.2's default `pt=on` never translates DMA (the no-DMA alias is chosen
/// once, when a device's address space is made) and, with the IOAPIC's address space built
/// before the regions it aliases, loses every IOAPIC interrupt; `pt=off` avoids both (see
/// the README). Interrupt remapping stays off (the IOAPIC would bypass it), so VFIO needs
/// unsafe interrupts allowed. 7.3's AMD debugfs dumps no page table, so the reader walks it.
pub const AMD: Viommu = Viommu {
    name: "amd",
    qemu_device: "amd-iommu,pt=off",
    cmdline: UNSAFE_INTERRUPTS,
    page_tables: Some(vfio::pgtable::PageTableReader::AmdDebugfsKcore),
    lacks: &[vfio::Feature::IrqRemap],
    note: "amd-iommu,pt=off; no interrupt remapping (unsafe interrupts allowed); page tables walked from the \
           debugfs device table through /proc/kcore; XFAIL: the igb's DMA (QEMU 10.0.2 translates devices on \
           bus 1 as 00:00.0)",
    known_bugs: &[
        ("vfio_pci_driver_test 0000:01:00.0/*.memcpy_success", AMD_BUS_NUMBER_BUG),
        ("vfio_pci_driver_test 0000:01:00.0/*.mix_and_match", AMD_BUS_NUMBER_BUG),
        ("vfio_pci_driver_test 0000:01:00.0/*.memcpy_storm", AMD_BUS_NUMBER_BUG),
        ("vfio_p2p_dma_test/*_igb.to_bar", AMD_BUS_NUMBER_BUG),
        ("vfio_p2p_dma_test/*_igb.from_bar", AMD_BUS_NUMBER_BUG),
    ],
};

/// Every vIOMMU the machine can have, the default first.
pub const VIOMMUS: &[Viommu] = &[INTEL, INTEL_SCALABLE, INTEL_FLTS, VIRTIO, AMD];

impl Viommu {
    /// The vIOMMU called `name`.
    ///
    /// # Errors
    /// A one-line message naming the known ones.
    pub fn named(name: &str) -> Result<Self, String> {
        VIOMMUS.iter().copied().find(|v| v.name == name).ok_or_else(|| {
            let known: Vec<&str> = VIOMMUS.iter().map(|v| v.name).collect();
            format!("unknown vIOMMU {name:?}: expected {}", known.join(", "))
        })
    }
}

/// Backends the devices above refer to, but the nvme's disk (see [`qemu_command`]).
const BACKENDS: &[&str] = &["-object", "memory-backend-ram,id=vfiotest-shm,size=4M"];

/// The nvme's disk: a sparse file per machine, writable, so swap can live on it.
pub const DISK_BYTES: u64 = 16 << 20;

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
            Self::Tcg | Self::Auto => "TCG (one thread)",
        }
    }

    /// QEMU's name for it, as reports give it: `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg | Self::Auto => "tcg",
        }
    }
}

/// TCG runs both vCPUs on one host thread. QEMU 10.0.2's multi-threaded TCG loses the wakeup
/// of a halted vCPU on this machine: the guest reports "rcu_preempt kthread timer wakeup didn't
/// happen ... Possible timer handling issue on cpu=1", both vCPU threads sit in
/// qemu_wait_io_event for good, and the run hangs. It happened in the igb's FLR recovery and,
/// without igb, in the init-perf test's parallel opens; single-threaded TCG ran the whole suite
/// cleanly (see the README).
const TCG: &str = "tcg,thread=single";

/// The guest's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Real time.
    Real,
    /// Counting instructions, idle time skipped (QEMU's `-icount`); TCG only.
    Icount,
}

impl Clock {
    /// The clock a machine really gets under `accel`: KVM runs on real time whatever was
    /// planned.
    pub fn under(self, accel: Accel) -> Self {
        match accel {
            Accel::Kvm => Self::Real,
            Accel::Tcg | Accel::Auto => self,
        }
    }
}

/// With `icount`, the guest's clock under TCG counts instructions, and jumps to the next timer
/// when every vCPU is idle (`sleep=off`). A test that waits on a device (the edu's 100 ms DMA timer, the
/// igb's link-up delays, a 50 ms "no MSI" wait) then takes no wall time for the wait, and the
/// guest sees exactly the delays it asked for. While the guest computes, `shift=auto` keeps its
/// clock near real time, so the tests' timeouts mean what they say. (icount needs
/// single-threaded TCG, which this machine uses anyway.) It cuts the suite's time several
/// times over (the README's "How it is fast" has the numbers). Counting instructions slows the
/// guest's computing, though, so a machine that runs only programs that compute (the 128 GiB
/// unmaps) goes without it.
const ICOUNT: &str = "shift=auto,sleep=off";

/// The CPU model under TCG: `max` without ERMS and FSRM, so the kernel clears and copies pages
/// with `rep stosq`/`rep movsq` instead of `rep stosb`/`rep movsb`, which TCG runs byte by
/// byte: zeroing a hugetlb page is several times faster without them (the README has the
/// numbers). What the tests check doesn't depend on it.
const TCG_CPU: &str = "max,-erms,-fsrm";

/// Hugetlb pages for the DMA tests, reserved at boot: a 1 GiB page can't be found later.
const HUGEPAGES: &str = "hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=64";

/// Guest RAM. Room for 1 GiB and 2 MiB hugetlb pages besides the kernel.
pub const MEMORY: &str = "4G";

/// What one machine boots: its kernel and initramfs, the nvme's disk, where its results port
/// goes (the second serial port: TAP and the init's marks), and what its kernel command line
/// adds to ours.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disk: &'a Path,
    pub results: &'a Path,
    pub extra_cmdline: &'a str,
}

/// The QEMU command that boots `guest` on the default topology behind `viommu`.
pub fn qemu_command(qemu: &Emulator, viommu: &Viommu, accel: Accel, clock: Clock, guest: &Guest) -> Command {
    let Guest { kernel, initrd, disk, results, extra_cmdline } = *guest;
    let mut cmd = Command::new(&qemu.binary);
    if let Some(malloc) = &qemu.preload {
        // First, so it is the malloc; what the user preloads stays.
        let mut preload = malloc.as_os_str().to_owned();
        if let Some(theirs) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
            preload.push(":");
            preload.push(theirs);
        }
        cmd.env("LD_PRELOAD", preload);
    }
    cmd.args(qemu.firmware_args());
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host", "-machine", "q35,kernel-irqchip=split"]),
        _ => cmd.args(["-accel", TCG, "-cpu", TCG_CPU, "-machine", "q35"]),
    };
    if clock.under(accel) == Clock::Icount {
        cmd.args(["-icount", ICOUNT]);
    }
    cmd.args(["-m", MEMORY, "-smp", "2", "-nodefaults", "-no-reboot", "-nic", "none"])
        .args(["-display", "none", "-vga", "none", "-monitor", "none"])
        // ttyS0 is the kernel's console, ttyS1 the results port (guest::protocol).
        .args(["-serial", "stdio", "-serial", "chardev:vfiotest-results", "-chardev"])
        .arg(format!("file,id=vfiotest-results,path={}", results.display()))
        // Room above 4 GiB for the 128 GiB BAR.
        .args(["-global", "q35-pcihost.pci-hole64-size=512G"])
        // The vIOMMU comes first so every device behind it is translated.
        .args(["-device", viommu.qemu_device])
        .args(BACKENDS)
        .arg("-blockdev")
        .arg(format!("driver=file,node-name=vfiotest-disk,filename={}", disk.display()));
    for (chassis, dev) in TOPOLOGY.iter().enumerate() {
        match dev.root_port {
            None => cmd.args(["-device", &format!("{},addr=0x{}", dev.qemu, &dev.bdf[8..10])]),
            Some(slot) => cmd
                .args(["-device", &format!("pcie-root-port,id=rp{slot},chassis={},addr=0x{slot}", chassis + 1)])
                .args(["-device", &format!("{},bus=rp{slot},addr=0x0", dev.qemu)]),
        };
    }
    cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    // Timestamps tell kernel messages from the suite's output on the console, whatever the
    // kernel's CONFIG_PRINTK_TIME. vfio-pci enables SR-IOV on a PF it drives only when told to
    // (the igb's VFs).
    let cmdline = format!(
        "console=ttyS0 printk.time=1 {} vfio_pci.enable_sriov=1 panic=-1 oops=panic loglevel=4 {HUGEPAGES} {extra_cmdline}",
        viommu.cmdline
    );
    cmd.arg("-append").arg(cmdline.trim_end());
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_bug_pattern_parses_and_marks_a_test() {
        let bdfs: Vec<vfio::Bdf> = TOPOLOGY.iter().map(|d| d.bdf.parse().unwrap()).collect();
        for viommu in VIOMMUS {
            for (pattern, bug) in viommu.known_bugs {
                let known = crate::suite::KnownBug::parse(&format!("{pattern}={bug}")).unwrap();
                let mut catalogue = crate::programs::catalogue(&[], &bdfs);
                known.mark(&mut catalogue);
                let marked = catalogue.iter().flat_map(|p| &p.tests).filter(|t| t.known_bug.is_some()).count();
                assert!(marked > 0, "{}: {pattern} marks no test", viommu.name);
            }
        }
    }

    #[test]
    fn topology_addresses_are_distinct_root_bus_slots() {
        // A device takes its own root-bus slot, or its root port's.
        let mut slots: Vec<_> = TOPOLOGY.iter().map(|d| d.root_port.unwrap_or(&d.bdf[8..10])).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), TOPOLOGY.len());
        let mut buses = Vec::new();
        for d in TOPOLOGY {
            let bdf: vfio::Bdf = d.bdf.parse().unwrap_or_else(|e| panic!("{}: {e}", d.bdf));
            match d.root_port {
                None => assert_eq!(bdf.bus, 0, "{}", d.bdf),
                Some(_) => buses.push(bdf.bus),
            }
        }
        let ports = buses.len();
        buses.dedup();
        assert_eq!(buses.len(), ports, "one device per root port, each on its own bus");
    }

    fn test_guest() -> Guest<'static> {
        Guest {
            kernel: Path::new("bz"),
            initrd: Path::new("rd"),
            disk: Path::new("disk"),
            results: Path::new("/dev/fd/9"),
            extra_cmdline: "",
        }
    }

    #[test]
    fn viommus_are_found_by_name_and_unique() {
        assert_eq!(Viommu::named("intel"), Ok(INTEL));
        assert_eq!(Viommu::named("virtio"), Ok(VIRTIO));
        assert!(Viommu::named("sparc").unwrap_err().contains("expected intel, intel-scalable"));
        let mut names: Vec<&str> = VIOMMUS.iter().map(|v| v.name).collect();
        names.dedup();
        assert_eq!(names.len(), VIOMMUS.len());
    }

    #[test]
    fn command_line_places_each_device() {
        let qemu =
            Emulator { binary: "qemu".into(), firmware: vec!["/fw".into()], version: String::new(), preload: None };
        let cmd = qemu_command(&qemu, &INTEL, Accel::Tcg, Clock::Icount, &test_guest());
        assert!(cmd.get_envs().all(|(k, _)| k != "LD_PRELOAD"), "a QEMU without a malloc of ours runs as it is");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[..2], ["-L", "/fw"]);
        let port = args.iter().position(|a| a.starts_with("pcie-root-port,id=rp09,")).unwrap();
        assert_eq!(args[port + 2], "igb,bus=rp09,addr=0x0");
        let cmdline = args.iter().find(|a| a.starts_with("console=")).unwrap();
        assert!(cmdline.contains("vfio_pci.enable_sriov=1") && cmdline.contains("printk.time=1"), "{cmdline}");
        assert!(cmdline.contains(INTEL.cmdline), "the vIOMMU's guest arguments: {cmdline}");
        assert!(args.contains(&"pci-testdev,membar=0x2000000000,addr=0x03".to_owned()), "{args:?}");
        assert!(args.contains(&"nvme,serial=vfiotest,drive=vfiotest-disk,addr=0x07".to_owned()));
        let iommu = args.iter().position(|a| a.starts_with("intel-iommu")).unwrap();
        let first_dev = args.iter().position(|a| a.starts_with("pci-testdev")).unwrap();
        assert!(iommu < first_dev);
        let serials: Vec<&String> = args.windows(2).filter(|w| w[0] == "-serial").map(|w| &w[1]).collect();
        assert_eq!(serials, ["stdio", "chardev:vfiotest-results"], "ttyS0 the console, ttyS1 the results");
        assert!(args.contains(&"file,id=vfiotest-results,path=/dev/fd/9".to_owned()));
        let icount = args.iter().position(|a| a == "-icount").unwrap();
        assert!(args[icount + 1].contains("sleep=off"), "idle waits take no wall time");
        let plain = qemu_command(&qemu, &INTEL, Accel::Tcg, Clock::Real, &test_guest());
        assert!(!plain.get_args().any(|a| a == "-icount"));
        let kvm = qemu_command(&qemu, &INTEL, Accel::Kvm, Clock::Icount, &test_guest());
        assert!(!kvm.get_args().any(|a| a == "-icount"), "icount is TCG's");
    }

    #[test]
    fn our_malloc_is_preloaded_first() {
        let qemu = Emulator {
            binary: "qemu".into(),
            firmware: Vec::new(),
            version: String::new(),
            preload: Some("/lib/libjemalloc.so.2".into()),
        };
        let cmd = qemu_command(&qemu, &INTEL, Accel::Tcg, Clock::Real, &test_guest());
        let preload = cmd.get_envs().find(|(k, _)| *k == "LD_PRELOAD").and_then(|(_, v)| v).expect("LD_PRELOAD set");
        assert!(preload.to_string_lossy().starts_with("/lib/libjemalloc.so.2"), "{preload:?}");
    }
}
