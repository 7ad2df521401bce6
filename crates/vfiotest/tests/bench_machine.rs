//! End to end: a small bench matrix in the emulated machine. The JSON must have every cell
//! measured with sane statistics, and the numbers must be ordered as the hardware (here,
//! the kernel's page tables) demands: mapping a BAR one page off its huge-page alignment
//! costs more than mapping it aligned, and a dma-buf of a BAR is only ever aligned.

use std::process::Command;

use serde_json::Value;

#[path = "../../../tests-support/trial.rs"]
mod trial;

const MIB: u64 = 1 << 20;

fn small_matrix_is_ordered_as_the_page_tables_demand() {
    let results = std::env::temp_dir().join(format!("vfiotest-bench-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_vfiotest"))
        .args(["vm", "--results"])
        .arg(&results)
        .args(["--", "bench", "--memory", "bar,hugetlb-2m", "--align", "aligned,page-off"])
        .args(["--mode", "vfio_type1v2_iommu,iommufd", "--max-size", &(64 * MIB).to_string(), "--samples", "3"])
        .status()
        .expect("run vfiotest vm -- bench");
    let text = std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no bench JSON ({status}): {e}"));
    let _ = std::fs::remove_file(&results);
    assert_eq!(status.code(), Some(0), "vfiotest vm -- bench exit status");
    let run: Value = serde_json::from_str(&text).expect("the bench writes JSON");

    assert!(run["kernel"].as_str().is_some_and(|k| k.starts_with("7.3")), "kernel: {}", run["kernel"]);
    assert_eq!(run["bar"]["size"], 128u64 << 30, "the 128 GiB BAR of 0000:00:03.0");
    assert!(run["command"].as_array().is_some_and(|c| c.iter().any(|a| a == "bench")));
    let cells = run["cells"].as_array().expect("cells");
    // bar: type1v2 aligned and a page off, 4K..64M (15 sizes each), iommufd aligned only (15);
    // hugetlb-2m: aligned only, 2M..64M (6 sizes) in each of the two modes.
    assert_eq!(cells.len(), 3 * 15 + 2 * 6, "cells: {}", cells.len());

    let median = |memory: &str, align: &str, mode: &str, size: u64, op: &str| -> f64 {
        let cell = cells
            .iter()
            .find(|c| c["memory"] == memory && c["alignment"] == align && c["mode"] == mode && c["size"] == size)
            .unwrap_or_else(|| panic!("no cell {memory} {align} {mode} {size}"));
        cell[op]["median"].as_f64().unwrap_or_else(|| panic!("{memory} {align} {mode} {size} not measured: {cell}"))
    };
    for c in cells {
        assert!(c["skipped"].is_null(), "every cell of this small matrix is measured: {c}");
        for op in ["map", "unmap"] {
            let s = &c[op];
            let (min, med, max) =
                (s["min"].as_f64().unwrap(), s["median"].as_f64().unwrap(), s["max"].as_f64().unwrap());
            assert!(0.0 < min && min <= med && med <= max, "{op} of {c}");
            assert_eq!(s["samples"].as_array().map(Vec::len), Some(3), "{op} of {c}");
        }
        assert!(c["iopte_bytes"].as_u64().is_some_and(|b| b >= 4096), "the IOPTE is read back: {c}");
    }
    // A page off alignment, the BAR faults in 4 KiB at a time: at 64 MiB that is 16384 faults
    // against 32 huge ones.
    let aligned = median("bar", "aligned", "vfio_type1v2_iommu", 64 * MIB, "map");
    let misaligned = median("bar", "page-off", "vfio_type1v2_iommu", 64 * MIB, "map");
    assert!(misaligned > 4.0 * aligned, "64 MiB of BAR: {misaligned} s misaligned vs {aligned} s aligned");
    assert!(
        !cells.iter().any(|c| c["mode"] == "iommufd" && c["alignment"] != "aligned"),
        "a dma-buf has no address to misalign"
    );
    // The aligned 64 MiB BAR is 2 MiB IOPTEs in both modes; hugetlb 2 MiB pages too.
    for (memory, mode) in [("bar", "vfio_type1v2_iommu"), ("bar", "iommufd"), ("hugetlb-2m", "iommufd")] {
        let cell = cells
            .iter()
            .find(|c| {
                c["memory"] == memory && c["alignment"] == "aligned" && c["mode"] == mode && c["size"] == 64 * MIB
            })
            .expect("cell");
        assert_eq!(cell["iopte_bytes"], 2 * MIB, "{memory} {mode}: {cell}");
    }
    println!(
        "bench_machine: {} cells measured; 64 MiB of BAR maps {:.0}x slower a page off alignment",
        cells.len(),
        misaligned / aligned
    );
}

fn main() {
    trial::main(vec![trial::check(
        "small_matrix_is_ordered_as_the_page_tables_demand",
        small_matrix_is_ordered_as_the_page_tables_demand,
    )]);
}
