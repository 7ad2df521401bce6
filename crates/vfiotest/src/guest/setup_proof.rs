//! `vfiotest setup-proof BDF` (hidden), which the guest runs for `vfiotest vm --device BDF --
//! setup-proof`: on a disk the kernel's own driver holds, `vfiotest setup` refuses while the
//! disk is swap, takes it when idle, and `vfiotest cleanup` gives it back, each command run as
//! a user runs it. Prints TAP; each step checks the driver afterwards, the command's exit code
//! and, where it matters, what the command said.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ksft::{KSFT_FAIL, KSFT_PASS, Status, result_line};
use vfio::Bdf;
use vfio::sysfs::Sysfs;

use crate::setup::Host;

const STEPS: usize = 11;

struct Proof {
    bdf: Bdf,
    sysfs: Sysfs,
    done: usize,
    failed: usize,
}

/// What a step's command did.
struct Ran {
    code: i32,
    said: String,
}

impl Proof {
    fn vfiotest(&self, args: &[&str]) -> Ran {
        let (code, said) = super::run_me(args);
        Ran { code, said }
    }

    fn driver(&self) -> String {
        self.sysfs.driver(self.bdf).ok().flatten().unwrap_or_else(|| "none".into())
    }

    /// One TAP result: the device on `driver`, the command's exit `code`, and its words
    /// holding `says`.
    fn check(&mut self, name: &str, driver: &str, code: i32, ran: &Ran, says: Option<&str>) {
        self.done += 1;
        let got = self.driver();
        let said = says.is_none_or(|s| ran.said.contains(s));
        let status = match got == driver && ran.code == code && said {
            true => Status::Pass,
            false => Status::Fail,
        };
        println!("{}", result_line(self.done, &format!("vfio_setup.{name}"), status, None));
        if status == Status::Fail {
            self.failed += 1;
            let wanted = says.map(|s| format!(", saying {s:?}")).unwrap_or_default();
            println!("# expected driver {driver}, exit {code}{wanted}; got driver {got}, exit {}:", ran.code);
            ran.said.lines().for_each(|l| println!("#   {l}"));
        }
    }
}

/// A swap signature (`mkswap`): version 1, the last page, no bad pages, and `SWAPSPACE2` at
/// the end of the first page.
fn make_swap(disk: &Path) -> std::io::Result<()> {
    let page = vfio::page_size();
    let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))?.trim().parse().unwrap_or(0);
    let last_page = u32::try_from(sectors * 512 / page as u64).unwrap_or(u32::MAX).saturating_sub(1);
    let mut header = vec![0u8; page];
    header[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    header[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    header[page - 10..].copy_from_slice(b"SWAPSPACE2");
    let mut file = OpenOptions::new().write(true).open(disk)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()
}

fn swap(on: bool, disk: &Path) -> Ran {
    let done = match on {
        true => make_swap(disk)
            .map_err(|e| e.to_string())
            .and_then(|()| vfio_sys::swap::swapon(disk).map_err(|e| format!("swapon {}: {e}", disk.display()))),
        false => vfio_sys::swap::swapoff(disk).map_err(|e| format!("swapoff {}: {e}", disk.display())),
    };
    match done {
        Ok(()) => Ran { code: KSFT_PASS, said: String::new() },
        Err(said) => Ran { code: KSFT_FAIL, said },
    }
}

/// Runs the proof on `bdf`; the exit code says whether every step passed.
pub fn main(bdf: Bdf) -> i32 {
    let mut proof = Proof { bdf, sysfs: Sysfs::system(), done: 0, failed: 0 };
    let state = PathBuf::from("/run/vfiotest/setup.json");
    println!("TAP version 13");
    println!("1..{STEPS}");
    let booted = Ran { code: KSFT_PASS, said: String::new() };
    proof.check("boots_on_its_driver", "nvme", KSFT_PASS, &booted, None);
    let Some(disk) = Host::system().block_devices(bdf).into_iter().next() else {
        println!("# no block device under {bdf}");
        return KSFT_FAIL;
    };
    let disk = PathBuf::from("/dev").join(disk);

    let swapped = swap(true, &disk);
    let ran = proof.vfiotest(&["setup", &bdf.to_string()]);
    let in_use = format!("{} is active swap", disk.display());
    proof.check("refuses_a_disk_in_use_as_swap", "nvme", KSFT_FAIL, &ran, Some(&in_use));
    let unswapped = swap(false, &disk);
    let ran = proof.vfiotest(&["setup", &bdf.to_string()]);
    proof.check("takes_an_idle_disk", "vfio-pci", KSFT_PASS, &ran, None);
    let recorded = std::fs::read_to_string(&state).unwrap_or_default();
    let record = Ran { code: KSFT_PASS, said: recorded };
    proof.check("records_the_driver", "vfio-pci", KSFT_PASS, &record, Some("\"driver\": \"nvme\""));
    let ran = proof.vfiotest(&["run", "vfio_pci_device_test", &bdf.to_string()]);
    proof.check("runs_after_setup", "vfio-pci", KSFT_PASS, &ran, None);
    let ran = proof.vfiotest(&["cleanup", &bdf.to_string()]);
    proof.check(
        "cleanup_restores_the_driver",
        "nvme",
        KSFT_PASS,
        &ran,
        Some(&format!("{bdf}: nvme (restored: driver nvme")),
    );
    let ran = proof.vfiotest(&["cleanup", &bdf.to_string()]);
    proof.check("cleanup_again_changes_nothing", "nvme", KSFT_PASS, &ran, Some("nothing to restore"));

    // A state file that can't be read: one line and the manual fix, and nothing touched. Then
    // the saved state stands for what survived a crash, and cleanup still restores from it.
    let _taken = proof.vfiotest(&["setup", &bdf.to_string()]);
    let saved = std::fs::read(&state).unwrap_or_default();
    let _ = std::fs::write(&state, "{garbage");
    let ran = proof.vfiotest(&["cleanup", &bdf.to_string()]);
    proof.check("corrupt_state_is_refused", "vfio-pci", KSFT_FAIL, &ran, Some("is corrupt"));
    let _ = std::fs::write(&state, saved);
    let ran = proof.vfiotest(&["cleanup", &bdf.to_string()]);
    proof.check("cleanup_after_a_crash", "nvme", KSFT_PASS, &ran, None);

    // --force takes a disk in use (the swap on it is the user's problem then).
    let forced_swap = swap(true, &disk);
    let ran = proof.vfiotest(&["setup", "--force", &bdf.to_string()]);
    proof.check("force_takes_a_disk_in_use", "vfio-pci", KSFT_PASS, &ran, Some("taking it anyway"));
    let ran = proof.vfiotest(&["cleanup", &bdf.to_string()]);
    proof.check("cleanup_after_force", "nvme", KSFT_PASS, &ran, None);

    for (what, ran) in [("swap on", &swapped), ("swap off", &unswapped), ("swap on again", &forced_swap)] {
        if ran.code != KSFT_PASS {
            println!("# {what} failed: {}", ran.said.trim());
            proof.failed += 1;
        }
    }
    let passed = proof.done.saturating_sub(proof.failed.min(proof.done));
    println!("# Totals: pass:{passed} fail:{} xfail:0 xpass:0 skip:0 error:0", proof.failed);
    if proof.failed == 0 { KSFT_PASS } else { KSFT_FAIL }
}
