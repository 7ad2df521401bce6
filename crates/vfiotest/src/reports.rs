//! What a run reports besides its TAP: the results document (`--results`) and the formats made
//! from it (`--kcidb`, `--junit`; LAVA's signals through `vfiotest report --lava`). The TAP on
//! stdout is never changed by them.

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use ksft::Status;
use serde::{Deserialize, Serialize};
use vfio::sysfs::Sysfs;
use vfio::{Bdf, IommuMode};
use vfiotest_report::{Bar, BarKind, Device, Kernel, Machine, Results, TestRecord, junit, kcidb};

use crate::Fatal;
use crate::programs::{Devices, ProgramSpec};
use crate::vm::console::{Console, PROGRAM_VERDICT, TestResult};

/// The reports a run writes, each to its own file.
#[derive(Args, Clone, Debug, Default)]
pub struct ReportArgs {
    /// Write every verdict, with the machine, kernel and devices, to FILE as JSON (its schema:
    /// `vfiotest report --schema`).
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Write the run to FILE as a KCIDB submission (KCIDB I/O schema v5.3), for KernelCI.
    #[arg(long, value_name = "FILE")]
    pub kcidb: Option<PathBuf>,
    /// The KCIDB origin the submission is from: lowercase letters, digits and '_'.
    #[arg(long, value_name = "NAME", default_value = kcidb::DEFAULT_ORIGIN, value_parser = origin)]
    pub kcidb_origin: String,
    /// Write the run to FILE as JUnit XML, for CI dashboards.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

fn origin(text: &str) -> Result<String, String> {
    kcidb::check_origin(text).map(|()| text.to_owned()).map_err(|e| e.to_string())
}

impl ReportArgs {
    /// Whether any report was asked for.
    pub fn any(&self) -> bool {
        self.results.is_some() || self.kcidb.is_some() || self.junit.is_some()
    }

    /// The same reports in files of their own beside the ones asked for, for one part of a run
    /// (a vIOMMU, a kernel): `out.json` becomes `out.PART.json`.
    pub fn beside(&self, part: &str) -> Self {
        let beside = |path: &Option<PathBuf>| path.as_ref().map(|p| beside(p, part));
        Self {
            results: beside(&self.results),
            kcidb: beside(&self.kcidb),
            kcidb_origin: self.kcidb_origin.clone(),
            junit: beside(&self.junit),
        }
    }

    /// Writes each report asked for.
    ///
    /// # Errors
    /// A file that can't be written (a full disk, a missing directory), in one line; nothing
    /// half-written is left behind.
    pub fn write(&self, results: &Results) -> Result<(), Fatal> {
        if let Some(path) = &self.results {
            write_whole(path, &results.to_json())?;
        }
        if let Some(path) = &self.kcidb {
            let document = kcidb::document(results, &self.kcidb_origin).map_err(|e| Fatal::fail(e.to_string()))?;
            write_whole(path, &document)?;
        }
        if let Some(path) = &self.junit {
            write_whole(path, &junit::document(results))?;
        }
        Ok(())
    }
}

/// `dir/name.ext` → `dir/name.PART.ext` (`dir/name.PART` without an extension).
fn beside(path: &Path, part: &str) -> PathBuf {
    match path.extension() {
        Some(ext) => path.with_extension(format!("{part}.{}", ext.to_string_lossy())),
        None => path.with_extension(part),
    }
}

/// Writes `text` to a temporary file beside `path` and renames it there: a reader never sees
/// half a report, and a failed write leaves nothing.
pub fn write_whole(path: &Path, text: &str) -> Result<(), Fatal> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let written = fs::write(&temporary, text).and_then(|()| fs::rename(&temporary, path));
    written.map_err(|e| {
        let _nothing_to_remove = fs::remove_file(&temporary);
        Fatal::fail(format!("writing {}: {e}", path.display()))
    })
}

/// What a machine is, apart from its verdicts: read where the tests run (the guest sends it to
/// the host as a mark).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub machine: Machine,
    pub kernel: Kernel,
    pub modes: Vec<String>,
    pub devices: Vec<Device>,
}

/// Reads this machine: uname, the IOMMU modes whose nodes exist, and each device's sysfs.
pub fn inventory(bdfs: &[Bdf]) -> Inventory {
    let uname = rustix::system::uname();
    let text = |s: &std::ffi::CStr| s.to_string_lossy().into_owned();
    let sysfs = Sysfs::system();
    Inventory {
        machine: Machine { hostname: text(uname.nodename()), arch: text(uname.machine()), emulated: None },
        kernel: Kernel { release: text(uname.release()), version: text(uname.version()), label: None },
        modes: IommuMode::ALL.iter().filter(|m| nodes_exist(**m)).map(|m| m.name().to_owned()).collect(),
        devices: bdfs.iter().map(|&bdf| device(&sysfs, bdf)).collect(),
    }
}

/// Whether the device nodes a mode opens exist.
fn nodes_exist(mode: IommuMode) -> bool {
    let exists = |p: &str| Path::new(p).exists();
    match mode.backend() {
        vfio::Backend::Container { path, .. } => exists(path),
        vfio::Backend::Iommufd => exists("/dev/iommu") && exists("/dev/vfio/devices"),
    }
}

/// What sysfs says of one device; what it can't read is left out, not guessed.
fn device(sysfs: &Sysfs, bdf: Bdf) -> Device {
    let id = |attr: &str, digits: usize| {
        sysfs.read_hex(bdf, attr).map_or_else(|_| "?".repeat(digits), |v| format!("{v:0digits$x}"))
    };
    const IORESOURCE_PREFETCH: u64 = 0x2000;
    const IORESOURCE_MEM_64: u64 = 0x0010_0000;
    let bars = (0..6)
        .filter_map(|index| {
            let bar = sysfs.bar_resource(bdf, index).ok().flatten()?;
            Some(Bar {
                index,
                size: bar.len,
                kind: if bar.is_memory() { BarKind::Memory } else { BarKind::Io },
                bits64: bar.flags & IORESOURCE_MEM_64 != 0,
                prefetchable: bar.flags & IORESOURCE_PREFETCH != 0,
            })
        })
        .collect();
    Device {
        bdf: bdf.to_string(),
        vendor: id("vendor", 4),
        device: id("device", 4),
        class: id("class", 6),
        driver: sysfs.driver(bdf).ok().flatten(),
        iommu_group: sysfs.iommu_group(bdf).ok(),
        bars,
    }
}

/// The verdicts as the document keeps them: each test, and a program's own verdict when it
/// says what its tests don't: it skipped whole, or failed with no failed test (its setup
/// refused to run).
/// A run on one device names its per-device programs without it, as upstream's TAP does:
/// `only_device` is that device.
pub fn records(results: &[TestResult], only_device: Option<&str>) -> Vec<TestRecord> {
    let a_test_failed = |program: &str| {
        results.iter().any(|t| t.test != PROGRAM_VERDICT && t.program == program && t.verdict == Status::Fail)
    };
    let says_more = |r: &TestResult| match r.verdict {
        Status::Skip => true,
        Status::Fail => !a_test_failed(&r.program),
        _ => false,
    };
    results
        .iter()
        .filter(|r| r.test != PROGRAM_VERDICT || says_more(r))
        .map(|r| {
            let (program, device) = match r.program.rsplit_once(' ') {
                Some((program, bdf)) if bdf.parse::<Bdf>().is_ok() => (program.to_owned(), Some(bdf.to_owned())),
                _ => {
                    let per_device = ProgramSpec::of(&r.program).is_some_and(|p| matches!(p.tests, Devices::Each(_)));
                    (r.program.clone(), only_device.filter(|_| per_device).map(str::to_owned))
                }
            };
            TestRecord {
                program,
                device,
                name: (r.test != PROGRAM_VERDICT).then(|| r.test.clone()),
                verdict: r.verdict,
                reason: r.reason.clone(),
                duration_s: r.duration_s,
            }
        })
        .collect()
}

/// Now, in RFC 3339 (UTC, whole seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The results document of a run of this binary's version.
pub fn document(started: String, inventory: Inventory, results: &[TestResult]) -> Results {
    let only_device = match inventory.devices.as_slice() {
        [device] => Some(device.bdf.clone()),
        _ => None,
    };
    let records = records(results, only_device.as_deref());
    Results::new(
        env!("CARGO_PKG_VERSION"),
        started,
        inventory.machine,
        inventory.kernel,
        inventory.modes,
        inventory.devices,
        records,
    )
}

/// Reads the TAP `vfiotest run` writes as it goes by, with the parser that reads the emulated
/// machine's, and keeps the verdicts.
pub struct Recorder {
    console: RefCell<Console>,
    partial: RefCell<[Vec<u8>; 2]>,
}

impl Recorder {
    /// A recorder for a run whose output, if it is one program's, is `single_program`'s.
    pub fn new(single_program: &str) -> Self {
        Self { console: RefCell::new(Console::reading_tap(single_program)), partial: RefCell::default() }
    }

    /// A writer that passes everything to `inner` and shows its lines to the recorder; `stream`
    /// 0 and 1 keep stdout's and stderr's partial lines apart.
    pub fn tee<'a, W: Write>(&'a self, stream: usize, inner: W) -> Tee<'a, W> {
        Tee { recorder: self, stream, inner }
    }

    /// The verdicts seen.
    pub fn into_results(self) -> Vec<TestResult> {
        self.console.into_inner().results
    }
}

/// See [`Recorder::tee`].
pub struct Tee<'a, W> {
    recorder: &'a Recorder,
    stream: usize,
    inner: W,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut partial = self.recorder.partial.borrow_mut();
        let pending = &mut partial[self.stream];
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            self.recorder.console.borrow_mut().feed(String::from_utf8_lossy(&line[..end]).as_ref());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(program: &str, test: &str, verdict: Status) -> TestResult {
        TestResult { program: program.into(), test: test.into(), verdict, reason: String::new(), duration_s: 0.5 }
    }

    #[test]
    fn records_split_the_device_off_and_keep_what_tests_dont_say() {
        let records = records(
            &[
                result("vfio_dma_mapping_test 0000:00:03.0", "f.v.t", Status::Pass),
                result("vfio_dma_mapping_test 0000:00:03.0", PROGRAM_VERDICT, Status::Pass),
                result("vfio_pci_sriov_uapi_test 0000:00:04.0", PROGRAM_VERDICT, Status::Skip),
                result("vfio_container_race_test", "f.v.race", Status::Fail),
                result("vfio_container_race_test", PROGRAM_VERDICT, Status::Fail),
                result("vfio_pci_device_test 0000:00:05.0", PROGRAM_VERDICT, Status::Fail),
            ],
            None,
        );
        let got: Vec<_> =
            records.iter().map(|r| (r.program.as_str(), r.device.as_deref(), r.name.as_deref(), r.verdict)).collect();
        assert_eq!(
            got,
            [
                ("vfio_dma_mapping_test", Some("0000:00:03.0"), Some("f.v.t"), Status::Pass),
                ("vfio_pci_sriov_uapi_test", Some("0000:00:04.0"), None, Status::Skip),
                ("vfio_container_race_test", None, Some("f.v.race"), Status::Fail),
                ("vfio_pci_device_test", Some("0000:00:05.0"), None, Status::Fail),
            ]
        );
    }

    #[test]
    fn a_run_on_one_device_names_it_for_per_device_programs() {
        let records = records(
            &[
                result("vfio_dma_mapping_test", "f.v.t", Status::Pass),
                result("vfio_container_race_test", "f.v.race", Status::Pass),
            ],
            Some("0000:00:03.0"),
        );
        assert_eq!(records[0].device.as_deref(), Some("0000:00:03.0"));
        assert_eq!(records[1].device, None, "a program of all devices runs on none in particular");
    }

    #[test]
    fn the_recorder_reads_the_tap_it_passes_on() {
        let recorder = Recorder::new("vfio_dma_mapping_test 0000:00:03.0");
        let mut shown = Vec::new();
        {
            let mut out = recorder.tee(0, &mut shown);
            write!(out, "TAP version 13\n1..2\n#  RUN           f.v.a ...\nok 1 f.v").unwrap();
            write!(out, ".a\nok 2 f.v.b # SKIP no\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:1 error:0\n").unwrap();
        }
        assert!(String::from_utf8(shown).unwrap().starts_with("TAP version 13\n1..2\n"), "passed on unchanged");
        let results = recorder.into_results();
        let got: Vec<_> = results.iter().map(|r| (r.test.as_str(), r.verdict)).collect();
        assert_eq!(got, [("f.v.a", Status::Pass), ("f.v.b", Status::Skip)]);
        assert_eq!(results[0].program, "vfio_dma_mapping_test 0000:00:03.0");
    }

    #[test]
    fn reports_beside_the_asked_for_file_keep_its_extension() {
        assert_eq!(beside(Path::new("/tmp/out.json"), "amd"), Path::new("/tmp/out.amd.json"));
        assert_eq!(beside(Path::new("junit.xml"), "7.3.4"), Path::new("junit.7.3.4.xml"));
        assert_eq!(beside(Path::new("out"), "amd"), Path::new("out.amd"));
    }

    #[test]
    fn a_report_that_cant_be_written_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("vfiotest-reports-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("no-such-dir/out.json");
        let e = write_whole(&missing, "{}").unwrap_err();
        assert!(e.message.starts_with("writing ") && !e.message.contains('\n'), "{}", e.message);
        let path = dir.join("out.json");
        write_whole(&path, "{}\n").unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no partial file beside it");
        fs::remove_dir_all(&dir).unwrap();
    }
}
