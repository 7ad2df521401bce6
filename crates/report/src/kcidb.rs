//! KCIDB, KernelCI's results database: a run as one checkout, one build and its tests, in
//! KCIDB I/O schema v5.3.
//!
//! A test's path may hold only letters, digits, `_` and `-` between dots, so it names the test
//! (`vfio.vfio_dma_mapping_test.fixture.variant.test`) and the device goes in its environment.
//! KCIDB has no expected failure: an XFAIL is a FAIL with an incident tying it to an issue
//! (the known bug), so dashboards show the bug as known instead of hiding it; an XPASS is a
//! PASS with the issue marked absent.

use std::collections::BTreeMap;

use ksft::Status;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::results::{Results, TestRecord};

/// The schema version written.
pub const VERSION: (u32, u32) = (5, 3);

/// The origin KCIDB knows a submitter by, unless told another.
pub const DEFAULT_ORIGIN: &str = "vfiotest";

/// A KCIDB origin: lowercase letters, digits and `_`.
///
/// # Errors
/// Any other character, or an empty name.
pub fn check_origin(origin: &str) -> Result<(), Error> {
    let valid = !origin.is_empty() && origin.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match valid {
        true => Ok(()),
        false => Err(Error::Origin(origin.to_owned())),
    }
}

#[derive(Serialize)]
struct Document {
    version: Version,
    checkouts: Vec<Value>,
    builds: Vec<Value>,
    tests: Vec<Test>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    issues: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    incidents: Vec<Value>,
}

#[derive(Serialize)]
struct Version {
    major: u32,
    minor: u32,
}

#[derive(Serialize)]
struct Test {
    id: String,
    build_id: String,
    origin: String,
    path: String,
    status: &'static str,
    start_time: String,
    duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    environment: Value,
    misc: Value,
}

/// `results` as a KCIDB submission from `origin`.
///
/// # Errors
/// An origin KCIDB refuses.
pub fn document(results: &Results, origin: &str) -> Result<String, Error> {
    check_origin(origin)?;
    let run = run_id(results);
    let checkout_id = format!("{origin}:{run}");
    let build_id = format!("{origin}:{run}.build");
    let kernel = &results.kernel;
    let checkout = json!({
        "id": checkout_id,
        "origin": origin,
        "start_time": results.started,
        "valid": true,
        "comment": format!("Linux {}", kernel.label.as_deref().unwrap_or(&kernel.release)),
        "misc": { "kernel_label": kernel.label },
    });
    let build = json!({
        "id": build_id,
        "checkout_id": checkout_id,
        "origin": origin,
        "start_time": results.started,
        "architecture": results.machine.arch,
        "config_name": "vfiotest",
        "status": "PASS",
        "comment": format!("{} {}", kernel.release, kernel.version),
        "misc": { "release": kernel.release, "version": kernel.version },
    });
    let mut issues = BTreeMap::new();
    let mut incidents = Vec::new();
    let mut tests = Vec::new();
    for (index, record) in results.tests.iter().enumerate() {
        let id = format!("{origin}:{run}.{index}");
        if matches!(record.verdict, Status::XFail | Status::XPass) {
            let issue_id = format!("{origin}:{}", short_hash(&record.reason));
            incidents.push(json!({
                "id": format!("{id}.incident"),
                "origin": origin,
                "issue_id": issue_id,
                "issue_version": 0,
                "test_id": id,
                "present": record.verdict == Status::XFail,
            }));
            issues
                .entry(issue_id.clone())
                .or_insert_with(|| json!({ "id": issue_id, "version": 0, "origin": origin, "comment": record.reason }));
        }
        tests.push(Test {
            id,
            build_id: build_id.clone(),
            origin: origin.to_owned(),
            path: path(record),
            status: status(record.verdict),
            start_time: results.started.clone(),
            duration: record.duration_s,
            comment: (!record.reason.is_empty()).then(|| record.reason.clone()),
            environment: environment(results, record),
            misc: json!({
                "program": record.program,
                "device": record.device,
                "test": record.name,
                "kselftest_verdict": record.verdict,
            }),
        });
    }
    let document = Document {
        version: Version { major: VERSION.0, minor: VERSION.1 },
        checkouts: vec![checkout],
        builds: vec![build],
        tests,
        issues: issues.into_values().collect(),
        incidents,
    };
    Ok(serde_json::to_string_pretty(&document).expect("a KCIDB document always serializes") + "\n")
}

/// KCIDB's status for a kselftest verdict.
fn status(verdict: Status) -> &'static str {
    match verdict {
        Status::Pass | Status::XPass => "PASS",
        Status::Fail | Status::XFail => "FAIL",
        Status::Skip => "SKIP",
    }
}

/// `vfio.PROGRAM.FIXTURE.VARIANT.TEST`, each part held to KCIDB's characters.
fn path(record: &TestRecord) -> String {
    let parts = std::iter::once("vfio").chain(std::iter::once(record.program.as_str()));
    parts.chain(record.test().into_iter().flat_map(|t| t.split('.'))).map(path_part).collect::<Vec<_>>().join(".")
}

/// A path's part: letters, digits, `_` and `-`; anything else becomes `_`.
fn path_part(part: &str) -> String {
    let part: String =
        part.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    match part.is_empty() {
        true => "_".to_owned(),
        false => part,
    }
}

/// Where a test ran: the machine, and the device with what sysfs said of it.
fn environment(results: &Results, record: &TestRecord) -> Value {
    let machine = &results.machine;
    let comment = match &machine.emulated {
        Some(e) => format!("{} emulated by {} ({}), behind the {} vIOMMU", machine.arch, e.qemu, e.accel, e.viommu),
        None => format!("{} host {}", machine.arch, machine.hostname),
    };
    let device = record.device.as_deref().and_then(|bdf| results.device(bdf));
    json!({
        "comment": comment,
        "misc": {
            "hostname": machine.hostname,
            "emulated": machine.emulated,
            "bdf": record.device,
            "vendor": device.map(|d| &d.vendor),
            "device": device.map(|d| &d.device),
            "class": device.map(|d| &d.class),
        },
    })
}

/// What identifies one run among an origin's: its host, start and kernel.
fn run_id(results: &Results) -> String {
    let viommu = results.machine.emulated.as_ref().map_or("", |e| e.viommu.as_str());
    let key = format!("{}\n{}\n{}\n{}", results.machine.hostname, results.started, results.kernel.release, viommu);
    short_hash(&key)
}

/// 16 hex digits of a SHA-256: stable across runs and versions, so the same bug text is the
/// same issue everywhere.
fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample;

    fn submission() -> Value {
        serde_json::from_str(&document(&sample(), DEFAULT_ORIGIN).unwrap()).unwrap()
    }

    #[test]
    fn every_verdict_becomes_a_test_with_kcidbs_status() {
        let doc = submission();
        let statuses: Vec<&str> =
            doc["tests"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["PASS", "SKIP", "FAIL", "FAIL", "SKIP"]);
        assert_eq!(doc["version"], json!({"major": 5, "minor": 3}));
        assert_eq!(doc["tests"][0]["build_id"], doc["builds"][0]["id"]);
        assert_eq!(doc["builds"][0]["checkout_id"], doc["checkouts"][0]["id"]);
    }

    #[test]
    fn paths_hold_only_kcidbs_characters_and_the_device_is_elsewhere() {
        let doc = submission();
        let paths: Vec<&str> = doc["tests"].as_array().unwrap().iter().map(|t| t["path"].as_str().unwrap()).collect();
        assert_eq!(paths[0], "vfio.vfio_dma_mapping_test.f.vfio_type1_iommu.map");
        assert_eq!(paths[2], "vfio.vfio_dma_mapping_test.f.iommufd.unmap__all_", "no spaces or brackets");
        assert_eq!(paths[4], "vfio.vfio_pci_sriov_uapi_test", "a program's own verdict");
        assert_eq!(doc["tests"][0]["environment"]["misc"]["bdf"], "0000:00:03.0");
        assert_eq!(doc["tests"][0]["environment"]["misc"]["vendor"], "1b36");
    }

    #[test]
    fn an_expected_failure_is_a_failure_with_its_known_issue() {
        let doc = submission();
        let xfail = &doc["tests"][3];
        assert_eq!(xfail["status"], "FAIL");
        let incident = &doc["incidents"][0];
        assert_eq!(incident["test_id"], xfail["id"]);
        assert_eq!(incident["present"], true);
        assert_eq!(doc["issues"][0]["id"], incident["issue_id"]);
        assert_eq!(doc["issues"][0]["comment"], "QEMU's amd-iommu bus number");
    }

    #[test]
    fn an_origin_kcidb_refuses_is_refused() {
        assert!(matches!(document(&sample(), "My Lab"), Err(Error::Origin(_))));
        assert!(matches!(document(&sample(), ""), Err(Error::Origin(_))));
        assert!(document(&sample(), "my_lab2").is_ok());
    }
}
