//! End to end: a test of the tests. The copies from and to unmapped IOVAs used to drop their
//! driver's result, so a device whose recovery failed still passed "nothing changed". With
//! `--inject-fault driver-wedge` every copy wedges the engine and its recovery fails (the igb's
//! reprogramming after its FLR; the edu, which has no reset, never finishes): each of those
//! tests must FAIL, naming the fault, on both engines.

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

const ENGINES: [&str; 2] = ["0000:00:05.0", "0000:01:00.0"];
const TESTS: [&str; 3] = ["memcpy_from_unmapped_iova", "memcpy_to_unmapped_iova", "mix_and_match"];

fn a_failed_recovery_fails_every_copy_test() {
    let mut guest = vec!["vfio_pci_driver_test", "--inject-fault", "driver-wedge"];
    let runs: Vec<String> = TESTS.iter().map(|t| format!("vfio_pci_driver_test.vfio_type1v2_iommu.{t}")).collect();
    for run in &runs {
        guest.extend(["-r", run]);
    }
    let devices: Vec<&str> = ENGINES.iter().flat_map(|bdf| ["--device", bdf]).collect();
    let (code, got) = vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &devices, &guest);
    let tests: Vec<_> = got.iter().filter(|r| r.is_test()).collect();
    assert_eq!(tests.len(), ENGINES.len() * TESTS.len(), "each test on each engine");
    for r in tests {
        assert_eq!(r.verdict, Status::Fail, "{} / {}: a failed recovery must fail the test", r.program, r.test);
        assert!(r.reason.contains("injected fault"), "{} / {}: {:?}", r.program, r.test, r.reason);
    }
    assert_eq!(code, Some(1));
    println!("fault_injection: a driver whose recovery fails fails every copy test, on both engines");
}

fn main() {
    trial::main(vec![trial::check("a_failed_recovery_fails_every_copy_test", a_failed_recovery_fails_every_copy_test)]);
}
