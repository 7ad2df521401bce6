//! The guest's `/init`: this same static binary, run by the kernel as PID 1.
//!
//! It mounts what the suite needs, opens the results port, binds the devices to vfio-pci with
//! `vfiotest setup`, runs the payload with real arguments (its stdout and stderr on the results
//! port), checks that nothing was left behind, gives the devices back, and powers off. Its
//! marks ([`GuestMark`]) go to the results port too; the kernel's printk stays on the console.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::mount::{MountFlags, mount};
use rustix::system::{RebootCommand, reboot};

use super::protocol::{GuestMark, PAYLOAD_PATH, Payload, RESULTS_PORT, Switches};
use super::{ME, run_me};

/// Runs the guest and powers it off; never returns (PID 1 must not exit).
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(problem) => {
            // The console is all that is left; the host shows its tail.
            eprintln!("vfiotest init: {problem}");
            1
        }
    };
    power_off(code)
}

fn run() -> Result<(), String> {
    mount_all()?;
    let switches = Switches::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    if !switches.no_debugfs {
        mount_fs("debugfs", "/sys/kernel/debug", "debugfs")?;
    }
    for node in &switches.rm_nodes {
        let _gone_already = fs::remove_file(node);
    }
    let mut port = open_results_port()?;
    let mut say = |mark: GuestMark| writeln!(port, "{mark}").map_err(|e| format!("{RESULTS_PORT}: {e}"));
    if switches.probe {
        return say(GuestMark::ProbeOk);
    }
    let payload: Payload = fs::read_to_string(PAYLOAD_PATH)
        .map_err(|e| format!("{PAYLOAD_PATH}: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{PAYLOAD_PATH}: {e}")))?;
    say(GuestMark::Booted(describe_machine()))?;
    if !iommu_present() {
        return say(GuestMark::NoIommu);
    }
    let binds = !matches!(payload.command, super::protocol::GuestCommand::SetupProof);
    for bdf in payload.bdfs.iter().filter(|_| binds) {
        say(GuestMark::Setup(vfiotest(&["setup", bdf])))?;
    }
    if binds {
        let bdfs: Vec<vfio::Bdf> = payload.bdfs.iter().filter_map(|b| b.parse().ok()).collect();
        let inventory = serde_json::to_string(&crate::reports::inventory(&bdfs)).map_err(|e| e.to_string())?;
        say(GuestMark::Inventory(inventory))?;
    }
    say(GuestMark::Begin)?;
    let (argv, env) = payload.argv(switches.units.as_deref());
    let output = || port_clone(Path::new(RESULTS_PORT));
    let status = Command::new(ME).args(&argv).envs(env).stdout(output()?).stderr(output()?).status();
    let code = match status {
        Ok(status) => status.code().unwrap_or(ksft::KSFT_FAIL),
        Err(e) => return Err(format!("starting {ME}: {e}")),
    };
    // Nothing may outlive the payload: a program that makes VFs removes them.
    for (pf, vfs) in vfs_left() {
        say(GuestMark::LeftBehind(format!("{pf} has {vfs} VFs")))?;
    }
    say(GuestMark::End(code))?;
    if binds {
        vfiotest(&["cleanup"]);
    }
    Ok(())
}

/// Another handle on the results port, for a child's stdout or stderr.
fn port_clone(path: &Path) -> Result<Stdio, String> {
    let file = OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Stdio::from(file))
}

/// The results port in raw mode: bytes go out as written, `\n` not turned into `\r\n`.
fn open_results_port() -> Result<File, String> {
    let port = OpenOptions::new().write(true).open(RESULTS_PORT).map_err(|e| format!("{RESULTS_PORT}: {e}"))?;
    let mut termios = rustix::termios::tcgetattr(&port).map_err(|e| format!("tcgetattr({RESULTS_PORT}): {e}"))?;
    termios.make_raw();
    rustix::termios::tcsetattr(&port, rustix::termios::OptionalActions::Now, &termios)
        .map_err(|e| format!("tcsetattr({RESULTS_PORT}): {e}"))?;
    Ok(port)
}

fn mount_fs(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("{target}: {e}"))?;
    match mount(source, target, fstype, MountFlags::empty(), None) {
        // devtmpfs may be mounted by the kernel already.
        Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => Err(format!("mount -t {fstype} {source} {target}: {e}")),
    }
}

fn mount_all() -> Result<(), String> {
    mount_fs("proc", "/proc", "proc")?;
    mount_fs("sysfs", "/sys", "sysfs")?;
    mount_fs("devtmpfs", "/dev", "devtmpfs")?;
    mount_fs("tmpfs", "/tmp", "tmpfs")?;
    mount_fs("tmpfs", "/run", "tmpfs")
}

/// Whether the kernel registered an IOMMU (`/sys/class/iommu`), waiting a little for one that
/// probes late (virtio-iommu is a virtio device).
fn iommu_present() -> bool {
    let any = || fs::read_dir("/sys/class/iommu").is_ok_and(|mut d| d.next().is_some());
    (0..50).any(|_| {
        any() || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    })
}

/// `7.3.4, 2 cpus, hugetlb 1G:1 2M:64`.
fn describe_machine() -> String {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let cpus =
        fs::read_to_string("/proc/cpuinfo").unwrap_or_default().lines().filter(|l| l.starts_with("processor")).count();
    let pages = |size: &str| {
        fs::read_to_string(format!("/sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages"))
            .map_or_else(|_| "0".to_owned(), |n| n.trim().to_owned())
    };
    format!("{release}, {cpus} cpus, hugetlb 1G:{} 2M:{}", pages("1048576kB"), pages("2048kB"))
}

/// Runs `vfiotest ARGS` and returns what it said, on one line.
fn vfiotest(args: &[&str]) -> String {
    run_me(args).1.trim().replace('\n', "; ")
}

/// PFs that still have VFs.
fn vfs_left() -> Vec<(String, u32)> {
    let Ok(devices) = fs::read_dir("/sys/bus/pci/devices") else { return Vec::new() };
    let mut left: Vec<(String, u32)> = devices
        .flatten()
        .filter_map(|d| {
            let n = fs::read_to_string(d.path().join("sriov_numvfs")).ok()?.trim().parse().ok()?;
            (n > 0).then(|| (d.file_name().to_string_lossy().into_owned(), n))
        })
        .collect();
    left.sort();
    left
}

fn power_off(code: i32) -> ! {
    rustix::fs::sync();
    let failed = reboot(RebootCommand::PowerOff);
    // Only if the kernel refused: PID 1 exiting panics the kernel, which then halts the VM
    // (panic=-1, QEMU -no-reboot).
    eprintln!("vfiotest init: power off failed ({failed:?}); exiting {code}");
    std::process::exit(code)
}
