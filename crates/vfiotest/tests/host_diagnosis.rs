//! End to end: a host set up wrongly gets a failure that names the cause and the fix, and the
//! fix works. The guest boots without interrupt remapping (`intremap=off`), so the IOMMU can't
//! isolate MSIs and the kernel refuses every attach with EPERM; then again with the module
//! parameters the diagnosis names, and the same tests pass.

use ksft::Status;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

/// One test per kind of attach: a type1 container, iommufd's container emulation, and a cdev
/// bound to an iommufd. Each refuses in its own ioctl, and each names its own module.
const CASES: [(&str, &str, &str); 3] = [
    ("vfio_type1v2_iommu", "VFIO_SET_IOMMU", "vfio_iommu_type1.allow_unsafe_interrupts=1"),
    ("iommufd_compat_type1", "VFIO_GROUP_GET_DEVICE_FD", "iommufd.allow_unsafe_interrupts=1"),
    ("iommufd", "VFIO_DEVICE_BIND_IOMMUFD", "iommufd.allow_unsafe_interrupts=1"),
];

fn run(append: &str) -> (Option<i32>, Vec<vm_results::Verdict>) {
    let runs: Vec<String> =
        CASES.iter().map(|(mode, ..)| format!("vfio_dma_mapping_test.{mode}_anonymous.dma_map_unmap")).collect();
    let mut guest = vec!["vfio_dma_mapping_test"];
    for run in &runs {
        guest.extend(["-r", run]);
    }
    vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &["--append", append, "--device", "0000:00:03.0"], &guest)
}

fn main() {
    let (code, results) = run("intremap=off");
    assert_eq!(results.len(), CASES.len());
    for (mode, ioctl, fix) in CASES {
        let r = results.iter().find(|r| r.test.contains(&format!(".{mode}_anonymous."))).expect("a result per mode");
        assert_eq!(r.verdict, Status::Fail, "{}: the kernel refused, so the test fails", r.test);
        for says in [ioctl, "EPERM", "no interrupt remapping", fix] {
            assert!(r.reason.contains(says), "{}: the failure should say {says:?}: {:?}", r.test, r.reason);
        }
    }
    assert_eq!(code, Some(1), "a failed run exits 1");

    let (code, results) =
        run("intremap=off vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1");
    assert!(results.iter().all(|r| r.verdict == Status::Pass), "the named fix works: {:?}", results.len());
    assert_eq!(code, Some(0));
    println!("host_diagnosis: no interrupt remapping is named with its fix, and the fix works");
}
