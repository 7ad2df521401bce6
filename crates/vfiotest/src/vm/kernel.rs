//! The default guest kernel: Linux 7.3 from Debian's source package, built once and cached.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use crate::Fatal;

/// The build script and config fragment, embedded so the binary alone can build its kernel.
const BUILD_SCRIPT: &str = include_str!("../../../../vm/build-kernel.sh");
const FRAGMENT: &str = include_str!("../../../../vm/guest.config");

/// Where the kernel built from the current script and fragment lives.
pub fn cached_path(cache: &Path) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(BUILD_SCRIPT);
    hash.update(FRAGMENT);
    let key: String = hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    cache.join("kernels").join(format!("linux-7.3-{key}")).join("bzImage")
}

/// Returns the cached kernel, building it first if needed (about 12 minutes on 2 cores).
/// Concurrent callers wait for one build.
pub fn ensure(cache: &Path) -> Result<PathBuf, Fatal> {
    let bzimage = cached_path(cache);
    if bzimage.exists() {
        return Ok(bzimage);
    }
    let dir = bzimage.parent().expect("a kernel path has a directory");
    fs::create_dir_all(dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let lock_path = cache.join("kernel.lock");
    let lock = File::create(&lock_path).map_err(|e| Fatal::fail(format!("{}: {e}", lock_path.display())))?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!("[kernel] another vfiotest is building the kernel; waiting for it");
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| Fatal::fail(format!("flock {}: {e}", lock_path.display())))?;
    }
    if bzimage.exists() {
        return Ok(bzimage);
    }
    let src_cache = cache.join("kernel-src");
    let deb = super::apt::download(cache, "trixie-backports", &["linux-source-7.3"], &src_cache)?.remove(0);
    let fragment = dir.join("guest.config");
    fs::write(&fragment, FRAGMENT).map_err(|e| Fatal::fail(format!("{}: {e}", fragment.display())))?;
    eprintln!("[kernel] building the guest kernel into {} (once; cached after)", dir.display());
    let status = Command::new("bash")
        .arg("-c")
        .arg(BUILD_SCRIPT)
        .arg("build-kernel.sh")
        .arg(&src_cache)
        .arg(&deb)
        .arg(&fragment)
        .arg(&bzimage)
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| Fatal::fail(format!("bash: {e}")))?;
    if !status.success() || !bzimage.exists() {
        return Err(Fatal::fail("guest kernel build failed (see the [kernel] lines above)"));
    }
    Ok(bzimage)
}
