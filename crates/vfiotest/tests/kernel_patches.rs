//! End to end: the iommufd compat IOAS race, reproduced on demand and fixed on demand, each in
//! one `vfiotest vm` command. The test-only patch makes the first group to attach sleep right
//! after publishing the compat IOAS (`iommufd.compat_publish_delay_ms`); a second group
//! attaching at the same moment then lands in the window every round. On the stock kernel its
//! `VFIO_GROUP_GET_DEVICE_FD` fails with ENOENT (the IOAS's ID is still reserved); with the fix
//! (publish and finalize in one critical section) the same delay at the same point is harmless.

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

const PATCHES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../vm/patches/");
const FIX: &str = "iommufd-compat-race/0001-iommufd-Finalize-the-compat-IOAS-in-the-same-critica.patch";
const WIDEN_ON_STOCK: &str = "test-only/0001-iommufd-TEST-ONLY-widen-the-compat-IOAS-window-on-stock.patch";
const WIDEN_ON_FIX: &str = "test-only/0001-iommufd-TEST-ONLY-widen-the-compat-IOAS-window-on-the-fix.patch";
/// Long enough for the second group's whole open under TCG, short enough for ten rounds.
const DELAY: &str = "iommufd.compat_publish_delay_ms=500";

/// The race program on two devices in different IOMMU groups, on Debian's 7.3 with `patches`.
fn race(patches: &[&str]) -> (Option<i32>, Vec<vm_results::Verdict>) {
    let paths: Vec<String> = patches.iter().map(|p| format!("{PATCHES}{p}")).collect();
    let mut vm: Vec<&str> = paths.iter().flat_map(|p| ["--patch", p.as_str()]).collect();
    vm.extend(["--append", DELAY, "--device", "0000:00:03.0", "--device", "0000:00:04.0"]);
    let (code, got) = vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &vm, &["vfio_container_race_test"]);
    (code, got.into_iter().filter(|r| r.is_test()).collect())
}

fn reproduced_with_the_window_widened() {
    let (code, got) = race(&[WIDEN_ON_STOCK]);
    assert_eq!(got.len(), 4, "the four container modes: {got:?}");
    for r in &got {
        if r.test.contains(".iommufd_compat") {
            assert_eq!(r.verdict, Status::Fail, "{}: the window is wide open: {:?}", r.test, r.reason);
            assert!(r.reason.contains("ENOENT") && r.reason.contains("round 1/"), "{}: {:?}", r.test, r.reason);
        } else {
            assert_eq!(r.verdict, Status::Pass, "{}: the legacy container has no such window: {:?}", r.test, r.reason);
        }
    }
    assert_eq!(code, Some(1));
    println!("kernel_patches: stock 7.3 + the widened window: both iommufd compat modes fail with ENOENT in round 1");
}

fn fixed_with_the_window_widened() {
    let (code, got) = race(&[FIX, WIDEN_ON_FIX]);
    assert_eq!(got.len(), 4, "the four container modes: {got:?}");
    for r in &got {
        assert_eq!(r.verdict, Status::Pass, "{}: {:?}", r.test, r.reason);
    }
    assert_eq!(code, Some(0));
    println!("kernel_patches: 7.3 + the fix + the same widened window: every round of every mode attaches");
}

fn main() {
    trial::main(vec![
        trial::check("compat_race_reproduced_with_the_window_widened", reproduced_with_the_window_widened),
        trial::check("compat_race_fixed_with_the_window_widened", fixed_with_the_window_widened),
    ]);
}
