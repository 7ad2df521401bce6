//! One kernel build: a source tree, configured with our fragments (and the user's), built out of
//! tree by `vm/build-kernel.sh` with a progress line; its failures said in one line.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::UNTESTABLE;
use crate::Fatal;

/// The build script, embedded so the binary alone can build its kernel.
pub(super) const SCRIPT: &str = include_str!("../../../../../vm/build-kernel.sh");

/// What a build made.
#[derive(Debug)]
pub(super) struct Built {
    pub bzimage: PathBuf,
    /// The options of the fragments that the tree's Kconfig doesn't define.
    pub lacks: Vec<String>,
}

/// Configures and builds `src` in `build` (only what changed since the last build there), with
/// `fragment` merged over `make allnoconfig`.
///
/// # Errors
/// One line, with [`UNTESTABLE`] as its code: an option the tree has but the configuration
/// dropped, the compiler's first error and the log's path, or a full disk.
pub(super) fn build(src: &Path, build: &Path, fragment: &str) -> Result<Built, Fatal> {
    fs::create_dir_all(build).map_err(|e| Fatal::fail(format!("{}: {e}", build.display())))?;
    let fragment_path = build.join("vfiotest-fragment.config");
    fs::write(&fragment_path, fragment).map_err(|e| Fatal::fail(format!("{}: {e}", fragment_path.display())))?;
    eprintln!("[kernel] building {} in {}", src.display(), build.display());
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .arg("build-kernel.sh")
        .arg(src)
        .arg(build)
        .arg(&fragment_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Fatal::fail(format!("bash: {e}")))?;
    // The script's own stderr (make's configuration chatter) is kept for a failure's message.
    let stderr = child.stderr.take().expect("piped");
    let chatter =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>());
    let started = Instant::now();
    let mut progress = Progress::new(started);
    let (mut lacks, mut dropped) = (Vec::new(), None);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        if let Some(option) = line.strip_prefix("lacks ") {
            lacks.push(option.to_owned());
        } else if let Some(options) = line.strip_prefix("config-dropped ") {
            dropped = Some(options.to_owned());
        } else if let Some(report) = progress.feed(&line, Instant::now()) {
            eprintln!("[kernel] {report}");
        }
    }
    let status = child.wait().map_err(|e| Fatal::fail(format!("bash: {e}")))?;
    let chatter = chatter.join().unwrap_or_default();
    let bzimage = build.join("arch/x86/boot/bzImage");
    if status.success() && bzimage.exists() {
        eprintln!("[kernel] built in {:.0} s ({} objects)", started.elapsed().as_secs_f64(), progress.built);
        return Ok(Built { bzimage, lacks });
    }
    let log = build.join("build.log");
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    Err(Fatal { code: UNTESTABLE, message: failure(dropped.as_deref(), &chatter, &log_text, &log, build) })
}

/// Why a build failed, in one line.
fn failure(dropped: Option<&str>, chatter: &[String], log_text: &str, log: &Path, build: &Path) -> String {
    let full_disk = |text: &str| text.contains("No space left on device");
    if full_disk(log_text) || chatter.iter().any(|l| full_disk(l)) {
        return format!(
            "the disk filled during the kernel build in {}: free some space and run again",
            build.display()
        );
    }
    if let Some(options) = dropped {
        return format!(
            "the kernel configuration dropped {options}: the tree has it, but not what it depends on (see {})",
            build.join(".config").display()
        );
    }
    let said = chatter.join("\n");
    match first_error(log_text).or_else(|| first_error(&said)) {
        Some(error) => format!("the kernel build failed: {error} (whole log: {})", log.display()),
        None => {
            let last = chatter.iter().rev().find(|l| !l.trim().is_empty()).map_or("no message", String::as_str);
            format!("the kernel build failed: {last} (whole log: {})", log.display())
        }
    }
}

/// The first line of a build's output that says what went wrong: a compiler's or linker's
/// error, or make's.
fn first_error(text: &str) -> Option<&str> {
    let lines = || text.lines().map(str::trim);
    lines()
        .find(|l| l.contains(": error: ") || l.contains(": fatal error: ") || l.contains("undefined reference to"))
        .or_else(|| lines().find(|l| l.starts_with("make") && l.contains("***")))
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
    fn a_failed_build_is_named_by_its_first_error() {
        let log = Path::new("/c/b/build.log");
        let build = Path::new("/c/b");
        let text = "  CC      drivers/vfio/vfio_iommu_type1.o\n\
                    ../drivers/vfio/vfio_iommu_type1.c:120:9: error: expected ';' before 'return'\n\
                    ../drivers/vfio/vfio_iommu_type1.c:130:1: error: second\n\
                    make[4]: *** [../scripts/Makefile.build:287: drivers/vfio/vfio_iommu_type1.o] Error 1\n";
        assert_eq!(
            failure(None, &[], text, log, build),
            "the kernel build failed: ../drivers/vfio/vfio_iommu_type1.c:120:9: error: expected ';' before \
             'return' (whole log: /c/b/build.log)"
        );
        let linker = "ld: vmlinux.o: in function `f':\nfoo.c:(.text+0x1): undefined reference to `g'\n";
        assert!(failure(None, &[], linker, log, build).contains("undefined reference to `g'"));
        let made = "make[1]: *** No rule to make target 'bzImage'.  Stop.\n";
        assert!(failure(None, &[], made, log, build).contains("No rule to make target"));
        let full = "../mm/slub.c:1: fatal error: error writing to /tmp/ccX.s: No space left on device\n";
        assert!(failure(None, &[], full, log, build).starts_with("the disk filled during the kernel build in /c/b"));
        let dropped = failure(Some("CONFIG_VFIO_PCI_DMABUF=y"), &[], "", log, build);
        assert!(dropped.starts_with("the kernel configuration dropped CONFIG_VFIO_PCI_DMABUF=y: the tree has it"));
        let chatter = ["*** Error during update of the configuration.".to_owned()];
        assert!(failure(None, &chatter, "", log, build).contains("*** Error during update of the configuration."));
    }
}
