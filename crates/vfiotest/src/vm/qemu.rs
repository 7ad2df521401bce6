//! The emulator: QEMU 10 from Debian's bookworm-backports, unpacked into our cache.
//!
//! Debian 12's own QEMU (7.2) has no `igb`, and its `edu` aborts the VM on a transfer that
//! ends at the buffer's last byte. QEMU 10.0 for Debian 12 is packaged in bookworm-backports;
//! its files are unpacked (not installed) and run with `-L` pointing at its own firmware. The
//! shared libraries it links are plain Debian 12 packages, installed from the machine's own
//! sources if missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{apt, provision};
use crate::Fatal;
use crate::cache::Cache;

const SUITE: &str = "bookworm-backports";
/// The emulator and what it needs at run time: its firmware (`qemu-system-data`, `seabios`)
/// and the common files.
const PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"];

/// A QEMU to run: the binary and the firmware directories it needs (`-L`).
#[derive(Debug, Clone)]
pub struct Emulator {
    pub binary: PathBuf,
    pub firmware: Vec<PathBuf>,
    /// What `--version` printed first, e.g. "QEMU emulator version 10.0.2 (Debian ...)".
    pub version: String,
    /// A malloc to preload into it ([`allocator`]), if it has one.
    pub preload: Option<PathBuf>,
}

/// The oldest QEMU the topology runs on: `igb` came in 8.0, and the `edu` before 8.2.1 aborts
/// the VM on a DMA that ends at its buffer's last byte, which the edu driver does.
const OLDEST: (u32, u32, u32) = (8, 2, 1);

impl Emulator {
    /// A QEMU the user named: it finds its own firmware.
    pub fn at(binary: &Path) -> Result<Self, Fatal> {
        let version = version_of(binary, &[])?;
        match parse_version(&version) {
            // Not ours to change: it may not even link glibc.
            Some(v) if v >= OLDEST => {
                Ok(Self { binary: binary.to_owned(), firmware: Vec::new(), version, preload: None })
            }
            _ => Err(Fatal::fail(format!(
                "{} is {version:?}; the emulated machine needs QEMU {}.{}.{} or newer (igb, and an edu that takes \
                 whole-buffer DMA): leave out --qemu to use QEMU 10",
                binary.display(),
                OLDEST.0,
                OLDEST.1,
                OLDEST.2
            ))),
        }
    }

    /// Checks that this QEMU has each of `devices` (`-device help`), before anything boots.
    ///
    /// # Errors
    /// One line naming the first one missing, for `what` (e.g. "the amd vIOMMU"), and the version.
    pub fn ensure_devices<'a>(&self, devices: impl IntoIterator<Item = (&'a str, String)>) -> Result<(), Fatal> {
        let out = Command::new(&self.binary)
            .args(self.firmware_args())
            .args(["-nodefaults", "-device", "help"])
            .output()
            .map_err(|e| Fatal::fail(format!("{} -device help: {e}", self.binary.display())))?;
        let listed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        for (device, what) in devices {
            if !has_device(&listed, device) {
                return Err(Fatal::fail(format!(
                    "{} ({}) has no {device} device, which {what} needs",
                    self.binary.display(),
                    self.version
                )));
            }
        }
        Ok(())
    }

    /// The `-L` arguments.
    pub fn firmware_args(&self) -> impl Iterator<Item = &Path> {
        self.firmware.iter().flat_map(|dir| [Path::new("-L"), dir.as_path()])
    }
}

/// The cached QEMU 10, downloading and unpacking it (and installing its libraries) first if
/// needed.
pub fn ensure(cache: &Cache) -> Result<Emulator, Fatal> {
    let root = cache.qemu(SUITE);
    let ready = root.join(".unpacked");
    let debs = cache.debs();
    if !ready.exists() {
        let files = apt::download(cache, SUITE, PACKAGES, &debs)?;
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| Fatal::fail(format!("{}: {e}", root.display())))?;
        for deb in &files {
            apt::unpack(deb, &root)?;
        }
        let depends = apt::control_field(&files[0], "Depends")?;
        let libraries: Vec<String> = apt::depends_names(&depends)
            .into_iter()
            .filter(|name| name.starts_with("lib") || name.starts_with("zlib"))
            .collect();
        provision::install_missing(&libraries)?;
        fs::write(&ready, "").map_err(|e| Fatal::fail(format!("{}: {e}", ready.display())))?;
    }
    let binary = root.join("usr/bin/qemu-system-x86_64");
    let firmware = vec![root.join("usr/share/qemu"), root.join("usr/share/seabios")];
    let version = version_of(&binary, &firmware)?;
    Ok(Emulator { binary, firmware, version, preload: allocator() })
}

/// jemalloc, from Debian's `libjemalloc2`, which QEMU's build also offers as its allocator.
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// The malloc our QEMU runs with, installing it first when we may: jemalloc, not glibc's.
/// QEMU's RCU thread calls glibc's `malloc_trim()` after each grace period, and the suite makes
/// many (every BAR toggle, reset and IOMMU switch rebuilds the guest's memory map): strace
/// counted 3,000-6,000 `madvise(MADV_DONTNEED)` a second per machine, each page faulted back
/// in later. jemalloc's free memory is not glibc's to trim, and the whole suite took 10-15% less
/// CPU (README, "How it is fast"). Without it QEMU runs as it is, only slower.
fn allocator() -> Option<PathBuf> {
    let lib = Path::new(JEMALLOC);
    if !lib.exists() && rustix::process::geteuid().is_root() {
        // A failure leaves glibc's malloc, which works.
        let _ = provision::install_missing(&["libjemalloc2".to_owned()]);
    }
    lib.exists().then(|| lib.to_owned())
}

/// `(major, minor, micro)` from "QEMU emulator version 10.0.2 (Debian ...)".
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let number = text.strip_prefix("QEMU emulator version ")?.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Runs `qemu --version`: this also proves the binary finds every library it links.
fn version_of(binary: &Path, firmware: &[PathBuf]) -> Result<String, Fatal> {
    let mut cmd = Command::new(binary);
    for dir in firmware {
        cmd.arg("-L").arg(dir);
    }
    let out = cmd.arg("--version").output().map_err(|e| Fatal::fail(format!("{}: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), text.lines().next()) {
        (true, Some(first)) => Ok(first.trim().to_owned()),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(Fatal::fail(format!(
                "{} --version failed: {}",
                binary.display(),
                err.lines().next().unwrap_or("no output")
            )))
        }
    }
}

/// Whether `-device help`'s listing names `device`.
fn has_device(listing: &str, device: &str) -> bool {
    let quoted = format!("name \"{device}\"");
    listing.lines().any(|l| l.trim_start().starts_with(&quoted) && l.trim_start()[quoted.len()..].starts_with(','))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_found_by_their_exact_name() {
        let listing = "name \"intel-iommu\", bus System, desc \"Intel IOMMU\"\nname \"virtio-iommu-pci\", bus PCI\n";
        assert!(has_device(listing, "intel-iommu"));
        assert!(has_device(listing, "virtio-iommu-pci"));
        assert!(!has_device(listing, "virtio-iommu"), "a prefix is not the device");
        assert!(!has_device(listing, "amd-iommu"));
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some((10, 0, 2))
        );
        assert_eq!(parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)"), Some((7, 2, 15)));
        assert_eq!(parse_version("QEMU emulator version 9.1"), Some((9, 1, 0)));
        assert_eq!(parse_version("qemu 10"), None);
        assert!(parse_version("QEMU emulator version 8.2.0").unwrap() < OLDEST);
        assert!(parse_version("QEMU emulator version 10.0.2").unwrap() >= OLDEST);
    }
}
