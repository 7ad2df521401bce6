//! End to end: the reports fleets read, from one run of the emulated machine. The results
//! document validates against its schema; KCIDB's own validator (`kcidb-io`) accepts the KCIDB
//! submission; the JUnit totals and LAVA's test cases are the TAP's verdicts, counted from the
//! TAP itself; and `vfiotest report` makes the same JUnit from the document. Without a VM: the
//! LAVA definitions have LAVA's shape, and the recorded run's signals are what `vfiotest report
//! --lava` prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ksft::{Status, Summary, TapLine, parse_line};
use serde_json::Value;
use vfiotest_report::Results;

#[path = "../../../tests-support/trial.rs"]
mod trial;

#[path = "../../../tests-support/python.rs"]
mod python;

const VFIOTEST: &str = env!("CARGO_BIN_EXE_vfiotest");

/// A pass marked as a known bug, to see an XPASS carried into every report.
const KNOWN_BUG: &str = "vfio_dma_mapping_mmio_test 0000:00:03.0/*.iommufd.map_partial_bar=a bug made up for this test";

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vfiotest-fleet-{}-{name}", std::process::id()))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The verdicts the TAP shows: each test's result line (one level in, under a program), and a
/// program's own SKIP (it ran no test).
fn tap_verdicts(tap: &str) -> Summary {
    let mut tally = Summary::default();
    for line in tap.lines() {
        let (nested, text) = match line.strip_prefix("# ") {
            Some(inner) => (true, inner),
            None => (false, line),
        };
        if let Some(TapLine::Result { status, .. }) = parse_line(text)
            && (nested || status == Status::Skip)
        {
            tally.add(status);
        }
    }
    tally
}

fn attribute(xml: &str, element: &str, name: &str) -> u32 {
    let start = xml.find(&format!("<{element} ")).unwrap_or_else(|| panic!("no <{element}>"));
    let rest = &xml[start..];
    let at = rest.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
    rest[at..at + rest[at..].find('"').unwrap()].parse().unwrap()
}

fn reports_of_an_emulated_run() {
    let (results, kcidb, junit) = (scratch("results.json"), scratch("kcidb.json"), scratch("junit.xml"));
    let out = Command::new(VFIOTEST)
        .args(["vm", "--device", "0000:00:03.0", "--device", "0000:00:07.0", "--results"])
        .arg(&results)
        .arg("--kcidb")
        .arg(&kcidb)
        .arg("--junit")
        .arg(&junit)
        .args(["--", "vfio_dma_mapping_mmio_test", "vfio_pci_sriov_uapi_test", "--known-bug", KNOWN_BUG])
        .stderr(Stdio::inherit())
        .output()
        .expect("run vfiotest vm");
    assert_eq!(out.status.code(), Some(0), "vfiotest vm");
    let tap = String::from_utf8(out.stdout).expect("TAP is UTF-8");

    // The document: its schema, its reader, and the TAP's verdicts.
    let text = std::fs::read_to_string(&results).expect("the results document");
    let document: Value = serde_json::from_str(&text).unwrap();
    let schema: Value = serde_json::from_str(&vfiotest_report::results::schema()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "the document breaks its schema: {errors:?}");
    let read = Results::from_json(&text).expect("the document reads back");
    let from_tap = tap_verdicts(&tap);
    assert_eq!(read.totals, from_tap, "the document's totals are the TAP's");
    assert_eq!((from_tap.xpass, from_tap.fail), (1, 0), "the one XPASS, no failure");
    assert!(from_tap.skip >= 1, "the SR-IOV program skips whole on devices that are no PF");
    let devices: Vec<&str> = read.devices.iter().map(|d| d.bdf.as_str()).collect();
    assert_eq!(devices, ["0000:00:03.0", "0000:00:07.0"]);
    assert_eq!(read.devices[1].class, "010802", "the nvme, as sysfs says");
    assert_eq!(read.modes.len(), 5, "every mode's nodes: {:?}", read.modes);
    assert_eq!(read.machine.emulated.as_ref().map(|e| e.viommu.as_str()), Some("intel"));

    // KCIDB, by its own validator.
    let kcidb_path = kcidb.to_str().unwrap();
    let said = python::run(
        "import json, sys, kcidb_io\n\
         data = json.load(open(sys.argv[1]))\n\
         kcidb_io.schema.LATEST.validate(data)\n\
         print(len(data['tests']), sum(i['present'] is False for i in data.get('incidents', [])))",
        &[kcidb_path],
    );
    assert_eq!(said.trim(), format!("{} 1", from_tap.tests()), "every verdict a test; the XPASS's issue absent");

    // JUnit, against the TAP; and `vfiotest report` makes the same from the document.
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report");
    assert_eq!(attribute(&xml, "testsuites", "tests"), from_tap.tests());
    assert_eq!(attribute(&xml, "testsuites", "failures"), from_tap.fail);
    assert_eq!(attribute(&xml, "testsuites", "skipped"), from_tap.skip);
    let again = scratch("again.xml");
    let made = Command::new(VFIOTEST).arg("report").arg(&results).arg("--junit").arg(&again).status().unwrap();
    assert!(made.success());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), xml, "the same JUnit from the document");

    // LAVA: a test case per verdict.
    let lava = Command::new(VFIOTEST).arg("report").arg(&results).arg("--lava").output().unwrap();
    let signals = String::from_utf8(lava.stdout).unwrap();
    let cases = signals.lines().filter(|l| l.starts_with("<LAVA_SIGNAL_TESTCASE ")).count();
    assert_eq!(cases as u32, from_tap.tests());

    for path in [&results, &kcidb, &junit, &again] {
        let _ = std::fs::remove_file(path);
    }
    println!("fleet_reports: {} verdicts, the same in the document, KCIDB (valid), JUnit and LAVA", from_tap.tests());
}

/// A YAML file as JSON, read by PyYAML.
fn yaml(path: &Path) -> Value {
    let json = python::run(
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        &[path.to_str().unwrap()],
    );
    serde_json::from_str(&json).unwrap()
}

fn lava_definitions_have_lavas_shape() {
    let definition = yaml(&repo("contrib/lava/vfiotest.yaml"));
    assert_eq!(definition["metadata"]["format"], "Lava-Test Test Definition 1.0");
    assert_eq!(definition["metadata"]["name"], "vfiotest");
    for param in ["VFIOTEST_URL", "DEVICES", "REQUIRE", "PROGRAMS"] {
        assert!(definition["params"].get(param).is_some(), "parameter {param}");
    }
    let steps = definition["run"]["steps"].as_array().expect("run.steps");
    assert!(steps.iter().all(Value::is_string), "steps are shell lines");
    let script = repo("contrib/lava/run-vfiotest.sh");
    assert!(steps.iter().any(|s| s.as_str().unwrap().contains("./run-vfiotest.sh")));
    let checked = Command::new("sh").arg("-n").arg(&script).status().unwrap();
    assert!(checked.success(), "the script parses");

    let job = yaml(&repo("contrib/lava/qemu-job.yaml"));
    assert_eq!(job["device_type"], "qemu");
    assert!(job["job_name"].is_string() && job["timeouts"]["job"].is_object());
    let actions = job["actions"].as_array().expect("actions");
    let kinds: Vec<&str> = actions.iter().filter_map(|a| a.as_object()?.keys().next().map(String::as_str)).collect();
    assert_eq!(kinds, ["deploy", "boot", "test"]);
    assert_eq!(actions[1]["boot"]["method"], "qemu");
    let definitions = &actions[2]["test"]["definitions"][0];
    assert_eq!(definitions["path"], "contrib/lava/vfiotest.yaml");
    // The job's devices are the emulated machine's.
    let options: Vec<&str> =
        job["context"]["extra_options"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for device in vfiotest::vm::machine::TOPOLOGY.iter().filter(|d| !d.qemu.starts_with("nvme")) {
        let model = device.qemu.split(',').next().unwrap();
        assert!(options.iter().any(|o| o.contains(model)), "{model} is in the job");
        let wanted = definitions["parameters"]["DEVICES"].as_str().unwrap();
        assert!(wanted.contains(device.bdf), "{} is tested", device.bdf);
    }
    println!("fleet_reports: the LAVA definition and job have LAVA's shape");
}

/// The recorded run's signals are what `vfiotest report --lava` prints from its document.
fn recorded_signals_are_reproduced() {
    let expected = std::fs::read_to_string(repo("contrib/lava/example-signals.txt")).unwrap();
    let out =
        Command::new(VFIOTEST).arg("report").arg(repo("contrib/lava/example-results.json")).arg("--lava").output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

fn main() {
    trial::main(vec![
        trial::check("lava_definitions_have_lavas_shape", lava_definitions_have_lavas_shape),
        trial::check("recorded_signals_are_reproduced", recorded_signals_are_reproduced),
        trial::check("reports_of_an_emulated_run", reports_of_an_emulated_run),
    ]);
}
