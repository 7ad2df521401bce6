//! The bad-input catalogue, as a table: what a user, a lab's script or a stale file may hand
//! vfiotest on a host. Each case must end in one line on stderr that says what is wrong, the
//! right kselftest exit code, no panic, and nothing changed on the host: every PCI device keeps
//! its driver and `driver_override`, the state directory and the case's own directory are as
//! they were. (Cases that need a guest kernel, such as missing device nodes, a non-viable group
//! or a disk in use, are the end-to-end tests `missing_node`, `setup_safety` and
//! `host_diagnosis`.)

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../tests-support/trial.rs"]
mod trial;

const VFIOTEST: &str = env!("CARGO_BIN_EXE_vfiotest");

/// One bad input.
struct Case {
    name: &'static str,
    /// The arguments; `{dir}` is the case's own directory, `{host}` a PCI device of this host
    /// that is not on vfio-pci, `{results}` a valid results document.
    args: &'static [&'static str],
    /// Environment variables to set.
    env: &'static [(&'static str, &'static str)],
    /// Files to make in the case's directory first: (name, contents).
    files: &'static [(&'static str, &'static str)],
    /// Run as `nobody`, not root.
    unprivileged: bool,
    /// A 4 KiB tmpfs mounted at `{dir}/full`, to fill.
    full_disk: bool,
    /// The exit code.
    code: i32,
    /// What the one line says.
    says: &'static str,
}

const NONE: Case =
    Case { name: "", args: &[], env: &[], files: &[], unprivileged: false, full_disk: false, code: 1, says: "" };

const STATE: &str = "VFIOTEST_STATE_DIR";

const CASES: &[Case] = &[
    // `vfiotest run`: devices, programs and options.
    Case { name: "malformed_bdf", args: &["run", "0000:00:03"], says: "invalid BDF \"0000:00:03\"", ..NONE },
    Case { name: "absent_bdf", args: &["run", "0000:7f:1f.7"], says: "no PCI device 0000:7f:1f.7", ..NONE },
    Case { name: "bdf_with_a_trailing_newline", args: &["run", "0000:00:03.0\n"], says: "invalid BDF", ..NONE },
    Case { name: "the_same_bdf_twice", args: &["run", "{host}", "{host}"], says: "is named twice", ..NONE },
    Case {
        name: "garbage_in_vfio_selftests_bdf",
        args: &["run"],
        env: &[("VFIO_SELFTESTS_BDF", "garbage")],
        says: "invalid BDF \"garbage\"",
        ..NONE
    },
    Case { name: "a_device_on_its_host_driver", args: &["run", "{host}"], says: "not vfio-pci", ..NONE },
    Case { name: "no_device_at_all", args: &["run"], code: 4, says: "no device to test", ..NONE },
    Case { name: "an_unknown_program", args: &["run", "vfio_no_such_test"], says: "neither a test program", ..NONE },
    Case { name: "t_with_no_value", args: &["run", "-t"], says: "a value is required for '-t <NAME>'", ..NONE },
    Case { name: "argv_of_100000_characters", args: &["run", "{huge}"], says: "characters cut", ..NONE },
    Case {
        name: "an_unknown_feature",
        args: &["run", "--require", "bogus", "{host}"],
        says: "unknown feature",
        ..NONE
    },
    Case {
        name: "garbage_in_vfiotest_require",
        args: &["run", "{host}"],
        env: &[("VFIOTEST_REQUIRE", "garbage")],
        says: "unknown feature \"garbage\"",
        ..NONE
    },
    Case {
        name: "a_known_bug_without_its_bug",
        args: &["run", "--known-bug", "x", "{host}"],
        says: "PATTERN=BUG",
        ..NONE
    },
    Case {
        name: "a_kcidb_origin_kcidb_refuses",
        args: &["run", "--kcidb-origin", "My Lab"],
        says: "KCIDB origin",
        ..NONE
    },
    Case { name: "an_unknown_command", args: &["frobnicate"], says: "unrecognized subcommand", ..NONE },
    Case { name: "list_of_an_unknown_program", args: &["list", "bogus"], says: "no test program named", ..NONE },
    // `setup` and `cleanup`, and the state file between them.
    Case { name: "setup_with_no_device", args: &["setup"], says: "required arguments were not provided", ..NONE },
    Case { name: "setup_not_as_root", args: &["setup", "{host}"], unprivileged: true, says: "needs root", ..NONE },
    Case {
        name: "a_corrupt_state_file",
        args: &["cleanup"],
        env: &[(STATE, "{dir}")],
        files: &[("setup.json", "{\"boot_id\": 7")],
        says: "is corrupt",
        ..NONE
    },
    Case {
        name: "a_state_file_from_another_boot",
        args: &["cleanup"],
        env: &[(STATE, "{dir}")],
        files: &[("setup.json", "{\"boot_id\":\"0\",\"devices\":{\"0000:00:03.0\":{\"driver\":\"nvme\"}}}")],
        says: "from another boot",
        ..NONE
    },
    Case { name: "cleanup_without_setup", args: &["cleanup"], env: &[(STATE, "{dir}")], code: 0, ..NONE },
    // Reports.
    Case { name: "report_with_nothing_to_write", args: &["report", "{results}"], says: "say what to write", ..NONE },
    Case {
        name: "report_of_a_bench_run",
        args: &["report", "{dir}/bench.json", "--lava"],
        files: &[("bench.json", "{\"kernel\": \"7.3.4\", \"cells\": []}")],
        says: "not a vfiotest results document",
        ..NONE
    },
    Case {
        name: "report_of_a_newer_schema",
        args: &["report", "{dir}/v9.json", "--lava"],
        files: &[("v9.json", "{\"schema_version\": 9}")],
        says: "schema_version 9 is not 1",
        ..NONE
    },
    Case {
        name: "report_of_a_missing_file",
        args: &["report", "{dir}/none.json", "--lava"],
        says: "No such file",
        ..NONE
    },
    Case {
        name: "a_report_into_a_missing_directory",
        args: &["report", "{results}", "--junit", "{dir}/no/such/dir.xml"],
        says: "writing ",
        ..NONE
    },
    Case {
        name: "a_full_disk_for_results_and_kcidb",
        args: &["report", "{results}", "--results", "{dir}/full/r.json", "--kcidb", "{dir}/full/k.json"],
        full_disk: true,
        says: "No space left on device",
        ..NONE
    },
    Case { name: "bench_report_of_garbage", args: &["bench-report", "{results}"], says: "not a bench run", ..NONE },
    // `vfiotest vm`: refused before anything is installed, built or booted.
    Case {
        name: "an_unknown_viommu",
        args: &["vm", "--viommu", "bogus"],
        says: "expected intel, intel-scalable",
        ..NONE
    },
    Case { name: "an_unknown_kernel_version", args: &["vm", "--kernel-version", "9.9"], says: "6.1, 6.12", ..NONE },
    Case {
        name: "a_device_the_machine_lacks",
        args: &["vm", "--device", "0000:09:00.0"],
        says: "not in the emulated machine",
        ..NONE
    },
    Case { name: "a_missing_patch", args: &["vm", "--patch", "{dir}/none.patch"], says: "--patch ", ..NONE },
    Case {
        name: "a_tree_that_is_no_kernel",
        args: &["vm", "--tree", "{dir}"],
        says: "not a Linux kernel tree",
        ..NONE
    },
    Case { name: "a_missing_qemu", args: &["vm", "--qemu", "{dir}/qemu"], says: "--qemu ", ..NONE },
    Case {
        name: "a_missing_config_fragment",
        args: &["vm", "--config", "{dir}/none.config"],
        says: "--config ",
        ..NONE
    },
    Case { name: "zero_jobs", args: &["vm", "--jobs", "0"], says: "must be at least 1", ..NONE },
    Case {
        name: "a_bad_argument_under_bisect",
        args: &["vm", "--bisect", "--viommu", "bogus"],
        code: 255,
        says: "unknown vIOMMU",
        ..NONE
    },
];

/// What of the host a case may not change: each PCI device's driver and `driver_override`.
fn host_devices() -> BTreeMap<String, (Option<PathBuf>, String)> {
    let Ok(devices) = fs::read_dir("/sys/bus/pci/devices") else { return BTreeMap::new() };
    devices
        .flatten()
        .map(|d| {
            let driver = fs::read_link(d.path().join("driver")).ok();
            let over = fs::read_to_string(d.path().join("driver_override")).unwrap_or_default();
            (d.file_name().to_string_lossy().into_owned(), (driver, over))
        })
        .collect()
}

/// Every file under `dir` with its contents.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => files.extend(tree(&path)),
            false => {
                files.insert(path.clone(), fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// A PCI device of this host not on vfio-pci (the tests never touch it: every case is refused
/// before a device is).
fn host_device() -> String {
    let on_vfio = |(_, (driver, _)): &(&String, &(Option<PathBuf>, String))| {
        driver.as_ref().is_some_and(|d| d.ends_with("vfio-pci"))
    };
    let devices = host_devices();
    let found = devices.iter().find(|d| !on_vfio(d)).map(|(bdf, _)| bdf.clone());
    found.expect("this host has a PCI device that is not on vfio-pci")
}

fn check(case: &'static Case) {
    let dir = std::env::temp_dir().join(format!("vfiotest-bad-{}-{}", case.name, std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (name, contents) in case.files {
        fs::write(dir.join(name), contents).unwrap();
    }
    let full = dir.join("full");
    if case.full_disk {
        fs::create_dir_all(&full).unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4k", "vfiotest-full"]).arg(&full).status();
        assert!(mounted.is_ok_and(|s| s.success()), "mount a 4 KiB tmpfs (needs root)");
    }
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/lava/example-results.json");
    let (huge, host) = ("y".repeat(100_000), host_device());
    let fill = |arg: &str| {
        arg.replace("{dir}", dir.to_str().unwrap())
            .replace("{host}", &host)
            .replace("{results}", results.to_str().unwrap())
            .replace("{huge}", &huge)
    };
    let mut command = match case.unprivileged {
        true => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", VFIOTEST]);
            c
        }
        false => Command::new(VFIOTEST),
    };
    command.args(case.args.iter().map(|a| fill(a))).env_remove("VFIO_SELFTESTS_BDF").env_remove("VFIOTEST_REQUIRE");
    // Unless the case sets it, the state goes to a directory of the case's own, never /run's.
    command.env(STATE, dir.join("state"));
    for (key, value) in case.env {
        command.env(key, fill(value));
    }
    let (devices, files) = (host_devices(), tree(&dir));
    let out = command.output().expect("run vfiotest");
    let (devices_after, files_after) = (host_devices(), tree(&dir));
    if case.full_disk {
        let _ = Command::new("umount").arg(&full).status();
    }
    let _ = fs::remove_dir_all(&dir);

    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(out.status.code(), Some(case.code), "{}: exit code; stderr: {stderr}", case.name);
    match case.says {
        "" => assert!(lines.is_empty(), "{}: nothing on stderr, got {stderr}", case.name),
        says => {
            assert_eq!(lines.len(), 1, "{}: one line, got {}: {stderr}", case.name, lines.len());
            assert!(lines[0].starts_with("vfiotest: ") && lines[0].contains(says), "{}: {}", case.name, lines[0]);
            assert!(lines[0].chars().count() < 600, "{}: a line to read, not {} characters", case.name, lines[0].len());
            assert!(!lines[0].contains("internal error"), "{}: a panic: {}", case.name, lines[0]);
        }
    }
    assert_eq!(devices_after, devices, "{}: a PCI device's driver changed", case.name);
    assert_eq!(files_after, files, "{}: files were left or changed in the case's directory", case.name);
}

fn main() {
    assert!(CASES.len() >= 25, "the catalogue has {} cases", CASES.len());
    trial::main(CASES.iter().map(|case| trial::check(case.name, move || check(case))).collect());
}
