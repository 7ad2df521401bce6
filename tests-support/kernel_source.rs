//! Where the tests that compile C against linux-source-7.3 find the kernel tree: the one
//! `vfiotest vm` unpacked into its cache. Shared by path between the crates' tests; the cache's
//! layout is the vm runner's own `Cache`, included here by path (it needs only `std`).

use std::path::PathBuf;

#[path = "../crates/vfiotest/src/cache.rs"]
mod cache;

/// The newest unpacked kernel source tree, or `$VFIOTEST_KERNEL_SRC`.
#[allow(dead_code)] // Not every includer needs it.
pub fn kernel_source() -> Option<PathBuf> {
    match std::env::var_os("VFIOTEST_KERNEL_SRC") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => cache::Cache::locate().newest_kernel_tree(),
    }
}

/// The root of `vfiotest vm`'s cache.
#[allow(dead_code)] // Not every includer needs it.
pub fn cache_root() -> PathBuf {
    cache::Cache::locate().root().to_owned()
}
