//! Running `vfiotest vm` from an end-to-end test and reading back its verdicts. Shared by path
//! between the vfiotest crate's tests.

use std::process::Command;

use ksft::Status;

/// One verdict from `vfiotest vm --results`.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)] // Each test reads its own fields.
pub struct Verdict {
    pub program: String,
    pub test: String,
    pub verdict: Status,
    pub reason: String,
}

impl Verdict {
    /// Whether it is a test's, not a whole program's.
    #[allow(dead_code)]
    pub fn is_test(&self) -> bool {
        self.test.contains('.')
    }
}

/// Runs `vfiotest vm VM_ARGS --results FILE -- GUEST_ARGS`; its exit code and every verdict.
#[allow(dead_code)]
pub fn run_vm(vfiotest: &str, vm_args: &[&str], guest_args: &[&str]) -> (Option<i32>, Vec<Verdict>) {
    let results = std::env::temp_dir().join(format!("vfiotest-e2e-{}.json", std::process::id()));
    let status = Command::new(vfiotest)
        .arg("vm")
        .args(vm_args)
        .arg("--results")
        .arg(&results)
        .arg("--")
        .args(guest_args)
        .status()
        .expect("run vfiotest vm");
    let text =
        std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no results from vfiotest vm ({status}): {e}"));
    let _ = std::fs::remove_file(&results);
    (status.code(), serde_json::from_str(&text).expect("results are JSON"))
}

/// Runs `vfiotest vm --viommu all --results FILE`; its exit code and each vIOMMU's verdicts
/// (from `FILE.<vIOMMU>.json`), by vIOMMU name.
#[allow(dead_code)]
pub fn run_vm_matrix(vfiotest: &str) -> (Option<i32>, std::collections::BTreeMap<String, Vec<Verdict>>) {
    let results = std::env::temp_dir().join(format!("vfiotest-e2e-{}.json", std::process::id()));
    let status = Command::new(vfiotest)
        .args(["vm", "--viommu", "all", "--results"])
        .arg(&results)
        .status()
        .expect("run vfiotest vm");
    let mut cells = std::collections::BTreeMap::new();
    for viommu in vfiotest::vm::machine::VIOMMUS {
        let file = results.with_extension(format!("{}.json", viommu.name));
        if let Ok(text) = std::fs::read_to_string(&file) {
            cells.insert(viommu.name.to_owned(), serde_json::from_str(&text).expect("results are JSON"));
        }
        let _ = std::fs::remove_file(&file);
    }
    (status.code(), cells)
}
