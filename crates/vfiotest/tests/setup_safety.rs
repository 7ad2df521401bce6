//! End to end: `vfiotest setup` can't take a disk the host uses, and `cleanup` gives a device
//! back exactly as it was. The guest's nvme is held by the kernel's own nvme driver at boot; the
//! guest runs the proof script (`vfiotest vm -- setup-proof`), which puts swap on the disk,
//! runs setup, a test program and cleanup as a user would, and checks the driver after each.

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

/// Every step of the proof, in order.
const STEPS: [&str; 11] = [
    "boots_on_its_driver",
    "refuses_a_disk_in_use_as_swap",
    "takes_an_idle_disk",
    "records_the_driver",
    "runs_after_setup",
    "cleanup_restores_the_driver",
    "cleanup_again_changes_nothing",
    "corrupt_state_is_refused",
    "cleanup_after_a_crash",
    "force_takes_a_disk_in_use",
    "cleanup_after_force",
];

fn setup_and_cleanup_steps() {
    let (code, got) =
        vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &["--device", "0000:00:07.0"], &["setup-proof"]);
    let names: Vec<&str> = got.iter().map(|r| r.test.trim_start_matches("vfio_setup.")).collect();
    assert_eq!(names, STEPS, "every step, in order");
    for r in &got {
        assert_eq!(r.verdict, Status::Pass, "{}: {}", r.test, r.reason);
    }
    assert_eq!(code, Some(0));
    println!("setup_safety: all {} steps as expected", got.len());
}

fn main() {
    trial::main(vec![trial::check("setup_and_cleanup_steps", setup_and_cleanup_steps)]);
}
