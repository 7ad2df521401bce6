//! The default guest kernel: Linux 7.3 from Debian's source package, built once and cached.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use crate::Fatal;
use crate::cache::Cache;

/// The build script and config fragment, embedded so the binary alone can build its kernel.
const BUILD_SCRIPT: &str = include_str!("../../../../vm/build-kernel.sh");
/// What any guest needs to boot (merged first), then what the suite needs.
const BASE: &str = include_str!("../../../../vm/guest-base.config");
const FRAGMENT: &str = include_str!("../../../../vm/guest.config");

/// Where the kernel built from the current script and fragment lives.
pub fn cached_path(cache: &Cache) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(BUILD_SCRIPT);
    hash.update(BASE);
    hash.update(FRAGMENT);
    let key: String = hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    cache.kernel(&key)
}

/// Where an x86 boot image keeps its setup header's magic, "HdrS" (Documentation/arch/x86/boot.rst).
const HDRS_OFFSET: usize = 0x202;

/// `path` if it is an x86 bzImage (it has the boot protocol's "HdrS" magic), else a one-line
/// error: QEMU's own complaint about a non-kernel ("linux kernel too old to load a ram disk")
/// says nothing useful.
pub fn check_bzimage(path: &Path) -> Result<PathBuf, Fatal> {
    let mut head = [0u8; HDRS_OFFSET + 4];
    let read = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    match read {
        Ok(()) if &head[HDRS_OFFSET..] == b"HdrS" => Ok(path.to_owned()),
        Ok(()) => Err(not_a_bzimage(path)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(not_a_bzimage(path)),
        Err(e) => Err(Fatal::fail(format!("kernel {}: {e}", path.display()))),
    }
}

fn not_a_bzimage(path: &Path) -> Fatal {
    Fatal::fail(format!(
        "{} is not a bzImage (no \"HdrS\" boot header at 0x202); pass arch/x86/boot/bzImage",
        path.display()
    ))
}

/// Disk the kernel source and build take in the cache, with room to spare.
const BUILD_SPACE: u64 = 8 << 30;

/// Fails with one line naming the cache and the space needed if the build can't fit.
fn ensure_space(cache: &Cache) -> Result<(), Fatal> {
    let root = cache.root();
    let stat = rustix::fs::statvfs(root).map_err(|e| Fatal::fail(format!("statvfs {}: {e}", root.display())))?;
    let free = stat.f_bavail * stat.f_frsize;
    match free >= BUILD_SPACE {
        true => Ok(()),
        false => Err(Fatal::fail(format!(
            "building the guest kernel needs {} GiB free in {}, which has {:.1} GiB",
            BUILD_SPACE >> 30,
            root.display(),
            free as f64 / f64::from(1u32 << 30)
        ))),
    }
}

/// How many objects a build of our config makes from scratch, for the first build's estimate
/// (7.3.4, allnoconfig + guest-base.config + guest.config).
const TYPICAL_OBJECTS: u64 = 1800;

/// Reads the build script's progress lines and says, now and then, how far the build is.
struct Progress {
    started: Instant,
    /// The objects a whole build makes, and whether that is known (from this tree's last build)
    /// or the typical count.
    total: u64,
    known: bool,
    built: u64,
    last_percent: u64,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self { started, total: TYPICAL_OBJECTS, known: false, built: 0, last_percent: 0 }
    }

    /// Takes one line of the script's stdout; returns a report every 5 %.
    fn feed(&mut self, line: &str, now: Instant) -> Option<String> {
        if let Some(count) = line.strip_prefix("previous-objects ") {
            // An incremental build's log says little about a whole build; only trust big ones.
            if let Ok(count) = count.trim().parse::<u64>()
                && count >= TYPICAL_OBJECTS / 2
            {
                (self.total, self.known) = (count, true);
            }
            return None;
        }
        self.built += 1;
        let percent = (self.built * 100 / self.total.max(1)).min(99);
        if percent < self.last_percent + 5 {
            return None;
        }
        self.last_percent = percent;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let left = elapsed / self.built as f64 * self.total.saturating_sub(self.built) as f64;
        let about = if self.known { "" } else { "~" };
        Some(format!("{percent:>2} % ({} of {about}{} objects), about {} left", self.built, self.total, minutes(left)))
    }
}

fn minutes(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s => format!("{:.0} min", s / 60.0),
    }
}

/// Returns the cached kernel, building it first if needed (about 5 minutes on 2 cores).
/// Concurrent callers wait for one build.
pub fn ensure(cache: &Cache) -> Result<PathBuf, Fatal> {
    let bzimage = cached_path(cache);
    if bzimage.exists() {
        return Ok(bzimage);
    }
    let dir = bzimage.parent().expect("a kernel path has a directory");
    fs::create_dir_all(dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let lock_path = cache.kernel_lock();
    let lock = File::create(&lock_path).map_err(|e| Fatal::fail(format!("{}: {e}", lock_path.display())))?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!("[kernel] another vfiotest is building the kernel; waiting for it");
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| Fatal::fail(format!("flock {}: {e}", lock_path.display())))?;
    }
    if bzimage.exists() {
        return Ok(bzimage);
    }
    ensure_space(cache)?;
    let src_cache = cache.kernel_src();
    let deb = super::apt::download(cache, "trixie-backports", &["linux-source-7.3"], &src_cache)?.remove(0);
    let fragment = dir.join("guest.config");
    fs::write(&fragment, format!("{BASE}{FRAGMENT}"))
        .map_err(|e| Fatal::fail(format!("{}: {e}", fragment.display())))?;
    eprintln!("[kernel] building the guest kernel into {} (once; cached after)", dir.display());
    let mut build = Command::new("bash")
        .arg("-c")
        .arg(BUILD_SCRIPT)
        .arg("build-kernel.sh")
        .arg(&src_cache)
        .arg(&deb)
        .arg(&fragment)
        .arg(&bzimage)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal::fail(format!("bash: {e}")))?;
    let mut progress = Progress::new(Instant::now());
    for line in BufReader::new(build.stdout.take().expect("piped")).lines().map_while(std::io::Result::ok) {
        if let Some(report) = progress.feed(&line, Instant::now()) {
            eprintln!("[kernel] {report}");
        }
    }
    let status = build.wait().map_err(|e| Fatal::fail(format!("bash: {e}")))?;
    if !status.success() || !bzimage.exists() {
        return Err(Fatal::fail("guest kernel build failed (see the [kernel] lines above)"));
    }
    Ok(bzimage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_every_five_percent_with_an_estimate() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        assert_eq!(p.feed("previous-objects 2000", t0), None);
        let reports: Vec<String> = (1..=2000u64)
            .filter_map(|i| p.feed("  CC      kernel/fork.o", t0 + std::time::Duration::from_millis(i * 300)))
            .collect();
        assert_eq!(reports.len(), 19, "5 % to 95 %: {reports:?}");
        assert_eq!(reports[0], " 5 % (100 of 2000 objects), about 10 min left");
        assert!(reports.last().unwrap().starts_with("95 % (1900 of 2000 objects)"));
        // A first build only has the typical count, and says so.
        let mut first = Progress::new(t0);
        first.feed("previous-objects 0", t0);
        let report = (1..=90).filter_map(|_| first.feed("  CC x", t0 + std::time::Duration::from_secs(60))).last();
        assert_eq!(report.unwrap(), " 5 % (90 of ~1800 objects), about 19 min left");
    }

    #[test]
    fn only_a_bzimage_passes_the_check() {
        let dir = std::env::temp_dir().join(format!("vfiotest-bzimage-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut image = vec![0u8; 0x400];
        image[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        fs::write(dir.join("bzImage"), &image).unwrap();
        fs::write(dir.join("vmlinux.txt"), b"not a kernel").unwrap();
        assert!(check_bzimage(&dir.join("bzImage")).is_ok());
        let err = check_bzimage(&dir.join("vmlinux.txt")).unwrap_err().message;
        assert!(err.contains("is not a bzImage"), "{err}");
        let err = check_bzimage(&dir.join("missing")).unwrap_err().message;
        assert!(err.contains("No such file"), "{err}");
        assert!(check_bzimage(&dir).unwrap_err().message.contains("Is a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
