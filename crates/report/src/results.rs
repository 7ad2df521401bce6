//! The results document: what one run found, on what machine, kernel and devices. Versioned;
//! its JSON schema is generated from these types (`results.schema.json` beside this crate).

use ksft::{Status, Summary};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The document format's version. It changes when a field is removed, renamed or retyped; a
/// new optional field keeps it.
pub const SCHEMA_VERSION: u32 = 1;

/// One run's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "vfiotest results, schema_version 1")]
pub struct Results {
    /// The format's version, 1 here; a reader refuses one it doesn't know.
    pub schema_version: u32,
    /// What produced the document.
    pub tool: Tool,
    /// When the run started, in RFC 3339 (UTC).
    pub started: String,
    /// Where the tests ran.
    pub machine: Machine,
    /// The kernel they ran on.
    pub kernel: Kernel,
    /// The IOMMU modes whose device nodes this kernel has, as upstream names them
    /// (`vfio_type1_iommu`, …, `iommufd`).
    pub modes: Vec<String>,
    /// The devices tested.
    pub devices: Vec<Device>,
    /// Every verdict, in the order the TAP gave them.
    pub tests: Vec<TestRecord>,
    /// The verdicts counted as kselftest's `# Totals` line counts them.
    pub totals: Summary,
}

/// What produced the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    /// `vfiotest`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The machine the tests ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Machine {
    /// Its host name (for an emulated machine: the host's that ran QEMU).
    pub hostname: String,
    /// Its architecture, as `uname -m` says it (`x86_64`).
    pub arch: String,
    /// Set when the machine was emulated (`vfiotest vm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated: Option<Emulated>,
}

/// The emulated machine behind a `vfiotest vm` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Emulated {
    /// QEMU's version line.
    pub qemu: String,
    /// How QEMU ran the guest: `tcg` or `kvm`.
    pub accel: String,
    /// The emulated IOMMU every device sat behind (`intel`, `intel-scalable`, `amd`, …).
    pub viommu: String,
}

/// The kernel the tests ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// Where it came from, as the runner names it (`7.3.4-1~bpo13+1`, `tree /src/linux`, a
    /// bzImage's path), when the runner built or chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A PCI device under test, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Device {
    /// Its address, `segment:bus:device.function` (`0000:00:03.0`).
    pub bdf: String,
    /// Vendor ID, 4 hex digits (`1b36`).
    pub vendor: String,
    /// Device ID, 4 hex digits.
    pub device: String,
    /// Class code, 6 hex digits (`010802`: NVMe).
    pub class: String,
    /// The driver it was bound to when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Its IOMMU group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu_group: Option<u32>,
    /// Its implemented BARs.
    pub bars: Vec<Bar>,
}

/// One implemented BAR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Bar {
    /// 0 to 5.
    pub index: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Memory or I/O ports.
    pub kind: BarKind,
    /// A 64-bit memory BAR.
    pub bits64: bool,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BarKind {
    /// Memory (MMIO): can be mmap'ed and DMA-mapped.
    Memory,
    /// I/O ports.
    Io,
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestRecord {
    /// The program (`vfio_dma_mapping_test`).
    pub program: String,
    /// The device it ran on, when it ran on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `fixture.variant.test`; absent for a program's verdict as a whole (a program that
    /// skipped before any test ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The verdict.
    pub verdict: Status,
    /// A SKIP's reason, a failure's message, or an expected failure's bug.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Seconds from the test's start to its verdict.
    pub duration_s: f64,
}

impl TestRecord {
    /// The test's name under its program, or `None` for a program's own verdict.
    pub fn test(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Results {
    /// A document of the current version; the totals are counted from `tests`.
    pub fn new(
        tool_version: &str,
        started: String,
        machine: Machine,
        kernel: Kernel,
        modes: Vec<String>,
        devices: Vec<Device>,
        tests: Vec<TestRecord>,
    ) -> Self {
        let totals = tests.iter().map(|t| t.verdict).collect();
        Self {
            schema_version: SCHEMA_VERSION,
            tool: Tool { name: "vfiotest".to_owned(), version: tool_version.to_owned() },
            started,
            machine,
            kernel,
            modes,
            devices,
            tests,
            totals,
        }
    }

    /// Reads a document back.
    ///
    /// # Errors
    /// Not JSON, not this shape, or a version this reader doesn't know.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        // The version first, so a newer document is refused for what it is, not for a field.
        #[derive(Deserialize)]
        struct Versioned {
            schema_version: u32,
        }
        let Versioned { schema_version } = serde_json::from_str(text).map_err(Error::Json)?;
        if schema_version != SCHEMA_VERSION {
            return Err(Error::Version(schema_version));
        }
        let results: Self = serde_json::from_str(text).map_err(Error::Json)?;
        let counted: Summary = results.tests.iter().map(|t| t.verdict).collect();
        if counted != results.totals {
            return Err(Error::Totals);
        }
        Ok(results)
    }

    /// The document as pretty JSON, with a final newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a results document always serializes") + "\n"
    }

    /// The device a test ran on, if the document describes it.
    pub fn device(&self, bdf: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.bdf == bdf)
    }
}

/// The JSON schema of [`Results`], as pretty JSON with a final newline.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Results);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small run: a pass, a skip, a failure, an expected failure and a program that skipped.
    pub(crate) fn sample() -> Results {
        let test = |program: &str, name: Option<&str>, verdict, reason: &str| TestRecord {
            program: program.to_owned(),
            device: Some("0000:00:03.0".to_owned()),
            name: name.map(str::to_owned),
            verdict,
            reason: reason.to_owned(),
            duration_s: 0.25,
        };
        Results::new(
            "0.1.0",
            "2026-12-02T18:00:00Z".to_owned(),
            Machine {
                hostname: "host".to_owned(),
                arch: "x86_64".to_owned(),
                emulated: Some(Emulated {
                    qemu: "QEMU emulator version 10.0.2".to_owned(),
                    accel: "tcg".to_owned(),
                    viommu: "intel".to_owned(),
                }),
            },
            Kernel { release: "7.3.4".to_owned(), version: "#1 SMP".to_owned(), label: Some("7.3".to_owned()) },
            vec!["vfio_type1_iommu".to_owned(), "iommufd".to_owned()],
            vec![Device {
                bdf: "0000:00:03.0".to_owned(),
                vendor: "1b36".to_owned(),
                device: "0010".to_owned(),
                class: "010802".to_owned(),
                driver: Some("vfio-pci".to_owned()),
                iommu_group: Some(1),
                bars: vec![Bar { index: 0, size: 16384, kind: BarKind::Memory, bits64: true, prefetchable: false }],
            }],
            vec![
                test("vfio_dma_mapping_test", Some("f.vfio_type1_iommu.map"), Status::Pass, ""),
                test("vfio_dma_mapping_test", Some("f.iommufd.map_huge"), Status::Skip, "no 1 GiB hugetlb page"),
                test("vfio_dma_mapping_test", Some("f.iommufd.unmap <all>"), Status::Fail, "EINVAL & more"),
                test("vfio_pci_driver_test", Some("f.iommufd.memcpy"), Status::XFail, "QEMU's amd-iommu bus number"),
                test("vfio_pci_sriov_uapi_test", None, Status::Skip, "no SR-IOV"),
            ],
        )
    }

    #[test]
    fn a_document_reads_back_as_written() {
        let results = sample();
        assert_eq!(results.totals, Summary { pass: 1, fail: 1, xfail: 1, xpass: 0, skip: 2 });
        assert_eq!(Results::from_json(&results.to_json()).unwrap(), results);
    }

    #[test]
    fn a_reader_refuses_other_versions_and_wrong_totals() {
        let mut json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        json["schema_version"] = 2.into();
        assert!(matches!(Results::from_json(&json.to_string()), Err(Error::Version(2))));
        json["schema_version"] = SCHEMA_VERSION.into();
        json["totals"]["pass"] = 7.into();
        assert!(matches!(Results::from_json(&json.to_string()), Err(Error::Totals)));
        assert!(matches!(Results::from_json("[]"), Err(Error::Json(_))));
        assert!(matches!(Results::from_json("{\"schema_version\": 1}"), Err(Error::Json(_))));
    }

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed = include_str!("../results.schema.json");
        assert!(
            committed == schema(),
            "results.schema.json is stale: regenerate it with `vfiotest report --schema > crates/report/results.schema.json`"
        );
    }

    #[test]
    fn a_document_validates_against_its_schema() {
        let schema: serde_json::Value = serde_json::from_str(&schema()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON schema");
        let document: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        // The schema can fail: a verdict it doesn't know is refused.
        let mut bad = document;
        bad["tests"][0]["verdict"] = "maybe".into();
        assert!(!validator.is_valid(&bad));
    }
}
