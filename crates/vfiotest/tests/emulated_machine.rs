//! End to end: boot the emulated machine, run the whole suite in a real Linux 7.3 guest on
//! emulated devices behind every emulated IOMMU of the matrix (`--viommu all`), and check the
//! exact verdict of every test behind each; then the same on Debian's 6.12 LTS kernel, and on
//! 6.1 where it is built (`--kernel-version`, see `expected_on`).
//!
//! The expected table says, per device, what each test must say on this machine: upstream's
//! verdicts where ours are the same, and ours where they differ on purpose (the README's table
//! of deliberate differences: sub-page BARs, the edu driver, ...). Tests that can't apply to a
//! device's BAR shape skip with a reason. Nothing may fail, and nothing may be missing. The
//! guest runs with `--require all` (less what its vIOMMU can't have), so no SKIP here stands
//! for a feature the kernel lacks. Behind a vIOMMU whose page tables nothing in the guest can
//! read, a test whose subject is an IOPTE SKIPs saying so; a test that fails by a known QEMU
//! bug is an XFAIL naming it (see `expected_behind`).

use std::collections::BTreeMap;

use ksft::Status::{self, Fail, Pass, Skip, XFail};
use vfio::Bdf;
use vfiotest::programs::{self, PROGRAMS};
use vfiotest::vm::console::PROGRAM_VERDICT;
use vfiotest::vm::machine::{TOPOLOGY, VIOMMUS, Viommu};

/// What each emulated device can do, which decides the verdicts. Keyed by the QEMU device
/// model; the addresses come from the topology.
struct Device {
    model: &'static str,
    /// The largest BAR is under two pages, so map_partial_bar skips with this reason.
    partial_bar_skip: Option<&'static str>,
    msi: bool,
    msix: bool,
    reset: bool,
    /// A userspace DMA driver exists for it (edu, igb).
    dma_driver: bool,
    /// An SR-IOV PF (igb).
    sriov: bool,
    /// Pages in its largest memory BAR, counted up to two: none, one, or two or more.
    largest_bar_pages: u8,
    /// It has a memory BAR smaller than a page.
    sub_page_bar: bool,
}

/// A device with a BAR of two pages or more, nothing else.
const PLAIN: Device = Device {
    model: "",
    partial_bar_skip: None,
    msi: false,
    msix: false,
    reset: false,
    dma_driver: false,
    sriov: false,
    largest_bar_pages: 2,
    sub_page_bar: false,
};

const DEVICES: [Device; 7] = [
    // 128 GiB BAR2.
    Device { model: "pci-testdev,membar=0x2000000000", ..PLAIN },
    // One 4 KiB BAR.
    Device {
        model: "pci-testdev",
        partial_bar_skip: Some("BAR too small (size=0x1000)"),
        largest_bar_pages: 1,
        ..PLAIN
    },
    // edu: MSI and a DMA engine.
    Device { model: "edu", msi: true, dma_driver: true, ..PLAIN },
    // ivshmem: 256-byte BAR0 plus RAM BAR2.
    Device { model: "ivshmem-plain", sub_page_bar: true, ..PLAIN },
    // nvme: MSI-X and FLR.
    Device { model: "nvme", msix: true, reset: true, ..PLAIN },
    // i6300esb: one 16-byte BAR, smaller than a page.
    Device {
        model: "i6300esb",
        partial_bar_skip: Some("BAR too small (size=0x10)"),
        largest_bar_pages: 0,
        sub_page_bar: true,
        ..PLAIN
    },
    // igb (82576): upstream's DMA driver, MSI and MSI-X, FLR, and SR-IOV.
    Device { model: "igb", msi: true, msix: true, reset: true, dma_driver: true, sriov: true, ..PLAIN },
];

/// How many tests each program has, counted from upstream's sources (and ours for our own
/// programs): a test that disappears from the catalogue must fail this test, not vanish from it.
const TEST_COUNTS: [(&str, usize); 13] = [
    ("vfio_dma_mapping_test", 30),
    ("vfio_dma_mapping_mmio_test", 15),
    ("vfio_iommufd_setup_test", 6),
    ("vfio_pci_device_test", 5),
    ("vfio_pci_driver_test", 35),
    ("vfio_pci_sriov_uapi_test", 45),
    ("vfio_pci_device_init_perf_test", 5),
    // Ours: five modes × anonymous memory or a BAR × two tests.
    ("vfio_dma_mapping_perm_test", 20),
    // Ours: five modes × two cuts, then five modes × a cut inside a huge leaf.
    ("vfio_dma_unmap_split_test", 15),
    // Ours: three export tests, then the three iommufd modes × six map tests.
    ("vfio_dma_buf_test", 21),
    // Ours: the mmap check, then the two type1 modes × the IOPTE and reset checks.
    ("vfio_bar_mapping_test", 5),
    // Ours: five modes × two engines (edu, igb) × three tests.
    ("vfio_p2p_dma_test", 30),
    // Ours: the four container modes.
    ("vfio_container_race_test", 4),
];

type Expected = BTreeMap<(String, String), (Status, &'static str)>;

/// The verdict `test` of `program` must have on `dev`, and for a skip a piece of the reason.
fn verdict(program: &str, test: &str, dev: &Device) -> (Status, &'static str) {
    let pass_or = |ok: bool, reason: &'static str| if ok { (Pass, "") } else { (Skip, reason) };
    match (program, test.rsplit('.').next().unwrap_or(test)) {
        // Type1 maps a BAR's VA and iommufd refuses it: both are passes. A BAR under two
        // pages has no partial range to map.
        ("vfio_dma_mapping_mmio_test", "map_partial_bar") => dev.partial_bar_skip.map_or((Pass, ""), |r| (Skip, r)),
        ("vfio_pci_device_test", "reset") => pass_or(dev.reset, "Device does not support reset"),
        ("vfio_pci_device_test", _) if test.starts_with("vfio_pci_irq_test.msix.") => {
            pass_or(dev.msix, "MSI-x: not supported")
        }
        ("vfio_pci_device_test", _) if test.starts_with("vfio_pci_irq_test.msi.") => {
            pass_or(dev.msi, "MSI: not supported")
        }
        // iommufd takes MMIO only as a dma-buf, so a BAR's read-only VA has nothing to test.
        ("vfio_dma_mapping_perm_test", _) if test.contains(".iommufd") && test.contains("_bar.") => {
            (Skip, "maps MMIO only from a dma-buf")
        }
        ("vfio_bar_mapping_test", "huge_iopte") if dev.largest_bar_pages == 0 => (Skip, "smaller than a page"),
        ("vfio_bar_mapping_test", "reset") => pass_or(dev.reset, "Device does not support reset"),
        // A dma-buf is whole pages of a memory BAR: the sub-page test needs a BAR under a
        // page, the rest one of a page or more, and a slice or a second range two pages.
        ("vfio_dma_buf_test", "sub_page_bar") => pass_or(dev.sub_page_bar, "has no memory BAR smaller than a page"),
        ("vfio_dma_buf_test", _) if dev.largest_bar_pages == 0 => (Skip, "has no memory BAR of a page or more"),
        ("vfio_dma_buf_test", "revoke_on_reset") => pass_or(dev.reset, "Device does not support reset"),
        ("vfio_dma_buf_test", "map_slice" | "several_ranges") if dev.largest_bar_pages == 1 => (Skip, "has one page"),
        _ => (Pass, ""),
    }
}

/// Whether `program` runs on `dev` at all; upstream skips the driver program whole on a device
/// it has no driver for, and the SR-IOV program on a device that is no PF.
fn runs_on(program: &str, dev: &Device) -> bool {
    match program {
        "vfio_pci_driver_test" => dev.dma_driver,
        "vfio_pci_sriov_uapi_test" => dev.sriov,
        _ => true,
    }
}

/// (program on device, test) → expected verdict and, for skips, a piece of the reason.
fn expected() -> Expected {
    let mut table = Expected::new();
    let bdfs: Vec<Bdf> = TOPOLOGY.iter().map(|d| d.bdf.parse().unwrap()).collect();
    assert_eq!(PROGRAMS.len(), TEST_COUNTS.len(), "every program is counted");
    for (spec, count) in PROGRAMS.iter().zip(TEST_COUNTS) {
        assert_eq!(spec.name, count.0, "programs in upstream's order");
        let programs = programs::catalogue(&[spec.name], &bdfs);
        for program in &programs {
            assert_eq!(program.tests.len(), count.1, "{} has upstream's tests", program.name);
            // A per-device program is named "program BDF"; the one that takes all devices isn't.
            let dev = match program.name.split_once(' ') {
                Some((_, bdf)) => {
                    let emulated = TOPOLOGY.iter().find(|d| d.bdf == bdf).expect("a topology device");
                    let model = emulated.qemu.split(',').next().unwrap();
                    let known = |d: &&Device| d.model == emulated.qemu || d.model == model;
                    DEVICES.iter().find(known).unwrap_or_else(|| panic!("no expectations for {}", emulated.qemu))
                }
                None => &PLAIN,
            };
            let runs = runs_on(spec.name, dev);
            // A program's own verdict is in the results when it skipped whole, as the totals
            // count it.
            if !runs {
                table.insert((program.name.clone(), PROGRAM_VERDICT.into()), (Skip, ""));
            }
            for test in program.tests.iter().filter(|_| runs) {
                table.insert((program.name.clone(), test.full_name()), verdict(spec.name, &test.full_name(), dev));
            }
        }
    }
    table
}

/// Tests whose subject is an IOPTE: behind a vIOMMU without a page-table reader they SKIP
/// where they would pass.
fn subject_is_an_iopte(program: &str, test: &str) -> bool {
    let last = test.rsplit('.').next().unwrap_or(test);
    match program {
        "vfio_bar_mapping_test" => matches!(last, "huge_iopte" | "reset"),
        "vfio_dma_buf_test" => {
            matches!(last, "map_whole_bar" | "map_slice" | "revoke_on_memory_disable" | "revoke_on_reset")
        }
        "vfio_p2p_dma_test" => last == "bar_decode_off",
        "vfio_dma_unmap_split_test" => last == "cut_inside_huge_leaf",
        _ => false,
    }
}

/// The DMA copies of the igb (01:00.0, the one device behind a bridge): QEMU 10.0.2's
/// amd-iommu translates it as 00:00.0, so they fail (see `vm::machine::AMD`).
fn igb_dma_copy(program: &str, test: &str) -> bool {
    let last = test.rsplit('.').next().unwrap_or(test);
    match program {
        "vfio_pci_driver_test 0000:01:00.0" => matches!(last, "memcpy_success" | "mix_and_match" | "memcpy_storm"),
        "vfio_p2p_dma_test" => test.contains("_igb.") && matches!(last, "to_bar" | "from_bar"),
        _ => false,
    }
}

/// What `expected()` (the verdicts behind `intel`) becomes behind `viommu`.
fn expected_behind(viommu: &Viommu) -> Expected {
    let mut table = expected();
    for ((program, test), verdict) in table.iter_mut() {
        if test == PROGRAM_VERDICT || verdict.0 != Pass {
            continue;
        }
        let name = program.split(' ').next().unwrap_or(program);
        if viommu.page_tables.is_none() && subject_is_an_iopte(name, test) {
            *verdict = (Skip, "no IOMMU page-table reader");
        }
        if viommu.name == "amd" && igb_dma_copy(program, test) {
            *verdict = (XFail, "QEMU 10.0.2 amd-iommu: a device on a bus other than 0");
        }
    }
    table
}

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

#[path = "../../../tests-support/trial.rs"]
mod trial;
use trial::Completion;

/// The LTS kernels the whole suite also runs on (Debian's source, `--kernel-version`), behind
/// intel, each checked against [`expected_on`]: 6.12 always; 6.1 when its kernel is already
/// built (`vfiotest vm --kernel-version 6.1 --prepare`), since building it adds about ten
/// minutes to a new machine's run.
const LTS: &[(&str, bool)] = &[("6.12", true), ("6.1", false)];

/// What `expected()` (our 7.3 behind intel) becomes on Debian's `version` (6.12.95 or
/// 6.1.176): what the kernel lacks SKIPs naming it; what it gets wrong is an XFAIL naming the
/// upstream fix it lacks (the known bugs in `vm::kernel::debian`).
fn expected_on(version: &str) -> Expected {
    assert!(matches!(version, "6.12" | "6.1"), "expectations are written for 6.12 and 6.1");
    let mut table = expected();
    for ((program, test), verdict) in table.iter_mut() {
        let iommufd = test.split('.').any(|part| part.starts_with("iommufd"));
        // No iommufd before 6.2: its modes' fixtures SKIP before any test's own reason, but
        // for the BAR variants of the permission test, which never open one.
        if version == "6.1" && iommufd && !verdict.1.contains("maps MMIO only from a dma-buf") {
            *verdict = (Skip, "/dev/iommu is missing: the kernel lacks CONFIG_IOMMUFD");
        }
        if test == PROGRAM_VERDICT || verdict.0 != Pass {
            continue;
        }
        let name = program.split(' ').next().unwrap_or(program);
        let last = test.rsplit('.').next().unwrap_or(test);
        let type1 = test.contains(".vfio_type1");
        let cdev = test.contains(".iommufd_") && !test.contains(".iommufd_compat");
        // No BAR export as a dma-buf before 6.19 (CONFIG_VFIO_PCI_DMABUF): iommufd's P2P needs it.
        if name == "vfio_dma_buf_test" || (name == "vfio_p2p_dma_test" && iommufd) {
            *verdict = (Skip, "ENOTTY: the kernel lacks VFIO_DEVICE_FEATURE_DMA_BUF");
        }
        // Type1 maps a pfnmap 4 KiB at a time before 6.15: the 128 GiB BAR says so up front.
        if program == "vfio_dma_mapping_mmio_test 0000:00:03.0" && last == "map_full_bar" && type1 {
            *verdict = (Skip, "maps the BAR's pfnmap too slowly for the test's time");
        }
        if name == "vfio_dma_mapping_test" && last == "overflow" && type1 {
            *verdict = (XFail, "EOVERFLOW since 6012379ede6a");
        }
        match version {
            "6.12" if name == "vfio_pci_sriov_uapi_test" && cdev => *verdict = (XFail, "fixed by be2e70b96c3e"),
            // No VFIO cdev before 6.6.
            "6.1" if name == "vfio_iommufd_setup_test" => {
                *verdict = (Skip, "has no VFIO cdev: the kernel lacks CONFIG_VFIO_DEVICE_CDEV")
            }
            _ => {}
        }
    }
    table
}

/// Whether Debian's `version` has been built here, with any configuration.
fn built(version: &str) -> bool {
    #[path = "../../../tests-support/kernel_source.rs"]
    mod kernel_source;
    let kernels = kernel_source::cache_root().join("kernels");
    std::fs::read_dir(kernels).into_iter().flatten().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with(&format!("linux-{version}-")) && e.path().join("bzImage").exists()
    })
}

/// Every verdict behind `viommu` that isn't the expected one, and every expected one missing.
fn wrong_verdicts(viommu: &Viommu, got: &[vm_results::Verdict]) -> Vec<String> {
    wrong_against(viommu.name, expected_behind(viommu), got)
}

/// Whether `r` is the FAIL of a race every kernel here has and loses now and then: iommufd's
/// container emulation publishes the compat IOAS before it is finalized, so a group that
/// races the first attach gets ENOENT from `VFIO_GROUP_GET_DEVICE_FD`
/// (`iommufd_vfio_compat_ioas_create()`; the fix is `vm/patches/iommufd-compat-race`, and
/// `tests/kernel_patches.rs` widens the window to make it certain). The suite must show it as
/// the FAIL it is; this test takes that FAIL, and only that one, as a right verdict where a
/// PASS is expected, and says it saw it.
fn lost_the_compat_race(r: &vm_results::Verdict) -> bool {
    r.program == "vfio_container_race_test"
        && r.test.contains(".iommufd_compat")
        && r.verdict == Fail
        && r.reason.contains("VFIO_GROUP_GET_DEVICE_FD")
        && r.reason.contains("ENOENT")
}

/// The exit code a run with these verdicts must have: 1 if the kernel lost the compat race
/// (and that was the only failure: any other is a wrong verdict), else 0.
fn expected_exit(got: &[vm_results::Verdict]) -> i32 {
    i32::from(got.iter().any(lost_the_compat_race))
}

/// Every verdict in `got` that isn't the one in `expected`, and every expected one missing,
/// each prefixed with `label`.
fn wrong_against(label: &str, mut expected: Expected, got: &[vm_results::Verdict]) -> Vec<String> {
    let mut wrong = Vec::new();
    for r in got {
        match expected.remove(&(r.program.clone(), r.test.clone())) {
            None => wrong.push(format!("unexpected test {} / {}: {}", r.program, r.test, r.verdict)),
            Some((Pass, _)) if lost_the_compat_race(r) => {
                println!("emulated_machine: {label}: the kernel lost the known compat race: {} ({})", r.test, r.reason)
            }
            Some((verdict, reason)) if verdict != r.verdict || !r.reason.contains(reason) => wrong.push(format!(
                "{} / {}: expected {verdict} {reason:?}, got {} {:?}",
                r.program, r.test, r.verdict, r.reason
            )),
            Some(_) => {}
        }
    }
    wrong.extend(expected.keys().map(|(p, t)| format!("missing: {p} / {t}")));
    wrong.into_iter().map(|w| format!("{label}: {w}")).collect()
}

/// Every vIOMMU of the matrix, against [`expected_behind`].
fn every_viommu() {
    let (code, got) = vm_results::run_vm_matrix(env!("CARGO_BIN_EXE_vfiotest"));
    let mut wrong = Vec::new();
    for viommu in VIOMMUS {
        match got.get(viommu.name) {
            Some(verdicts) => wrong.extend(wrong_verdicts(viommu, verdicts)),
            None => wrong.push(format!("{}: no verdicts at all", viommu.name)),
        }
    }
    assert!(wrong.is_empty(), "{} wrong verdicts:\n{}", wrong.len(), wrong.join("\n"));
    let exit = got.values().map(|v| expected_exit(v)).max().unwrap_or(0);
    assert_eq!(code, Some(exit), "vfiotest vm --viommu all exit status");
    let verdicts: usize = got.values().map(Vec::len).sum();
    println!("emulated_machine: all {verdicts} verdicts behind {} vIOMMUs as expected", VIOMMUS.len());
}

/// Debian's LTS `version` behind intel, against [`expected_on`].
fn lts_kernel(version: &'static str, always: bool) -> Completion {
    if !always && !built(version) {
        return Completion::ignored_with(format!(
            "Debian's {version} is not built here; `vfiotest vm --kernel-version {version} --prepare` adds it"
        ));
    }
    let (code, got) = vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &["--kernel-version", version], &[]);
    let wrong = wrong_against(&format!("Linux {version}"), expected_on(version), &got);
    assert!(wrong.is_empty(), "{} wrong verdicts:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(code, Some(expected_exit(&got)), "vfiotest vm --kernel-version {version} exit status");
    println!("emulated_machine: all {} verdicts on Debian's {version} as expected", got.len());
    Completion::Completed
}

fn main() {
    let mut trials = vec![trial::check("every_viommu", every_viommu)];
    for &(version, always) in LTS {
        let name = format!("debian_{}", version.replace('.', "_"));
        trials.push(trial::check_if(&name, move || lts_kernel(version, always)));
    }
    trial::main(trials);
}
