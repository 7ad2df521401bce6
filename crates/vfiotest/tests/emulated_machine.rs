//! End to end: boot the emulated machine, run the whole suite in a real Linux 7.3 guest on
//! emulated devices behind an emulated Intel IOMMU, and check the exact verdict of every test.
//!
//! The expected table says, per device, what upstream's semantics demand: the type1 modes map
//! a BAR's VA and every iommufd mode refuses it, so all of them pass; tests that can't apply to
//! a device's BAR shape skip with a reason. Nothing may fail, and nothing may be missing.

use std::collections::BTreeMap;
use std::process::Command;

const MODES: [&str; 5] = [
    "vfio_type1_iommu",
    "vfio_type1v2_iommu",
    "iommufd_compat_type1",
    "iommufd_compat_type1v2",
    "iommufd",
];
const MMIO: &str = "vfio_dma_mapping_mmio_test";
const SETUP: &str = "vfio_iommufd_setup_test";
const SETUP_TESTS: [&str; 6] = [
    "bind",
    "get_info_without_bind_fails",
    "bind_bad_iommufd_fails",
    "repeated_bind_fails",
    "attach_detatch_pt",
    "attach_invalid_pt_fails",
];

/// (device, test) → expected verdict and, for skips, a piece of the reason.
fn expected() -> BTreeMap<(String, String), (&'static str, &'static str)> {
    let mut table = BTreeMap::new();
    let devices = [
        "0000:00:03.0",
        "0000:00:04.0",
        "0000:00:05.0",
        "0000:00:06.0",
        "0000:00:07.0",
    ];
    for dev in devices {
        for mode in MODES {
            for test in ["map_full_bar", "map_partial_bar", "map_bar_misaligned"] {
                // 00:04.0's only memory BAR is 2 KiB: one page can be mapped, but no "partial"
                // page of it exists.
                let verdict = match (dev, test) {
                    ("0000:00:04.0", "map_partial_bar") => ("skip", "BAR too small (size=0x800)"),
                    _ => ("pass", ""),
                };
                table.insert((format!("{MMIO} {dev}"), format!("{MMIO}.{mode}.{test}")), verdict);
            }
        }
        for test in SETUP_TESTS {
            table.insert((format!("{SETUP} {dev}"), format!("vfio_cdev.{test}")), ("pass", ""));
        }
    }
    table
}

#[derive(serde::Deserialize)]
struct Result {
    program: String,
    test: String,
    verdict: String,
    reason: String,
}

fn main() {
    let results = std::env::temp_dir().join(format!("vfiotest-e2e-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_vfiotest"))
        .args(["vm", "--results"])
        .arg(&results)
        .status()
        .expect("run vfiotest vm");
    let text =
        std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no results from vfiotest vm ({status}): {e}"));
    let _ = std::fs::remove_file(&results);
    let got: Vec<Result> = serde_json::from_str(&text).expect("results are JSON");

    let mut expected = expected();
    let mut wrong = Vec::new();
    for r in &got {
        match expected.remove(&(r.program.clone(), r.test.clone())) {
            None => wrong.push(format!("unexpected test {} / {}: {}", r.program, r.test, r.verdict)),
            Some((verdict, reason)) if verdict != r.verdict || !r.reason.contains(reason) => wrong.push(format!(
                "{} / {}: expected {verdict} {reason:?}, got {} {:?}",
                r.program, r.test, r.verdict, r.reason
            )),
            Some(_) => {}
        }
    }
    wrong.extend(expected.keys().map(|(p, t)| format!("missing: {p} / {t}")));
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(status.code(), Some(0), "vfiotest vm exit status");
    println!("emulated_machine: all {} verdicts as expected", got.len());
}
