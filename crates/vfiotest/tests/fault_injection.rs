//! End to end: a test of the tests. The copies from and to unmapped IOVAs used to drop their
//! driver's result, so a device whose recovery failed still passed "nothing changed". With
//! `--inject-fault driver-wedge` every copy wedges the engine and its recovery fails (the igb's
//! reprogramming after its FLR; the edu, which has no reset, never finishes): each of those
//! tests must FAIL, naming the fault, on both engines.

use std::process::Command;

use ksft::Status;

#[derive(serde::Deserialize)]
struct Result {
    program: String,
    test: String,
    verdict: Status,
    reason: String,
}

const ENGINES: [&str; 2] = ["0000:00:05.0", "0000:01:00.0"];
const TESTS: [&str; 3] = ["memcpy_from_unmapped_iova", "memcpy_to_unmapped_iova", "mix_and_match"];

fn main() {
    let results = std::env::temp_dir().join(format!("vfiotest-faults-{}.json", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_vfiotest"));
    command.arg("vm");
    for bdf in ENGINES {
        command.args(["--device", bdf]);
    }
    command.arg("--results").arg(&results).args(["--", "vfio_pci_driver_test", "--inject-fault", "driver-wedge"]);
    for test in TESTS {
        command.args(["-r", &format!("vfio_pci_driver_test.vfio_type1v2_iommu.{test}")]);
    }
    let status = command.status().expect("run vfiotest vm");
    let text = std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no results ({status}): {e}"));
    let _ = std::fs::remove_file(&results);
    let got: Vec<Result> = serde_json::from_str(&text).expect("results are JSON");
    let tests: Vec<&Result> = got.iter().filter(|r| r.test.contains('.')).collect();
    assert_eq!(tests.len(), ENGINES.len() * TESTS.len(), "each test on each engine");
    for r in tests {
        assert_eq!(r.verdict, Status::Fail, "{} / {}: a failed recovery must fail the test", r.program, r.test);
        assert!(r.reason.contains("injected fault"), "{} / {}: {:?}", r.program, r.test, r.reason);
    }
    assert_eq!(status.code(), Some(1));
    println!("fault_injection: a driver whose recovery fails fails every copy test, on both engines");
}
