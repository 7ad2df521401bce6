//! The guest kernels a run boots: ours (Debian's linux-source-7.3 with our fragments),
//! another version Debian ships, the user's own tree, Debian's source with the user's patches,
//! or a bzImage as given. Everything built is cached: Debian's kernels by version and
//! configuration, trees and patched sources as builds that are pruned.

mod build;
pub mod debian;
mod gaps;
mod patch;
mod store;
mod tree;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use crate::Fatal;
use crate::cache::Cache;
pub use debian::Version;
pub use patch::Patch;
pub use tree::check as check_tree;

/// The code of a failure that says nothing about how the kernel behaves (it didn't build or
/// didn't boot): `--bisect` exits with it (`git bisect run`'s "can't test this commit"), any
/// other run with 1.
pub const UNTESTABLE: i32 = 125;

/// What any guest needs to boot (merged first), then what the suite needs.
const BASE: &str = include_str!("../../../../../vm/guest-base.config");
const FRAGMENT: &str = include_str!("../../../../../vm/guest.config");

/// Where a guest kernel comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A bzImage as given (`--kernel`).
    Image(PathBuf),
    /// Debian's source of a version (`--kernel-version`; 7.3 by default).
    Debian(&'static Version),
    /// The user's tree (`--tree`).
    Tree(PathBuf),
    /// Debian's source of a version with the user's patches (`--patch`).
    Patched { base: &'static Version, patches: Vec<Patch> },
}

impl Source {
    /// Whether getting this kernel may need the compiler and make.
    pub fn may_build(&self, cache: &Cache, config: &Configuration) -> bool {
        match self {
            Self::Image(_) => false,
            Self::Debian(version) => !cache.kernel(version.name, &config.key()).exists(),
            Self::Tree(_) | Self::Patched { .. } => true,
        }
    }
}

/// The configuration every kernel built here gets: our two fragments, then the user's
/// (`--config FRAGMENT`), which may override ours.
#[derive(Debug, Clone, Default)]
pub struct Configuration {
    user: String,
}

impl Configuration {
    /// Ours, with the user's fragments read from `paths`.
    pub fn with_user_fragments(paths: &[PathBuf]) -> Result<Self, Fatal> {
        let mut user = String::new();
        for path in paths {
            let text =
                fs::read_to_string(path).map_err(|e| Fatal::fail(format!("--config {}: {e}", path.display())))?;
            if !text.lines().any(|l| l.trim_start().starts_with("CONFIG_") || l.contains(" is not set")) {
                return Err(Fatal::fail(format!(
                    "--config {}: not a kernel config fragment (no CONFIG_ line)",
                    path.display()
                )));
            }
            user.push_str(&format!("# --config {}\n{text}\n", path.display()));
        }
        Ok(Self { user })
    }

    /// Whether the user added to ours.
    pub fn is_ours(&self) -> bool {
        self.user.is_empty()
    }

    /// The whole fragment merged over `make allnoconfig`.
    fn fragment(&self) -> String {
        format!("{BASE}{FRAGMENT}{}", self.user)
    }

    /// What a build is keyed by: the script and the whole fragment.
    fn key(&self) -> String {
        hash([build::SCRIPT.as_bytes(), self.fragment().as_bytes()])
    }
}

/// The first 12 hex digits of the SHA-256 of `parts`.
fn hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A guest kernel, ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub bzimage: PathBuf,
    /// What tables call it: "7.3", "6.12+2 patches", "tree linux (7.4-rc2)", an image's path.
    pub label: String,
    /// Options of our fragment the kernel's tree doesn't define (an older kernel).
    pub lacks: Vec<String>,
    /// Tests known to fail on this kernel, and why (a Debian version's; none for a tree).
    pub known_bugs: &'static [(&'static str, &'static str)],
}

impl Kernel {
    /// Says once, on stderr, what the kernel lacks and what SKIPs for it.
    pub fn report_gaps(&self) {
        if self.lacks.is_empty() {
            return;
        }
        eprintln!(
            "[kernel] {} lacks {} option(s) of our fragment; left out, so tests SKIP:",
            self.label,
            self.lacks.len()
        );
        for line in gaps::describe(&self.lacks) {
            eprintln!("[kernel]   {line}");
        }
    }
}

/// How many builds of trees and patches to keep.
pub const KEEP_BUILDS: usize = 4;

/// The kernel `source` names, built first if needed (incrementally for a tree).
///
/// # Errors
/// One line; a kernel that can't be built has [`UNTESTABLE`] as its code.
pub fn get(cache: &Cache, source: &Source, config: &Configuration, keep: usize) -> Result<Kernel, Fatal> {
    match source {
        Source::Image(path) => Ok(Kernel {
            bzimage: check_bzimage(path)?,
            label: path.display().to_string(),
            lacks: Vec::new(),
            known_bugs: &[],
        }),
        Source::Debian(version) => debian_kernel(cache, version, config),
        Source::Tree(path) => {
            let tree = tree::check(path)?;
            let name = tree.file_name().map_or("/".into(), |n| n.to_string_lossy().into_owned());
            let version = debian::tree_version(&tree).unwrap_or_default();
            let dir = cache.builds().join(format!(
                "tree-{name}-{}-{}",
                hash([tree.as_os_str().as_encoded_bytes()]),
                &config.key()[..6]
            ));
            store::touch(&dir);
            ensure_space(cache, TREE_BUILD_SPACE)?;
            let built = build::build(&tree, &dir, &config.fragment())?;
            store::prune(&cache.builds(), keep, &dir);
            let label = format!("tree {name} ({version})");
            Ok(Kernel { bzimage: built.bzimage, label, lacks: built.lacks, known_bugs: &[] })
        }
        Source::Patched { base, patches } => {
            // The stock kernel first: its build seeds the patched one, so only what the patches
            // touch is compiled.
            let stock = debian_kernel(cache, base, config)?;
            let base_src = debian::source(cache, base)?;
            let key = config.key();
            let parts = [base.name.as_bytes(), key.as_bytes()];
            let changes: Vec<Vec<u8>> = patches.iter().map(Patch::changes).collect();
            let dir = cache.builds().join(format!(
                "patch-{}-{}",
                base.name,
                hash(parts.into_iter().chain(changes.iter().map(Vec::as_slice)))
            ));
            store::touch(&dir);
            ensure_space(cache, TREE_BUILD_SPACE)?;
            let src = patch::patched_tree(&base_src, &dir, patches)?;
            let build_dir = src.join(format!("build-{}", key));
            let seed = base_src.join(format!("build-{}", key));
            if !build_dir.exists() && seed.join(".config").exists() {
                // Copied aside, then renamed: a copy cut short must not pass for a build.
                let staged = build_dir.with_extension("copying");
                let _ = fs::remove_dir_all(&staged);
                debian::run(std::process::Command::new("cp").arg("-a").arg(&seed).arg(&staged))?;
                fs::rename(&staged, &build_dir).map_err(|e| Fatal::fail(format!("{}: {e}", build_dir.display())))?;
            }
            let built = build::build(&src, &build_dir, &config.fragment())?;
            store::prune(&cache.builds(), keep, &dir);
            let label = match patches.len() {
                1 => format!("{}+1 patch", base.name),
                n => format!("{}+{n} patches", base.name),
            };
            Ok(Kernel { bzimage: built.bzimage, label, lacks: stock.lacks, known_bugs: base.known_bugs })
        }
    }
}

/// Disk a tree's or patched source's build takes, with room to spare.
const TREE_BUILD_SPACE: u64 = 3 << 30;
/// Disk Debian's source and a build of it take, with room to spare.
const DEBIAN_BUILD_SPACE: u64 = 8 << 30;

/// Debian's `version` built with `config`, once: the bzImage and what it lacks are kept by
/// version and configuration. Concurrent callers wait for one build.
fn debian_kernel(cache: &Cache, version: &'static Version, config: &Configuration) -> Result<Kernel, Fatal> {
    let key = config.key();
    let bzimage = cache.kernel(version.name, &key);
    let lacks_file = bzimage.with_file_name("lacks");
    let label = match config.is_ours() {
        true => version.name.to_owned(),
        false => format!("{} with --config", version.name),
    };
    let cached = || -> Option<Kernel> {
        let lacks = fs::read_to_string(&lacks_file).ok()?;
        bzimage.exists().then(|| Kernel {
            bzimage: bzimage.clone(),
            label: label.clone(),
            lacks: lacks.lines().map(str::to_owned).collect(),
            known_bugs: version.known_bugs,
        })
    };
    if let Some(kernel) = cached() {
        return Ok(kernel);
    }
    let dir = bzimage.parent().expect("a kernel path has a directory");
    fs::create_dir_all(dir).map_err(|e| Fatal::fail(format!("{}: {e}", dir.display())))?;
    let lock_path = cache.kernel_lock();
    let lock = File::create(&lock_path).map_err(|e| Fatal::fail(format!("{}: {e}", lock_path.display())))?;
    if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!("[kernel] another vfiotest is building a kernel; waiting for it");
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| Fatal::fail(format!("flock {}: {e}", lock_path.display())))?;
    }
    if let Some(kernel) = cached() {
        return Ok(kernel);
    }
    ensure_space(cache, DEBIAN_BUILD_SPACE)?;
    let src = debian::source(cache, version)?;
    eprintln!("[kernel] building Linux {} from Debian's source (once; cached after)", version.name);
    // In a directory of the tree, so the build names its sources relative to it (`..`): a
    // patched copy of the tree can then reuse a copy of this build.
    let built = build::build(&src, &src.join(format!("build-{key}")), &config.fragment())?;
    let copy = |from: &Path, to: &Path| fs::copy(from, to).map_err(|e| Fatal::fail(format!("{}: {e}", to.display())));
    let staged = bzimage.with_extension("tmp");
    copy(&built.bzimage, &staged)?;
    fs::write(&lacks_file, built.lacks.iter().map(|o| format!("{o}\n")).collect::<String>())
        .map_err(|e| Fatal::fail(format!("{}: {e}", lacks_file.display())))?;
    fs::rename(&staged, &bzimage).map_err(|e| Fatal::fail(format!("{}: {e}", bzimage.display())))?;
    eprintln!("[kernel] done: {}", bzimage.display());
    Ok(Kernel { bzimage, label, lacks: built.lacks, known_bugs: version.known_bugs })
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

/// Fails with one line naming the cache and the space needed if a build can't fit.
fn ensure_space(cache: &Cache, needed: u64) -> Result<(), Fatal> {
    let root = cache.root();
    fs::create_dir_all(root).map_err(|e| Fatal::fail(format!("{}: {e}", root.display())))?;
    let stat = rustix::fs::statvfs(root).map_err(|e| Fatal::fail(format!("statvfs {}: {e}", root.display())))?;
    let free = stat.f_bavail * stat.f_frsize;
    match free >= needed {
        true => Ok(()),
        false => Err(Fatal {
            code: UNTESTABLE,
            message: format!(
                "building a guest kernel needs {} GiB free in {}, which has {:.1} GiB",
                needed >> 30,
                root.display(),
                free as f64 / f64::from(1u32 << 30)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_users_fragment_changes_the_key_and_must_be_one() {
        let dir = std::env::temp_dir().join(format!("vfiotest-fragment-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("kasan.config"), "CONFIG_KASAN=y\n").unwrap();
        fs::write(dir.join("notes.txt"), "hello\n").unwrap();
        let ours = Configuration::default();
        let theirs = Configuration::with_user_fragments(&[dir.join("kasan.config")]).unwrap();
        assert!(ours.is_ours() && !theirs.is_ours());
        assert_ne!(ours.key(), theirs.key());
        assert!(theirs.fragment().ends_with("CONFIG_KASAN=y\n\n"), "the user's lines come last, so they win");
        let e = Configuration::with_user_fragments(&[dir.join("notes.txt")]).unwrap_err().message;
        assert!(e.contains("not a kernel config fragment"), "{e}");
        let e = Configuration::with_user_fragments(&[dir.join("absent")]).unwrap_err().message;
        assert!(e.starts_with("--config ") && e.contains("No such file"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
