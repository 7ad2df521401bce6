//! Downloading Debian packages from a suite the machine doesn't use (trixie-backports for the
//! kernel source, bookworm-backports for QEMU 10), without touching the system's apt sources.
//!
//! apt gets a private sources list and private state and cache directories under our cache; the
//! mirror is the one the machine's own apt configuration names.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Fatal;
use crate::cache::Cache;

/// The first non-security mirror in the machine's apt sources (deb822 `.sources` files first,
/// then the one-line `sources.list`).
pub fn mirror() -> Result<String, Fatal> {
    let deb822 = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "sources"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let one_line = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_in(&deb822, &one_line)
        .ok_or_else(|| Fatal::fail("no Debian mirror found in /etc/apt/sources.list.d/*.sources or sources.list"))
}

fn mirror_in(deb822: &str, one_line: &str) -> Option<String> {
    let from_deb822 = deb822.lines().filter_map(|l| l.trim().strip_prefix("URIs:")).flat_map(str::split_whitespace);
    let from_list = one_line
        .lines()
        .filter(|l| l.trim_start().starts_with("deb "))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains("://")));
    from_deb822.chain(from_list).find(|uri| !uri.contains("security")).map(str::to_owned)
}

/// Downloads `packages` (their candidate versions in `suite`) into `dest`, and returns the
/// paths of the `.deb` files, in the order asked. Already downloaded files are reused.
pub fn download(cache: &Cache, suite: &str, packages: &[&str], dest: &Path) -> Result<Vec<PathBuf>, Fatal> {
    let found = |dir: &Path| -> Option<Vec<PathBuf>> { packages.iter().map(|p| find_deb(dir, p)).collect() };
    if let Some(debs) = found(dest) {
        return Ok(debs);
    }
    let state = cache.apt_state(suite);
    for dir in [state.join("lists/partial"), state.join("cache/archives/partial"), dest.to_path_buf()] {
        fs::create_dir_all(&dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    }
    let sources = state.join("sources.list");
    fs::write(&sources, format!("deb {} {suite} main\n", mirror()?))
        .map_err(|e| Fatal::fail(format!("{}: {e}", sources.display())))?;
    let apt = |args: &[&str]| -> Result<(), Fatal> {
        let status = Command::new("apt-get")
            .arg("-q")
            .args(["-o", "APT::Sandbox::User=root"])
            .arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", sources.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", state.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", state.join("cache").display()))
            .args(args)
            .current_dir(dest)
            // Progress, never on stdout: that is the suite's TAP.
            .stdout(std::io::stderr())
            .status()
            .map_err(|e| Fatal::fail(format!("apt-get: {e}")))?;
        match status.success() {
            true => Ok(()),
            false => Err(Fatal::fail(format!("apt-get {} from {suite} failed ({status})", args.join(" ")))),
        }
    };
    eprintln!("[vm] fetching {} from {suite}", packages.join(" "));
    apt(&["update"])?;
    let mut download = vec!["download"];
    download.extend_from_slice(packages);
    apt(&download)?;
    found(dest).ok_or_else(|| Fatal::fail(format!("apt-get download left no .deb for {}", packages.join(" "))))
}

/// The newest `NAME_VERSION_ARCH.deb` in `dir`.
fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// A field of a `.deb`'s control file (`dpkg-deb -f`).
pub fn control_field(deb: &Path, field: &str) -> Result<String, Fatal> {
    let out = dpkg_deb(&["-f".as_ref(), deb.as_os_str(), field.as_ref()])?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Unpacks a `.deb`'s files into `root` (`dpkg-deb -x`); nothing is installed.
pub fn unpack(deb: &Path, root: &Path) -> Result<(), Fatal> {
    dpkg_deb(&["-x".as_ref(), deb.as_os_str(), root.as_os_str()]).map(drop)
}

/// Runs `dpkg-deb ARGS` and returns its stdout.
fn dpkg_deb(args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, Fatal> {
    let out = Command::new("dpkg-deb").args(args).output().map_err(|e| Fatal::fail(format!("dpkg-deb: {e}")))?;
    match out.status.success() {
        true => Ok(out.stdout),
        false => Err(Fatal::fail(format!(
            "dpkg-deb {} failed: {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("no message")
        ))),
    }
}

/// The package names in a `Depends:` value, without versions or alternatives.
pub fn depends_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|dep| dep.split('|').next())
        .filter_map(|dep| dep.split_whitespace().next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_from_deb822_first_and_skips_security() {
        let deb822 = "Types: deb\nURIs: http://deb.example/debian-security\n\nTypes: deb\nURIs: http://deb.example/debian\nSuites: bookworm\n";
        assert_eq!(mirror_in(deb822, "").as_deref(), Some("http://deb.example/debian"));
        let list = "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(mirror_in("", list).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in("", "deb-src http://x/debian bookworm main\n"), None);
    }

    #[test]
    fn depends_lose_versions_and_alternatives() {
        let names = depends_names("libaio1 (>= 0.3.93), libc6 (>= 2.34), ipxe-qemu | foo, zlib1g (>= 1:1.2.0)");
        assert_eq!(names, ["libaio1", "libc6", "ipxe-qemu", "zlib1g"]);
        assert!(depends_names("").is_empty());
    }

    #[test]
    fn newest_deb_is_found() {
        let dir = std::env::temp_dir().join(format!("vfiotest-apt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in ["seabios_1.16.2-1_all.deb", "seabios_1.16.3-2_all.deb", "seabios-extra_1_all.deb"] {
            fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(find_deb(&dir, "seabios").unwrap(), dir.join("seabios_1.16.3-2_all.deb"));
        assert_eq!(find_deb(&dir, "qemu"), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
