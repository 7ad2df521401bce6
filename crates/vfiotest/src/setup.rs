//! `vfiotest setup` and `vfiotest cleanup`: hand devices to vfio-pci and give them back, without
//! ever taking a device the host is using.
//!
//! Setup refuses a device that holds a mounted filesystem or active swap (directly, on a
//! partition, or through a device-mapper or md stack), a network interface that is up with an
//! address or carries the default route, or the boot VGA, unless `--force`, and then changes
//! nothing. It refuses a device whose IOMMU group has members on other drivers that are not
//! named too. Before it changes anything it records each device's driver, `driver_override`
//! and VF count in a state file, so cleanup restores exactly that, also after a crash midway.
//!
//! The state lives in `/run/vfiotest/setup.json` (`$VFIOTEST_STATE_DIR` overrides the
//! directory): `/run` is cleared at boot, as driver bindings are, so a record never outlives
//! the bindings it describes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use ksft::{KSFT_FAIL, KSFT_PASS};
use serde::{Deserialize, Serialize};
use vfio::Bdf;
use vfio::sysfs::{Sysfs, VFIO_PCI};

use crate::Fatal;

/// What a device had before setup took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its driver, if it had one.
    pub driver: Option<String>,
    /// Its `driver_override`, if one was set.
    pub driver_override: Option<String>,
    /// Its VFs, if it is an SR-IOV PF.
    pub sriov_numvfs: Option<u32>,
}

/// The state file: the boot it belongs to, and a record per device.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    boot_id: String,
    devices: BTreeMap<String, Record>,
}

impl State {
    /// Reads a state file's text; only its shape is checked here, not its boot or devices.
    ///
    /// # Errors
    /// serde's complaint, in one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// Drivers a group member may be on without making the group unusable for VFIO.
const HARMLESS_DRIVERS: [&str; 3] = [VFIO_PCI, "pci-stub", "pcieport"];

fn state_path() -> PathBuf {
    let dir = std::env::var_os("VFIOTEST_STATE_DIR").map_or_else(|| PathBuf::from("/run/vfiotest"), PathBuf::from);
    dir.join("setup.json")
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned()
}

/// Removes the state file by hand, and what to do for each device it named.
fn manual_fix(path: &Path) -> String {
    format!(
        "restore each device by hand (echo > /sys/bus/pci/devices/BDF/driver_override; echo BDF > \
         /sys/bus/pci/devices/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe), then rm {}",
        path.display()
    )
}

/// Rebinding drivers and writing the state under /run takes root: say so before trying, not
/// with whatever sysfs answers first.
fn need_root(what: &str) -> Result<(), Fatal> {
    match rustix::process::geteuid().is_root() {
        true => Ok(()),
        false => Err(Fatal::fail(format!("{what} needs root: it rebinds drivers through sysfs"))),
    }
}

fn load(path: &Path) -> Result<State, Fatal> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State { boot_id: boot_id(), ..State::default() });
        }
        Err(e) => return Err(Fatal::fail(format!("{}: {e}", path.display()))),
    };
    let state = State::parse(&text)
        .map_err(|e| Fatal::fail(format!("{} is corrupt ({e}): {}", path.display(), manual_fix(path))))?;
    if state.boot_id != boot_id() {
        return Err(Fatal::fail(format!(
            "{} is from another boot ({}), so its records are stale: {}",
            path.display(),
            state.boot_id,
            manual_fix(path)
        )));
    }
    Ok(state)
}

fn save(path: &Path, state: &State) -> Result<(), Fatal> {
    let fail = |e: std::io::Error| Fatal::fail(format!("{}: {e}", path.display()));
    if state.devices.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    // Written whole, then renamed over the old one: a crash leaves one or the other.
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).map_err(|e| Fatal::fail(e.to_string()))?;
    fs::write(&tmp, text).map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

/// Where the host reads what uses a device.
pub struct Host {
    sys: PathBuf,
    proc: PathBuf,
}

impl Host {
    /// This machine.
    pub fn system() -> Self {
        Self { sys: PathBuf::from("/sys"), proc: PathBuf::from("/proc") }
    }

    fn device_path(&self, bdf: Bdf) -> Option<PathBuf> {
        fs::canonicalize(self.sys.join("bus/pci/devices").join(bdf.to_string())).ok()
    }

    /// The block devices (disks and partitions) that sit below `bdf` in the device tree.
    pub fn block_devices(&self, bdf: Bdf) -> Vec<String> {
        self.children(bdf, "block")
    }

    /// The class devices (`class/block`, `class/net`) that sit below `bdf` in the device tree.
    fn children(&self, bdf: Bdf, class: &str) -> Vec<String> {
        let Some(device) = self.device_path(bdf) else { return Vec::new() };
        let Ok(entries) = fs::read_dir(self.sys.join("class").join(class)) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| fs::canonicalize(e.path()).is_ok_and(|p| p.starts_with(&device)))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A block device and everything stacked on it (`holders`: device-mapper, md), each once.
    fn stacked(&self, name: &str, seen: &mut BTreeSet<String>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let holders = self.sys.join("class/block").join(name).join("holders");
        for holder in fs::read_dir(holders).into_iter().flatten().flatten() {
            self.stacked(&holder.file_name().to_string_lossy(), seen);
        }
    }

    /// What holds `bdf`, in one line each: mounted or swap block devices, a configured network
    /// interface, the boot VGA. Empty when nothing does.
    pub fn users(&self, bdf: Bdf) -> Vec<String> {
        let mut users = Vec::new();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let mounts = mounted_devices(&read(self.proc.join("self/mountinfo")));
        let swaps = swap_devices(&read(self.proc.join("swaps")));
        let mut blocks = BTreeSet::new();
        for disk in self.children(bdf, "block") {
            self.stacked(&disk, &mut blocks);
        }
        for name in &blocks {
            let number = read(self.sys.join("class/block").join(name).join("dev")).trim().to_owned();
            if let Some(at) = mounts.get(&number) {
                users.push(format!("/dev/{name} is mounted on {at}"));
            }
            if swaps.contains(name) {
                users.push(format!("/dev/{name} is active swap"));
            }
        }
        let routes = read(self.proc.join("net/route"));
        let inet6 = read(self.proc.join("net/if_inet6"));
        for net in self.children(bdf, "net") {
            let flags = read(self.sys.join("class/net").join(&net).join("flags"));
            let up = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 != 0);
            if !up {
                continue;
            }
            if has_default_route(&routes, &net) {
                users.push(format!("network interface {net} carries the default route"));
            } else if has_address(&routes, &inet6, &net) {
                users.push(format!("network interface {net} is up with an address"));
            }
        }
        if read(self.sys.join("bus/pci/devices").join(bdf.to_string()).join("boot_vga")).trim() == "1" {
            users.push("it is the boot VGA (the console may be on it)".into());
        }
        users
    }
}

/// The mounted filesystems' devices (`major:minor`, the third field of mountinfo) and where
/// each is mounted.
fn mounted_devices(mountinfo: &str) -> BTreeMap<String, String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let number = f.nth(2)?;
            let at = f.nth(1)?;
            Some((number.to_owned(), at.to_owned()))
        })
        .collect()
}

/// The block devices in use as swap, by kernel name (`/dev/mapper/x` resolved to `dm-N`).
fn swap_devices(swaps: &str) -> BTreeSet<String> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|path| path.starts_with("/dev/"))
        .map(|path| fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path)))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

/// Whether `/proc/net/route` routes 0.0.0.0/0 through `iface`.
fn has_default_route(routes: &str, iface: &str) -> bool {
    routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[0] == iface && f[1] == "00000000" && f[7] == "00000000"
    })
}

/// Whether `iface` has an IPv4 address (every one brings a route) or an IPv6 address beyond
/// its link-local one.
fn has_address(routes: &str, inet6: &str, iface: &str) -> bool {
    let v4 = routes.lines().skip(1).any(|l| l.split_whitespace().next() == Some(iface));
    let v6 = inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6 && f[5] == iface && f[3] != "20"
    });
    v4 || v6
}

/// `vfiotest setup`: binds each device to vfio-pci, as described in the module docs.
pub fn setup(bdfs: &[Bdf], force: bool) -> Result<i32, Fatal> {
    need_root("setup")?;
    let (sysfs, host, path) = (Sysfs::system(), Host::system(), state_path());
    // Every check first: a refusal leaves every device as it was.
    for &bdf in bdfs {
        if sysfs.driver(bdf)?.as_deref() == Some(VFIO_PCI) {
            continue;
        }
        let users = host.users(bdf);
        match (users.is_empty(), force) {
            (true, _) => {}
            (false, false) => {
                return Err(Fatal::fail(format!(
                    "{bdf} is in use: {}; refusing to take it (--force overrides)",
                    users.join("; ")
                )));
            }
            (false, true) => eprintln!("vfiotest: {bdf} is in use ({}), taking it anyway (--force)", users.join("; ")),
        }
        let group = sysfs.iommu_group(bdf)?;
        let blockers: Vec<String> = sysfs
            .group_devices(group)?
            .into_iter()
            .filter(|other| !bdfs.contains(other))
            .filter_map(|other| match sysfs.driver(other) {
                Ok(Some(d)) if !HARMLESS_DRIVERS.contains(&d.as_str()) => Some(format!("{other} ({d})")),
                _ => None,
            })
            .collect();
        if !blockers.is_empty() {
            return Err(Fatal::fail(format!(
                "IOMMU group {group} of {bdf} would not be viable: {} must be set up too (name them all)",
                blockers.join(", ")
            )));
        }
    }
    let mut state = load(&path)?;
    for &bdf in bdfs {
        let key = bdf.to_string();
        // A device set up twice keeps its first record: the second found it on vfio-pci.
        if let std::collections::btree_map::Entry::Vacant(entry) = state.devices.entry(key) {
            entry.insert(Record {
                driver: sysfs.driver(bdf)?,
                driver_override: sysfs.driver_override(bdf)?,
                sriov_numvfs: sysfs.sriov_totalvfs(bdf)?.map(|_| sysfs.sriov_numvfs(bdf)).transpose()?,
            });
            save(&path, &state)?;
        }
        let old = sysfs.bind_vfio(bdf)?;
        let group = sysfs.iommu_group(bdf)?;
        println!("{bdf}: vfio-pci (was {}), IOMMU group {group}", old.as_deref().unwrap_or("unbound"));
    }
    Ok(KSFT_PASS)
}

/// `vfiotest cleanup`: gives each device (all recorded ones if none is named) back what setup
/// recorded. A device with no record is left as it is.
pub fn cleanup(bdfs: &[Bdf]) -> Result<i32, Fatal> {
    let (sysfs, path) = (Sysfs::system(), state_path());
    let mut state = load(&path)?;
    let targets: Vec<Bdf> = match bdfs.is_empty() {
        true => state.devices.keys().map(|k| k.parse()).collect::<Result<_, _>>()?,
        false => bdfs.to_vec(),
    };
    if targets.is_empty() {
        println!("nothing to restore: no device recorded in {}", path.display());
    } else {
        need_root("cleanup")?;
    }
    let mut code = KSFT_PASS;
    for bdf in targets {
        let Some(record) = state.devices.get(&bdf.to_string()).cloned() else {
            println!("{bdf}: nothing to restore (no record in {})", path.display());
            continue;
        };
        let now = sysfs.restore(bdf, record.driver.as_deref(), record.driver_override.as_deref())?;
        if let Some(vfs) = record.sriov_numvfs.filter(|&n| n > 0) {
            sysfs.set_sriov_numvfs(bdf, vfs)?;
        }
        let said = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
        if now != record.driver {
            eprintln!("vfiotest: {bdf} is on {} after cleanup, not {}", said(&now), said(&record.driver));
            code = KSFT_FAIL;
            continue;
        }
        println!(
            "{bdf}: {} (restored: driver {}, driver_override {}, VFs {})",
            said(&now),
            said(&record.driver),
            said(&record.driver_override),
            record.sriov_numvfs.map_or("none".into(), |n| n.to_string())
        );
        state.devices.remove(&bdf.to_string());
        save(&path, &state)?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_read_by_device_number() {
        let mountinfo = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n\
                         23 22 0:5 / /dev rw shared:2 - devtmpfs devtmpfs rw\n";
        let mounts = mounted_devices(mountinfo);
        assert_eq!(mounts.get("259:1").map(String::as_str), Some("/"));
        assert_eq!(mounts.get("0:5").map(String::as_str), Some("/dev"));
        assert!(!mounts.contains_key("259:0"));
    }

    #[test]
    fn swaps_name_block_devices_not_files() {
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1\tpartition\t16380\t0\t-2\n/swapfile\tfile\t1024\t0\t-3\n";
        assert_eq!(swap_devices(swaps), BTreeSet::from(["nvme0n1".to_owned()]));
    }

    #[test]
    fn routes_and_addresses_by_interface() {
        let routes = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\n\
                      eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                      eth1\t0003A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let inet6 =
            "fe800000000000000000000000000001 03 40 20 80 eth2\n20010db8000000000000000000000001 04 40 00 80 eth3\n";
        assert!(has_default_route(routes, "eth0") && !has_default_route(routes, "eth1"));
        assert!(has_address(routes, inet6, "eth1"), "an IPv4 subnet route");
        assert!(!has_address(routes, inet6, "eth2"), "link-local only");
        assert!(has_address(routes, inet6, "eth3"), "a global IPv6 address");
    }

    #[test]
    fn a_corrupt_or_stale_state_file_names_the_manual_fix() {
        let dir = std::env::temp_dir().join(format!("vfiotest-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("setup.json");
        fs::write(&path, "{not json").unwrap();
        let e = load(&path).unwrap_err().message;
        assert!(e.contains("is corrupt") && e.contains("drivers_probe") && !e.contains('\n'), "{e}");
        fs::write(&path, r#"{"boot_id":"another","devices":{}}"#).unwrap();
        let e = load(&path).unwrap_err().message;
        assert!(e.contains("another boot") && e.contains("rm "), "{e}");
        let mut state = State { boot_id: boot_id(), ..State::default() };
        state.devices.insert(
            "0000:00:07.0".into(),
            Record { driver: Some("nvme".into()), driver_override: None, sriov_numvfs: None },
        );
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap().devices, state.devices, "a record reads back");
        state.devices.clear();
        save(&path, &state).unwrap();
        assert!(!path.exists(), "no records, no file");
        fs::remove_dir_all(&dir).unwrap();
    }
}
