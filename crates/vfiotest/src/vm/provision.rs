//! Making sure the host has what the emulated machine needs, installing it if we may.

use std::path::Path;
use std::process::Command;

use crate::Fatal;

/// A host requirement: a file that must exist, and the Debian package that provides it.
struct Need {
    path: &'static str,
    package: &'static str,
}

/// What booting the machine needs.
/// (QEMU itself comes from bookworm-backports, see `qemu.rs`.)
const RUN: &[Need] = &[
    // Runs QEMU with a parent-death signal, so it can't outlive us.
    Need { path: "/usr/bin/setpriv", package: "util-linux" },
];

/// What building the guest kernel from Debian's source package needs.
const KERNEL_BUILD: &[Need] = &[
    Need { path: "/usr/bin/make", package: "make" },
    Need { path: "/usr/bin/gcc", package: "gcc" },
    Need { path: "/usr/bin/flex", package: "flex" },
    Need { path: "/usr/bin/bison", package: "bison" },
    Need { path: "/usr/bin/bc", package: "bc" },
    Need { path: "/usr/bin/xz", package: "xz-utils" },
    Need { path: "/usr/bin/perl", package: "perl" },
    Need { path: "/usr/include/libelf.h", package: "libelf-dev" },
    Need { path: "/usr/include/openssl/opensslv.h", package: "libssl-dev" },
    // Applies `--patch` files.
    Need { path: "/usr/bin/git", package: "git" },
];

/// Ensures the packages for running (and, if `build_kernel`, for building the kernel) are
/// installed, installing missing ones with apt when running as root.
pub fn ensure(build_kernel: bool) -> Result<(), Fatal> {
    let mut missing: Vec<&str> = RUN.iter().filter(|n| !Path::new(n.path).exists()).map(|n| n.package).collect();
    if build_kernel {
        missing.extend(KERNEL_BUILD.iter().filter(|n| !Path::new(n.path).exists()).map(|n| n.package));
    }
    missing.dedup();
    install(&missing)
}

/// Installs those of `packages` (from the machine's own apt sources) that dpkg doesn't list as
/// installed.
pub fn install_missing(packages: &[String]) -> Result<(), Fatal> {
    let missing: Vec<&str> = packages.iter().map(String::as_str).filter(|p| !is_installed(p)).collect();
    install(&missing)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

fn install(missing: &[&str]) -> Result<(), Fatal> {
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !rustix::process::geteuid().is_root() {
        return Err(Fatal::fail(format!("missing packages; as root run: apt-get install -y {list}")));
    }
    eprintln!("[vm] installing {list}");
    if !apt_install(missing)? {
        eprintln!("[vm] apt-get install failed; refreshing package lists and retrying");
        run_apt(&["update"])?;
        if !apt_install(missing)? {
            return Err(Fatal::fail(format!("apt-get install {list} failed")));
        }
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<bool, Fatal> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run_apt(&args)
}

fn run_apt(args: &[&str]) -> Result<bool, Fatal> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Progress, never on stdout: that is the suite's TAP.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| Fatal::fail(format!("apt-get: {e}")))?;
    Ok(status.success())
}
