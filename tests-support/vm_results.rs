//! Running `vfiotest vm` from an end-to-end test and reading back its verdicts. Shared by path
//! between the vfiotest crate's tests.

use std::process::Command;

use ksft::Status;

/// One verdict from `vfiotest vm --results`.
#[derive(Debug)]
#[allow(dead_code)] // Each test reads its own fields.
pub struct Verdict {
    /// The program as the TAP names it: `program BDF` for a per-device program.
    pub program: String,
    /// `fixture.variant.test`, or `(program)` for a program's own verdict.
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

/// The verdicts of a results document, checked against its schema version and totals.
#[allow(dead_code)]
pub fn read_results(text: &str) -> Vec<Verdict> {
    let results = vfiotest_report::Results::from_json(text).unwrap_or_else(|e| panic!("a results document: {e}"));
    results
        .tests
        .into_iter()
        .map(|t| Verdict {
            program: match &t.device {
                Some(bdf) => format!("{} {bdf}", t.program),
                None => t.program.clone(),
            },
            test: t.name.clone().unwrap_or_else(|| vfiotest::vm::console::PROGRAM_VERDICT.to_owned()),
            verdict: t.verdict,
            reason: t.reason,
        })
        .collect()
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
    (status.code(), read_results(&text))
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
            cells.insert(viommu.name.to_owned(), read_results(&text));
        }
        let _ = std::fs::remove_file(&file);
    }
    (status.code(), cells)
}
