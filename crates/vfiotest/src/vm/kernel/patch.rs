//! Debian's source with the user's patches (`--patch FILE`, `git am`-style mboxes or plain
//! diffs), made once per set of patches and cached.
//!
//! The patched tree is a copy of Debian's made of hard links, so it costs almost no disk:
//! `git apply` replaces each file it patches with a new one instead of writing into it (checked
//! by a unit test), so Debian's tree stays as it was.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::UNTESTABLE;
use crate::Fatal;

/// A patch the user gave: its path, for messages, and its content, whose diffs key the build.
#[derive(Debug, Clone)]
pub struct Patch {
    pub path: PathBuf,
    pub text: Vec<u8>,
}

impl Patch {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, Fatal> {
        let text = fs::read(path).map_err(|e| Fatal::fail(format!("--patch {}: {e}", path.display())))?;
        Ok(Self { path: path.to_owned(), text })
    }

    /// What `git apply` reads of it: its diffs, without the commit messages, so that rewording
    /// a patch (adding numbers to its message, say) doesn't rebuild the kernel.
    pub fn changes(&self) -> Vec<u8> {
        let mut changes = Vec::new();
        let mut in_diff = false;
        for line in self.text.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b"diff ") || (!in_diff && line.starts_with(b"--- ")) {
                in_diff = true;
            } else if line.starts_with(b"From ") {
                // The next message of an mbox; no line of a diff starts so.
                in_diff = false;
            }
            if in_diff {
                changes.extend_from_slice(line);
            }
        }
        changes
    }
}

/// Marks a patched tree as complete: every patch applied.
const APPLIED: &str = ".applied";

/// `base` with `patches` applied, in `dir/src`; made once, then reused.
///
/// # Errors
/// A patch that doesn't apply: one line naming it and its first rejected hunk, code
/// [`UNTESTABLE`]; nothing half-patched is left behind.
pub(super) fn patched_tree(base: &Path, dir: &Path, patches: &[Patch]) -> Result<PathBuf, Fatal> {
    let src = dir.join("src");
    if src.join(APPLIED).exists() {
        return Ok(src);
    }
    if src.exists() {
        fs::remove_dir_all(&src).map_err(|e| Fatal::fail(format!("{}: {e}", src.display())))?;
    }
    fs::create_dir_all(&src).map_err(|e| Fatal::fail(format!("{}: {e}", src.display())))?;
    link_copy(base, &src)?;
    for patch in patches {
        if let Err(why) = apply(&src, dir, patch) {
            let _ = fs::remove_dir_all(&src);
            return Err(Fatal { code: UNTESTABLE, message: why });
        }
    }
    fs::write(src.join(APPLIED), "").map_err(|e| Fatal::fail(format!("{}: {e}", src.display())))?;
    Ok(src)
}

/// Copies `base`'s source into `src` as hard links, leaving out its build directories and marks.
fn link_copy(base: &Path, src: &Path) -> Result<(), Fatal> {
    let entries = fs::read_dir(base).map_err(|e| Fatal::fail(format!("{}: {e}", base.display())))?;
    let sources: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with("build-") && name != ".unpacked"
        })
        .map(|e| e.path())
        .collect();
    super::debian::run(Command::new("cp").arg("-al").args(&sources).arg(src))
}

/// Applies one patch in `src` (`git apply`, which takes an mbox or a plain diff), or says why not.
/// The text read (and hashed) is what is applied, through stdin: the path the user gave may be
/// relative to a directory git doesn't run in, or have changed since.
fn apply(src: &Path, ceiling: &Path, patch: &Patch) -> Result<(), String> {
    let mut git = Command::new("git")
        .args(["apply", "--whitespace=nowarn", "-p1"])
        .current_dir(src)
        // The cache may sit inside somebody's git repository: never look above the tree.
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("git apply: {e}"))?;
    // A patch git refuses early closes the pipe: its answer is in the exit status.
    let _ = git.stdin.take().map(|mut stdin| stdin.write_all(&patch.text));
    let out = git.wait_with_output().map_err(|e| format!("git apply: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "--patch {} does not apply: {}",
            patch.path.display(),
            first_rejection(&String::from_utf8_lossy(&out.stderr))
        )),
    }
}

/// What `git apply` said first about why a patch failed: the first rejected hunk's file and
/// line, or its first error.
fn first_rejection(stderr: &str) -> String {
    let errors = || stderr.lines().filter_map(|l| l.strip_prefix("error: "));
    let hunk = errors().find_map(|e| e.strip_prefix("patch failed: "));
    match (hunk, errors().next()) {
        (Some(at), _) => format!("the hunk at {at} is rejected"),
        (None, Some(error)) => error.to_owned(),
        (None, None) => stderr.lines().next().unwrap_or("git apply failed, saying nothing").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const PATCH: &str = "From 1 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\n---\n\
        --- a/d/f.c\n+++ b/d/f.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";

    #[test]
    fn only_the_diffs_key_a_build() {
        let patch = |text: &str| Patch { path: PathBuf::from("p"), text: text.as_bytes().to_vec() };
        let reworded = PATCH.replace("Subject: [PATCH] x\n", "Subject: [PATCH] y\n\nNumbers: 5.35s -> 9us\n");
        assert_eq!(patch(PATCH).changes(), patch(&reworded).changes(), "a new message, the same change");
        assert_ne!(patch(PATCH).changes(), patch(&PATCH.replace("+TWO", "+2")).changes());
        assert!(String::from_utf8(patch(PATCH).changes()).unwrap().starts_with("--- a/d/f.c\n"));
        // In an mbox of two, the second message is left out too.
        let two = format!(
            "{PATCH}From 2 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] z\n\n---\n{}",
            &PATCH[PATCH.find("--- a").unwrap()..]
        );
        let two_reworded = two.replace("Subject: [PATCH] z", "Subject: [PATCH] zz");
        assert_eq!(patch(&two).changes(), patch(&two_reworded).changes());
    }

    #[test]
    fn a_patched_tree_leaves_the_base_as_it_was() {
        let root = std::env::temp_dir().join(format!("vfiotest-patch-{}", std::process::id()));
        let base = root.join("src-7.3.4");
        fs::create_dir_all(base.join("d")).unwrap();
        fs::create_dir_all(base.join("build-abc")).unwrap();
        fs::write(base.join("d/f.c"), "one\ntwo\nthree\n").unwrap();
        fs::write(base.join("d/g.c"), "untouched\n").unwrap();
        fs::write(root.join("fix.patch"), PATCH).unwrap();
        // Given relative to the user's directory, which is not where git runs: what was read
        // is what is applied.
        let read = Patch::read(&root.join("fix.patch")).unwrap();
        let patch = Patch { path: PathBuf::from("relative/fix.patch"), ..read };
        let src = patched_tree(&base, &root.join("patch-1"), &[patch]).unwrap();
        assert_eq!(fs::read_to_string(src.join("d/f.c")).unwrap(), "one\nTWO\nthree\n");
        assert_eq!(fs::read_to_string(base.join("d/f.c")).unwrap(), "one\ntwo\nthree\n", "the base is untouched");
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(inode(&src.join("d/g.c")), inode(&base.join("d/g.c")), "unpatched files are links");
        assert!(!src.join("build-abc").exists(), "the base's builds are not copied");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_patch_that_does_not_apply_names_its_hunk_and_leaves_nothing() {
        let root = std::env::temp_dir().join(format!("vfiotest-patch-bad-{}", std::process::id()));
        let base = root.join("src");
        fs::create_dir_all(base.join("d")).unwrap();
        fs::write(base.join("d/f.c"), "one\nzwei\nthree\n").unwrap();
        fs::write(root.join("fix.patch"), PATCH).unwrap();
        let patch = Patch::read(&root.join("fix.patch")).unwrap();
        let e = patched_tree(&base, &root.join("patch-1"), &[patch]).unwrap_err();
        assert_eq!(e.code, UNTESTABLE);
        assert!(e.message.ends_with("fix.patch does not apply: the hunk at d/f.c:1 is rejected"), "{}", e.message);
        assert!(!root.join("patch-1/src").exists());
        let e = Patch::read(&root.join("absent.patch")).unwrap_err().message;
        assert!(e.starts_with("--patch ") && e.contains("No such file"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
