//! Everything `vfiotest vm` keeps between runs, by one owner: `~/.cache/vfiotest` (or
//! `$VFIOTEST_CACHE`, or `$XDG_CACHE_HOME/vfiotest`) and each path in it.
//!
//! This file uses nothing but `std`, so the tests of other crates that need the kernel source
//! `vfiotest vm` unpacked include it by path (`tests-support/kernel_source.rs`) instead of
//! spelling the layout again.

use std::path::{Path, PathBuf};

/// The cache directory and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

#[allow(dead_code)] // Each includer uses its own part.
impl Cache {
    /// The cache of this user: `$VFIOTEST_CACHE`, else `$XDG_CACHE_HOME/vfiotest`, else
    /// `$HOME/.cache/vfiotest`, else `/var/cache/vfiotest`.
    pub fn locate() -> Self {
        let root = std::env::var_os("VFIOTEST_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vfiotest")))
            .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/vfiotest")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/vfiotest"));
        Self { root }
    }

    /// A cache at `root` (for tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Debian's QEMU from `suite`, unpacked.
    pub fn qemu(&self, suite: &str) -> PathBuf {
        self.root.join(format!("qemu-{suite}"))
    }

    /// Downloaded `.deb` packages.
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// The private apt state (lists, cache) for `suite`.
    pub fn apt_state(&self, suite: &str) -> PathBuf {
        self.root.join(format!("apt-{suite}"))
    }

    /// The kernel source package and its unpacked trees (`src-<version>`, each complete once
    /// it holds `.unpacked`), and the build directories.
    pub fn kernel_src(&self) -> PathBuf {
        self.root.join("kernel-src")
    }

    /// The newest unpacked kernel source tree, if any.
    pub fn newest_kernel_tree(&self) -> Option<PathBuf> {
        let mut trees: Vec<PathBuf> = std::fs::read_dir(self.kernel_src())
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("src-")) && p.join(".unpacked").exists()
            })
            .collect();
        trees.sort();
        trees.pop()
    }

    /// The guest kernel built from Debian's `linux-source-<version>` for `key` (the build
    /// script and the configuration).
    pub fn kernel(&self, version: &str, key: &str) -> PathBuf {
        self.root.join("kernels").join(format!("linux-{version}-{key}")).join("bzImage")
    }

    /// The builds of users' trees and of patched sources (`tree-*`, `patch-*`), each with the
    /// time of its last use; the oldest are pruned.
    pub fn builds(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// Held while a kernel builds, so two runs don't build into one tree.
    pub fn kernel_lock(&self) -> PathBuf {
        self.root.join("kernel.lock")
    }

    /// What each program took, per clock: the planner's local history.
    pub fn program_durations(&self) -> PathBuf {
        self.root.join("program-durations.json")
    }

    /// The guest consoles of the last runs.
    pub fn consoles(&self) -> PathBuf {
        self.root.join("consoles")
    }

    /// A link to the newest console log.
    pub fn last_console(&self) -> PathBuf {
        self.root.join("last-console.log")
    }

    /// The bench's saved runs.
    pub fn bench(&self) -> PathBuf {
        self.root.join("bench")
    }

    /// One run's own files (initramfs, disks), removed when it ends.
    pub fn run_dir(&self, pid: u32) -> PathBuf {
        self.root.join(format!("run-{pid}"))
    }
}

#[cfg(test)]
mod tests {
    // No `use`: the crates that include this file by path build this module without its tests.

    #[test]
    fn every_path_is_under_the_root_and_distinct() {
        let cache = super::Cache::at("/c");
        let paths = [
            cache.qemu("bookworm-backports"),
            cache.debs(),
            cache.apt_state("trixie-backports"),
            cache.kernel_src(),
            cache.kernel("7.3", "abc"),
            cache.builds(),
            cache.kernel_lock(),
            cache.program_durations(),
            cache.consoles(),
            cache.last_console(),
            cache.bench(),
            cache.run_dir(7),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for path in &paths {
            assert!(path.starts_with("/c"), "{}", path.display());
            assert!(seen.insert(path.clone()), "{} twice", path.display());
        }
        assert_eq!(cache.kernel("7.3", "abc"), std::path::Path::new("/c/kernels/linux-7.3-abc/bzImage"));
    }

    #[test]
    fn the_newest_complete_tree_wins() {
        let root = std::env::temp_dir().join(format!("vfiotest-cache-{}", std::process::id()));
        let cache = super::Cache::at(&root);
        for (tree, complete) in [("src-7.3.3", true), ("src-7.3.4", true), ("src-7.3.5", false)] {
            let dir = cache.kernel_src().join(tree);
            std::fs::create_dir_all(&dir).unwrap();
            if complete {
                std::fs::write(dir.join(".unpacked"), "").unwrap();
            }
        }
        assert_eq!(cache.newest_kernel_tree(), Some(cache.kernel_src().join("src-7.3.4")), "7.3.5 is half unpacked");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
