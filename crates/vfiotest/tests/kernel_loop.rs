//! End to end: a kernel developer's loop. Debian's 7.3 source (the tree `vfiotest vm`
//! unpacked into its cache) stands in for the user's tree: copied as hard links to a fixed
//! place, built with `--tree`, one file edited, rebuilt and booted again; then broken, to see
//! what `--bisect` makes of a tree that doesn't build; then `--patch` with a patch of the
//! project's own, and one that doesn't apply.
//!
//! Edits replace a file (write a new one, rename it over) rather than write into it: the copy
//! shares its files with the cache's tree.

#[path = "../../../tests-support/kernel_source.rs"]
mod kernel_source;

#[path = "../../../tests-support/trial.rs"]
mod trial;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const DEVICE: &str = "0000:00:04.0";
const PROGRAM: &str = "vfio_dma_mapping_mmio_test";
const EDITED: &str = "drivers/vfio/vfio_iommu_type1.c";
const MARKER: &str = "vfiotest-kernel-loop-marker";

fn vfiotest(args: &[&str]) -> (Output, f64) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vfiotest")).args(args).output().expect("run vfiotest");
    (out, started.elapsed().as_secs_f64())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The user's tree: Debian's, as hard links, at a fixed path in the cache (so its build, about
/// as long as the default kernel's, is reused by the next run of this test from any clone),
/// with the edited file restored to Debian's text as a new file.
fn user_tree(cache: &Path, debian: &Path) -> PathBuf {
    let tree = cache.join("kernel-loop-test/linux");
    if !tree.join("Makefile").exists() {
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(&tree).unwrap();
        let entries: Vec<PathBuf> = fs::read_dir(debian)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.starts_with("build-") && name != ".unpacked"
            })
            .map(|e| e.path())
            .collect();
        let status = Command::new("cp").arg("-al").args(&entries).arg(&tree).status().unwrap();
        assert!(status.success());
    }
    replace(&tree.join(EDITED), &fs::read_to_string(debian.join(EDITED)).unwrap());
    tree
}

/// Replaces `path` with a new file holding `content` (never writes into a shared link).
fn replace(path: &Path, content: &str) {
    let staged = path.with_extension("vfiotest-new");
    fs::write(&staged, content).unwrap();
    fs::rename(&staged, path).unwrap();
}

/// The objects the last build of `tree` compiled, but those every link makes anew.
fn compiled(cache_builds: &Path, tree: &Path) -> Vec<String> {
    let name = tree.file_name().unwrap().to_string_lossy().into_owned();
    let dir = fs::read_dir(cache_builds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("tree-{name}-")))
        .max_by_key(|p| fs::metadata(p.join(".used")).and_then(|m| m.modified()).ok())
        .expect("the tree's build");
    let log = fs::read_to_string(dir.join("build.log")).unwrap();
    log.lines()
        .filter_map(|l| l.strip_prefix("  CC      "))
        .map(str::trim)
        .filter(|o| !o.starts_with("init/version") && !o.starts_with(".") && !o.starts_with("arch/x86/boot/"))
        .map(str::to_owned)
        .collect()
}

fn tree_edit_bisect_and_patch() {
    // `.ci/run` prepares the source first: without it this check can't be made, and says so.
    let debian = kernel_source::kernel_source()
        .expect("no unpacked kernel source (run `vfiotest vm --prepare` first): the loop can't be checked");
    let cache = kernel_source::cache_root();
    let builds = cache.join("builds");
    let tree = user_tree(&cache, &debian);
    let tree_arg = tree.to_str().unwrap();
    let run = ["vm", "--tree", tree_arg, "--device", DEVICE, "--", PROGRAM];

    // 1. The tree builds (all of it the first time) and the program passes on it.
    let (out, first) = vfiotest(&run);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    println!("kernel_loop: --tree built and ran {PROGRAM} in {first:.0} s");

    // 2. One line changed: only that file is compiled again, and the guest runs the change.
    let original = fs::read_to_string(debian.join(EDITED)).unwrap();
    let hook = "static int __init vfio_iommu_type1_init(void)\n{\n";
    assert!(original.contains(hook), "{EDITED} has its init function");
    replace(&tree.join(EDITED), &original.replacen(hook, &format!("{hook}\tpr_info(\"{MARKER}\\n\");\n"), 1));
    // The guest prints up to warnings on its console (loglevel=4); a pr_info needs loglevel=7.
    let (out, edited) = vfiotest(&[&run[..3], &["--verbose", "--append", "loglevel=7"], &run[3..]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(compiled(&builds, &tree), ["drivers/vfio/vfio_iommu_type1.o"], "only the edited file");
    assert!(stderr.contains(MARKER), "the guest booted the edited kernel (its console):\n{stderr}");
    println!("kernel_loop: one line edited → rebuilt, booted and {PROGRAM} passed in {edited:.1} s (goal: 90 s)");

    // 3. A tree that doesn't compile: under --bisect that is 125 (skip this commit), with the
    //    compiler's first error and the log in one line; without it, 1.
    replace(&tree.join(EDITED), &original.replacen(hook, &format!("{hook}\tthis does not compile;\n"), 1));
    let (out, broken) = vfiotest(&[&run[..3], &["--bisect"], &run[3..]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    println!("kernel_loop: --bisect on a tree that doesn't compile: 125 in {broken:.1} s");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("vfiotest: the kernel build failed: ")
            && last.contains("vfio_iommu_type1.c:")
            && last.contains("error:")
            && last.contains("whole log: "),
        "{last}"
    );
    let (out, _) = vfiotest(&run);
    assert_eq!(out.status.code(), Some(1), "without --bisect a failed build is a failure");

    // 4. Fixed again, --bisect says good.
    replace(&tree.join(EDITED), &original);
    let (out, fixed) = vfiotest(&[&run[..3], &["--bisect"], &run[3..]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    println!("kernel_loop: --bisect on the tree fixed again: 0 in {fixed:.1} s");

    // 5. The project's own patch onto Debian's source: only what it touches is compiled.
    let patch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../vm/patches/type1-unmap/0001-vfio-type1-Unmap-a-DMA-of-reserved-pfns-only-in-one-.patch"
    );
    let (out, patched) = vfiotest(&["vm", "--patch", patch, "--device", DEVICE, "--", PROGRAM]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("7.3+1 patch") || stderr.contains("patch-7.3-"), "{stderr}");
    println!("kernel_loop: --patch built (seeded from the stock build) and ran {PROGRAM} in {patched:.0} s");

    // 6. A patch that doesn't apply: one line naming it and its first rejected hunk.
    let bad = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad.patch");
    fs::write(
        &bad,
        format!("--- a/{EDITED}\n+++ b/{EDITED}\n@@ -1,1 +1,1 @@\n-no such line in the file\n+a replacement\n"),
    )
    .unwrap();
    let (out, _) = vfiotest(&["vm", "--patch", bad.to_str().unwrap(), "--", PROGRAM]);
    let last = text(&out.stderr).lines().last().unwrap_or_default().to_owned();
    assert_eq!(out.status.code(), Some(1), "{last}");
    assert!(
        last.contains("bad.patch does not apply: the hunk at drivers/vfio/vfio_iommu_type1.c:1 is rejected"),
        "{last}"
    );
    println!("kernel_loop: tree, edit, bisect codes and patches as expected");
}

fn main() {
    trial::main(vec![trial::check("tree_edit_bisect_and_patch", tree_edit_bisect_and_patch)]);
}
