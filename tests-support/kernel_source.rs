//! Where the tests that compile C against linux-source-7.3 find the kernel tree: the one
//! `vfiotest vm` unpacked into its cache. Shared by path between the crates' tests.

use std::path::PathBuf;

/// The newest unpacked kernel source tree, or `$VFIOTEST_KERNEL_SRC`.
pub fn kernel_source() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VFIOTEST_KERNEL_SRC") {
        return Some(PathBuf::from(dir));
    }
    // The same places `vfiotest vm` keeps its cache, in the same order.
    let cache = std::env::var_os("VFIOTEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vfiotest")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vfiotest")))?;
    let mut trees: Vec<_> = std::fs::read_dir(cache.join("kernel-src"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("src-")) && p.join(".unpacked").exists()
        })
        .collect();
    trees.sort();
    trees.pop()
}
