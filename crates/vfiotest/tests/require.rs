//! End to end: a test whose subject is the IOMMU's page table SKIPs on a machine that can't show
//! it, and `--require iommu-pgtables` turns exactly those SKIPs into FAILs that name the
//! feature. The guest boots without debugfs (`vfiotest.no_debugfs`), so there is no page-table
//! reader; the dma-buf tests run on the nvme (a BAR of a page or more, and a reset).

use ksft::Status;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/vm_results.rs"]
mod vm_results;

/// The tests whose subject is an IOPTE, in each iommufd mode.
const NEED_PAGE_TABLES: [&str; 4] = ["map_whole_bar", "map_slice", "revoke_on_memory_disable", "revoke_on_reset"];

fn run(extra: &[&str]) -> (Option<i32>, Vec<vm_results::Verdict>) {
    let vm = ["--append", "vfiotest.no_debugfs", "--device", "0000:00:07.0"];
    let guest: Vec<&str> = std::iter::once("vfio_dma_buf_test").chain(extra.iter().copied()).collect();
    vm_results::run_vm(env!("CARGO_BIN_EXE_vfiotest"), &vm, &guest)
}

fn subject_is_the_page_table(test: &str) -> bool {
    test.starts_with("vfio_dma_buf_map.") && NEED_PAGE_TABLES.iter().any(|t| test.ends_with(&format!(".{t}")))
}

fn page_table_tests_skip_without_a_reader() {
    let (code, results) = run(&[]);
    let mut checked = 0;
    for r in results.iter().filter(|r| r.is_test()) {
        if subject_is_the_page_table(&r.test) {
            assert_eq!(r.verdict, Status::Skip, "{}: nothing about the IOMMU was checked", r.test);
            assert!(r.reason.contains("no IOMMU page-table reader"), "{}: {:?}", r.test, r.reason);
            checked += 1;
        } else if r.test.ends_with(".sub_page_bar") {
            // The nvme's BARs are a page or more: a device's shape, whatever the page tables.
            assert_eq!(r.verdict, Status::Skip, "{}: {:?}", r.test, r.reason);
        } else {
            assert_eq!(r.verdict, Status::Pass, "{}: its subject needs no page table: {:?}", r.test, r.reason);
        }
    }
    assert_eq!(checked, 3 * NEED_PAGE_TABLES.len(), "three iommufd modes");
    assert_eq!(code, Some(0), "skips and passes");
    println!("require: page-table tests SKIP without a reader");
}

fn require_turns_those_skips_into_fails() {
    let (code, results) = run(&["--require", "iommu-pgtables"]);
    let failed: Vec<_> = results.iter().filter(|r| r.verdict == Status::Fail && r.is_test()).collect();
    assert_eq!(failed.len(), 3 * NEED_PAGE_TABLES.len(), "exactly the page-table tests fail");
    for r in failed {
        assert!(subject_is_the_page_table(&r.test), "{} failed", r.test);
        assert!(r.reason.contains("required feature iommu-pgtables is missing"), "{}: {:?}", r.test, r.reason);
    }
    assert_eq!(code, Some(1));
    println!("require: --require iommu-pgtables turns exactly those SKIPs into FAILs naming it");
}

fn main() {
    trial::main(vec![
        trial::check("page_table_tests_skip_without_a_reader", page_table_tests_skip_without_a_reader),
        trial::check("require_turns_those_skips_into_fails", require_turns_those_skips_into_fails),
    ]);
}
