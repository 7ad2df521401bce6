//! End to end: boot the emulated machine, run the whole suite in a real Linux 7.3 guest on
//! emulated devices behind an emulated Intel IOMMU, and check the exact verdict of every test.
//!
//! The expected table says, per device, what upstream's semantics demand: the type1 modes map
//! a BAR's VA and every iommufd mode refuses it, so all of them pass; tests that can't apply to
//! a device's BAR shape skip with a reason. Nothing may fail, and nothing may be missing.

use std::collections::BTreeMap;
use std::process::Command;

const MODES: [&str; 5] =
    ["vfio_type1_iommu", "vfio_type1v2_iommu", "iommufd_compat_type1", "iommufd_compat_type1v2", "iommufd"];
const MMIO: &str = "vfio_dma_mapping_mmio_test";
const DMA: &str = "vfio_dma_mapping_test";
const SETUP: &str = "vfio_iommufd_setup_test";
const PCI: &str = "vfio_pci_device_test";
const DRIVER: &str = "vfio_pci_driver_test";
const SRIOV: &str = "vfio_pci_sriov_uapi_test";
const SRIOV_TESTS: [&str; 3] = ["init_token_match", "pf_early_close", "override_token"];
const TOKENS: [&str; 3] = ["same_uuid", "diff_uuid", "null_uuid"];
/// The "test" under which a program's own verdict is reported.
const WHOLE: &str = "(program)";
const DRIVER_TESTS: [&str; 7] = [
    "init_remove",
    "memcpy_success",
    "memcpy_from_unmapped_iova",
    "memcpy_to_unmapped_iova",
    "send_msi",
    "mix_and_match",
    "memcpy_storm",
];
const SETUP_TESTS: [&str; 6] = [
    "bind",
    "get_info_without_bind_fails",
    "bind_bad_iommufd_fails",
    "repeated_bind_fails",
    "attach_detatch_pt",
    "attach_invalid_pt_fails",
];

/// What each emulated device can do, which decides the verdicts.
struct Device {
    bdf: &'static str,
    /// The largest BAR is under two pages, so map_partial_bar skips with this reason.
    partial_bar_skip: Option<&'static str>,
    msi: bool,
    msix: bool,
    reset: bool,
    /// A userspace DMA driver exists for it (edu, igb).
    dma_driver: bool,
    /// An SR-IOV PF (igb).
    sriov: bool,
}

/// A device with a BAR of two pages or more, nothing else.
const PLAIN: Device =
    Device { bdf: "", partial_bar_skip: None, msi: false, msix: false, reset: false, dma_driver: false, sriov: false };

const DEVICES: [Device; 7] = [
    // 128 GiB BAR2.
    Device { bdf: "0000:00:03.0", ..PLAIN },
    // One 4 KiB BAR.
    Device { bdf: "0000:00:04.0", partial_bar_skip: Some("BAR too small (size=0x1000)"), ..PLAIN },
    // edu: MSI and a DMA engine.
    Device { bdf: "0000:00:05.0", msi: true, dma_driver: true, ..PLAIN },
    // ivshmem: 256-byte BAR0 plus RAM BAR2.
    Device { bdf: "0000:00:06.0", ..PLAIN },
    // nvme: MSI-X and FLR.
    Device { bdf: "0000:00:07.0", msix: true, reset: true, ..PLAIN },
    // i6300esb: one 16-byte BAR, smaller than a page.
    Device { bdf: "0000:00:08.0", partial_bar_skip: Some("BAR too small (size=0x10)"), ..PLAIN },
    // igb (82576): upstream's DMA driver, MSI and MSI-X, FLR, and SR-IOV.
    Device { bdf: "0000:01:00.0", msi: true, msix: true, reset: true, dma_driver: true, sriov: true, ..PLAIN },
];

type Expected = BTreeMap<(String, String), (&'static str, &'static str)>;

/// (program on device, test) → expected verdict and, for skips, a piece of the reason.
fn expected() -> Expected {
    let mut table = Expected::new();
    let pass_or = |ok: bool, reason: &'static str| if ok { ("pass", "") } else { ("skip", reason) };
    for dev in &DEVICES {
        let mut add = |program: &str, test: String, verdict| {
            table.insert((format!("{program} {}", dev.bdf), test), verdict);
        };
        for mode in MODES {
            // Type1 maps a BAR's VA and iommufd refuses it: both are passes.
            add(MMIO, format!("{MMIO}.{mode}.map_full_bar"), ("pass", ""));
            add(MMIO, format!("{MMIO}.{mode}.map_bar_misaligned"), ("pass", ""));
            let partial = dev.partial_bar_skip.map_or(("pass", ""), |reason| ("skip", reason));
            add(MMIO, format!("{MMIO}.{mode}.map_partial_bar"), partial);
        }
        for backing in ["anonymous", "anonymous_hugetlb_2mb", "anonymous_hugetlb_1gb"] {
            for mode in MODES {
                add(DMA, format!("vfio_dma_mapping_test.{mode}_{backing}.dma_map_unmap"), ("pass", ""));
            }
        }
        for mode in MODES {
            for test in ["unmap_range", "unmap_all", "overflow"] {
                add(DMA, format!("vfio_dma_map_limit_test.{mode}.{test}"), ("pass", ""));
            }
        }
        // Upstream skips the driver program whole on a device it has no driver for.
        let driver_program = if dev.dma_driver { ("pass", "") } else { ("skip", "") };
        add(DRIVER, WHOLE.into(), driver_program);
        for mode in MODES.iter().filter(|_| dev.dma_driver) {
            for test in DRIVER_TESTS {
                add(DRIVER, format!("vfio_pci_driver_test.{mode}.{test}"), ("pass", ""));
            }
        }
        // The SR-IOV program makes a VF of an SR-IOV PF and skips whole elsewhere.
        add(SRIOV, WHOLE.into(), if dev.sriov { ("pass", "") } else { ("skip", "") });
        for token in TOKENS.iter().filter(|_| dev.sriov) {
            for mode in MODES {
                for test in SRIOV_TESTS {
                    add(SRIOV, format!("{SRIOV}.{mode}_{token}.{test}"), ("pass", ""));
                }
            }
        }
        for program in [MMIO, DMA, SETUP, PCI] {
            add(program, WHOLE.into(), ("pass", ""));
        }
        for test in SETUP_TESTS {
            add(SETUP, format!("vfio_cdev.{test}"), ("pass", ""));
        }
        add(PCI, "vfio_pci_device_test.config_space_read_write".into(), ("pass", ""));
        add(PCI, "vfio_pci_device_test.validate_bars".into(), ("pass", ""));
        add(PCI, "vfio_pci_device_test.reset".into(), pass_or(dev.reset, "Device does not support reset"));
        add(PCI, "vfio_pci_irq_test.msi.enable_trigger_disable".into(), pass_or(dev.msi, "MSI: not supported"));
        add(PCI, "vfio_pci_irq_test.msix.enable_trigger_disable".into(), pass_or(dev.msix, "MSI-x: not supported"));
    }
    // One run over all devices together.
    table.insert(("vfio_pci_device_init_perf_test".into(), WHOLE.into()), ("pass", ""));
    for mode in MODES {
        table.insert(
            ("vfio_pci_device_init_perf_test".into(), format!("vfio_pci_device_init_perf_test.{mode}.init")),
            ("pass", ""),
        );
    }
    table
}

#[derive(serde::Deserialize)]
struct Result {
    program: String,
    test: String,
    verdict: String,
    reason: String,
}

fn main() {
    let results = std::env::temp_dir().join(format!("vfiotest-e2e-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_vfiotest"))
        .args(["vm", "--results"])
        .arg(&results)
        .status()
        .expect("run vfiotest vm");
    let text =
        std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no results from vfiotest vm ({status}): {e}"));
    let _ = std::fs::remove_file(&results);
    let got: Vec<Result> = serde_json::from_str(&text).expect("results are JSON");

    let mut expected = expected();
    let mut wrong = Vec::new();
    for r in &got {
        match expected.remove(&(r.program.clone(), r.test.clone())) {
            None => wrong.push(format!("unexpected test {} / {}: {}", r.program, r.test, r.verdict)),
            Some((verdict, reason)) if verdict != r.verdict || !r.reason.contains(reason) => wrong.push(format!(
                "{} / {}: expected {verdict} {reason:?}, got {} {:?}",
                r.program, r.test, r.verdict, r.reason
            )),
            Some(_) => {}
        }
    }
    wrong.extend(expected.keys().map(|(p, t)| format!("missing: {p} / {t}")));
    assert!(wrong.is_empty(), "{} wrong verdicts:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(status.code(), Some(0), "vfiotest vm exit status");
    println!("emulated_machine: all {} verdicts as expected", got.len());
}
