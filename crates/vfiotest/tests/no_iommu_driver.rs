//! End to end: a guest kernel that brings up no IOMMU (as one built without the driver for
//! the chosen vIOMMU would) is reported in one line before anything runs, not as a hang or a
//! thousand failures. The machine boots with the Intel driver turned off on its command line
//! (`intel_iommu=off` after our `intel_iommu=on`: the last one wins).

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../../tests-support/trial.rs"]
mod trial;

fn a_kernel_without_the_viommu_driver_is_named_in_one_line() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vfiotest"))
        .args(["vm", "--append", "intel_iommu=off", "--device", "0000:00:03.0", "--", "vfio_dma_mapping_test"])
        .output()
        .expect("run vfiotest vm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no IOMMU fails the run:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("vfiotest: the guest kernel found no IOMMU")
            && last.contains("lacks the driver for this vIOMMU"),
        "one line naming the cause: {last:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not ok"), "no test ran, so none failed");
    assert!(started.elapsed() < Duration::from_secs(100), "no hang: {:?}", started.elapsed());
    println!("no_iommu_driver: a kernel without the vIOMMU's driver is named in one line, in {:?}", started.elapsed());
}

fn main() {
    trial::main(vec![trial::check(
        "a_kernel_without_the_viommu_driver_is_named_in_one_line",
        a_kernel_without_the_viommu_driver_is_named_in_one_line,
    )]);
}
