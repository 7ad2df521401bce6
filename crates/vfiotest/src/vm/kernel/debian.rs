//! Debian's kernel source packages the guest kernel can be built from, and where each is
//! unpacked.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Fatal;
use crate::cache::Cache;
use crate::vm::apt;

/// A kernel version Debian ships as `linux-source-<name>` in `suite`.
#[derive(Debug, PartialEq, Eq)]
pub struct Version {
    /// What `--kernel-version` takes: "6.12".
    pub name: &'static str,
    pub suite: &'static str,
    /// Tests that fail on this version for a reason found and named (`program/test` patterns,
    /// each with the reason and the upstream commit that changed it): they run, and show XFAIL
    /// (XPASS once a stable update carries the change).
    pub known_bugs: &'static [(&'static str, &'static str)],
}

impl Version {
    /// The source package's name.
    pub fn package(&self) -> String {
        format!("linux-source-{}", self.name)
    }
}

/// The versions `--kernel-version` offers, oldest first: Debian 12's own, its backport, and
/// Debian 13's backports (7.3 builds the default guest kernel).
pub const VERSIONS: &[Version] = &[
    Version { name: "6.1", suite: "bookworm", known_bugs: &[WRAP_IS_EINVAL] },
    Version { name: "6.12", suite: "bookworm-backports", known_bugs: LTS_6_12 },
    Version { name: "7.2", suite: "trixie-backports", known_bugs: &[] },
    Version { name: "7.3", suite: "trixie-backports", known_bugs: &[] },
];

/// Type1 before 6012379ede6a (October 2025) refuses a map or unmap that wraps the IOVA space with EINVAL, not the
/// EOVERFLOW the test asks for (6.1.176 and 6.12.95, both run whole).
const WRAP_IS_EINVAL: (&str, &str) = (
    "vfio_dma_mapping_test*/vfio_dma_map_limit_test.vfio_type1*.overflow",
    "type1 in this LTS answers a map or unmap that wraps the IOVA space with EINVAL; EOVERFLOW since \
     6012379ede6a (vfio/type1: sanitize for overflow using check_*_overflow(), October 2025), not backported",
);

/// What 6.12.95 (Debian's, the whole suite run on it) gets wrong, with the upstream fix it lacks.
const LTS_6_12: &[(&str, &str)] = &[
    WRAP_IS_EINVAL,
    (
        "vfio_pci_sriov_uapi_test*/vfio_pci_sriov_uapi_test.iommufd_[dns]*",
        "6.12 VFIO_DEVICE_BIND_IOMMUFD takes no VF token (EINVAL), so a VF of a vfio-pci PF can't be opened \
         through its cdev; fixed by be2e70b96c3e (vfio: Provide a way to pass the VF token to a cdev, July 2025; \
         Fixes: 5fcc26969a16), not in 6.12",
    ),
];

/// The version the default guest kernel is built from.
pub fn ours() -> &'static Version {
    named("7.3").expect("7.3 is offered")
}

/// The version called `name`, or a one-line error listing those offered.
pub fn named(name: &str) -> Result<&'static Version, Fatal> {
    VERSIONS.iter().find(|v| v.name == name).ok_or_else(|| {
        let offered: Vec<&str> = VERSIONS.iter().map(|v| v.name).collect();
        Fatal::fail(format!(
            "no kernel version {name:?}: Debian's source is offered for {}, or all",
            offered.join(", ")
        ))
    })
}

/// The tree of Debian's `linux-source-<version>`, downloaded and unpacked once into the cache
/// (`src-<Debian version>`, complete once it holds `.unpacked`).
pub fn source(cache: &Cache, version: &Version) -> Result<PathBuf, Fatal> {
    let dir = cache.kernel_src();
    let package = version.package();
    let deb = apt::download(cache, version.suite, &[&package], &dir)?.remove(0);
    let debian_version = apt::control_field(&deb, "Version")?;
    let src = dir.join(format!("src-{debian_version}"));
    if src.join(".unpacked").exists() {
        return Ok(src);
    }
    eprintln!("[kernel] unpacking {}", deb.display());
    let staging = dir.join("deb-root");
    for stale in [&src, &staging] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(|e| Fatal::fail(format!("{}: {e}", stale.display())))?;
        }
    }
    apt::unpack(&deb, &staging)?;
    fs::create_dir_all(&src).map_err(|e| Fatal::fail(format!("{}: {e}", src.display())))?;
    let tarball = staging.join(format!("usr/src/{package}.tar.xz"));
    run(Command::new("tar").arg("-xJf").arg(&tarball).arg("-C").arg(&src).arg("--strip-components=1"))?;
    fs::remove_dir_all(&staging).map_err(|e| Fatal::fail(format!("{}: {e}", staging.display())))?;
    fs::write(src.join(".unpacked"), "").map_err(|e| Fatal::fail(format!("{}: {e}", src.display())))?;
    Ok(src)
}

/// Runs `command`, failing with its stderr's last line.
pub(super) fn run(command: &mut Command) -> Result<(), Fatal> {
    let out = command.output().map_err(|e| Fatal::fail(format!("{:?}: {e}", command.get_program())))?;
    match out.status.success() {
        true => Ok(()),
        false => {
            let said = String::from_utf8_lossy(&out.stderr);
            let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing on stderr)");
            Err(Fatal::fail(format!("{:?} failed: {last}", command.get_program())))
        }
    }
}

/// `MAJOR.MINOR.SUBLEVEL` and `EXTRAVERSION` from a tree's top Makefile, e.g. "7.3.4".
pub fn tree_version(tree: &Path) -> Option<String> {
    let makefile = fs::read_to_string(tree.join("Makefile")).ok()?;
    version_in(&makefile)
}

fn version_in(makefile: &str) -> Option<String> {
    let field = |name: &str| {
        makefile.lines().take(10).find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let (version, patchlevel) = (field("VERSION")?, field("PATCHLEVEL")?);
    let sublevel = field("SUBLEVEL").unwrap_or_default();
    let extra = field("EXTRAVERSION").unwrap_or_default();
    match sublevel.as_str() {
        "" | "0" => Some(format!("{version}.{patchlevel}{extra}")),
        _ => Some(format!("{version}.{patchlevel}.{sublevel}{extra}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_named_and_a_wrong_one_lists_them() {
        assert_eq!(named("6.12").unwrap().suite, "bookworm-backports");
        assert_eq!(ours().package(), "linux-source-7.3");
        let e = named("5.10").unwrap_err().message;
        assert_eq!(e, "no kernel version \"5.10\": Debian's source is offered for 6.1, 6.12, 7.2, 7.3, or all");
    }

    #[test]
    fn every_known_bug_marks_the_tests_it_names_and_no_other() {
        let bdfs: Vec<vfio::Bdf> = crate::vm::machine::TOPOLOGY.iter().map(|d| d.bdf.parse().unwrap()).collect();
        for version in VERSIONS {
            for (pattern, bug) in version.known_bugs {
                let known = crate::suite::KnownBug::parse(&format!("{pattern}={bug}")).unwrap();
                let mut catalogue = crate::programs::catalogue(&[], &bdfs);
                known.mark(&mut catalogue);
                let marked: Vec<String> = catalogue
                    .iter()
                    .flat_map(|p| p.tests.iter().filter(|t| t.known_bug.is_some()).map(|t| t.full_name()))
                    .collect();
                assert!(!marked.is_empty(), "{}: {pattern} marks no test", version.name);
                assert!(!marked.iter().any(|t| t.contains("compat")), "{pattern} marks an iommufd compat mode");
            }
        }
    }

    #[test]
    fn a_trees_version_comes_from_its_makefile() {
        let head =
            "# SPDX-License-Identifier: GPL-2.0\nVERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\nNAME = x\n";
        assert_eq!(version_in(head).as_deref(), Some("7.3.4"));
        let rc = "VERSION = 7\nPATCHLEVEL = 4\nSUBLEVEL = 0\nEXTRAVERSION = -rc2\n";
        assert_eq!(version_in(rc).as_deref(), Some("7.4-rc2"));
        assert_eq!(version_in("all:\n\techo no kernel\n"), None);
    }
}
