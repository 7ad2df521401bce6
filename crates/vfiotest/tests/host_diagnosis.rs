//! End to end: a host set up wrongly gets a failure that names the cause and the fix, and the
//! fix works. The guest boots without interrupt remapping (`intremap=off`), so the IOMMU can't
//! isolate MSIs and the kernel refuses every attach with EPERM; then again with the module
//! parameters the diagnosis names, and the same tests pass. Behind virtio-iommu, which has no
//! interrupt remapping on x86 and which the matrix boots with both parameters set, turning
//! them off again gives the same diagnosis in every mode.

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

/// One test per kind of attach: a type1 container, iommufd's container emulation, and a cdev
/// bound to an iommufd. Each refuses in its own ioctl, and each names its own module.
const CASES: [(&str, &str, &str); 3] = [
    ("vfio_type1v2_iommu", "VFIO_SET_IOMMU", "vfio_iommu_type1.allow_unsafe_interrupts=1"),
    ("iommufd_compat_type1", "VFIO_GROUP_GET_DEVICE_FD", "iommufd.allow_unsafe_interrupts=1"),
    ("iommufd", "VFIO_DEVICE_BIND_IOMMUFD", "iommufd.allow_unsafe_interrupts=1"),
];

fn run(vm: &[&str]) -> (Option<i32>, Vec<vm_results::Verdict>) {
    let runs: Vec<String> =
        CASES.iter().map(|(mode, ..)| format!("vfio_dma_mapping_test.{mode}_anonymous.dma_map_unmap")).collect();
    let mut guest = vec!["vfio_dma_mapping_test"];
    for run in &runs {
        guest.extend(["-r", run]);
    }
    let vm: Vec<&str> = vm.iter().copied().chain(["--device", "0000:00:03.0"]).collect();
    vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &vm, &guest)
}

/// Every mode fails, naming its ioctl, the errno, the cause and the module parameter.
fn assert_diagnosed(behind: &str, (code, results): (Option<i32>, Vec<vm_results::Verdict>)) {
    assert_eq!(results.len(), CASES.len(), "{behind}");
    for (mode, ioctl, fix) in CASES {
        let r = results.iter().find(|r| r.test.contains(&format!(".{mode}_anonymous."))).expect("a result per mode");
        assert_eq!(r.verdict, Status::Fail, "{behind}: {}: the kernel refused, so the test fails", r.test);
        for says in [ioctl, "EPERM", "no interrupt remapping", fix] {
            assert!(r.reason.contains(says), "{behind}: {}: the failure should say {says:?}: {:?}", r.test, r.reason);
        }
    }
    assert_eq!(code, Some(1), "{behind}: a failed run exits 1");
}

fn intel_without_intremap_is_diagnosed() {
    assert_diagnosed("intel, intremap=off", run(&["--append", "intremap=off"]));
    println!("host_diagnosis: intel with intremap=off: no interrupt remapping, named with its fix");
}

fn virtio_without_unsafe_interrupts_is_diagnosed() {
    // A module parameter given twice on the kernel's command line takes the last value.
    let unsafe_off = "vfio_iommu_type1.allow_unsafe_interrupts=0 iommufd.allow_unsafe_interrupts=0";
    assert_diagnosed("virtio", run(&["--viommu", "virtio", "--append", unsafe_off]));
    println!("host_diagnosis: virtio-iommu (no interrupt remapping on x86): named with its fix");
}

fn the_named_fix_works() {
    let (code, results) =
        run(&["--append", "intremap=off vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1"]);
    assert!(results.iter().all(|r| r.verdict == Status::Pass), "the named fix works: {:?}", results.len());
    assert_eq!(code, Some(0));
    println!("host_diagnosis: with the fix the diagnosis names, every test passes");
}

fn main() {
    trial::main(vec![
        trial::check("intel_without_intremap_is_diagnosed", intel_without_intremap_is_diagnosed),
        trial::check("virtio_without_unsafe_interrupts_is_diagnosed", virtio_without_unsafe_interrupts_is_diagnosed),
        trial::check("the_named_fix_works", the_named_fix_works),
    ]);
}
