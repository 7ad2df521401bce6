//! A user's kernel tree (`--tree PATH`): checked before anything is built, and never written
//! to: it builds out of tree, in the cache.

use std::path::{Path, PathBuf};

use super::UNTESTABLE;
use crate::Fatal;

/// What `make O=` refuses to build from: in-tree build output (the kernel's own check, in
/// its top Makefile's `outputmakefile` rule).
const IN_TREE_OUTPUT: &[&str] = &[".config", "include/config", "arch/x86/include/generated"];

/// `path` as a kernel tree we may build from: its canonical path.
///
/// # Errors
/// One line: no such directory, not a kernel tree (exit 1), or a tree with in-tree build output,
/// with the fix ([`UNTESTABLE`]: under `--bisect`, a commit that can't be tried).
pub fn check(path: &Path) -> Result<PathBuf, Fatal> {
    let tree = path.canonicalize().map_err(|e| Fatal::fail(format!("--tree {}: {e}", path.display())))?;
    if !tree.is_dir() {
        return Err(Fatal::fail(format!("--tree {}: not a directory", path.display())));
    }
    let is_kernel = super::debian::tree_version(&tree).is_some()
        && tree.join("Kconfig").is_file()
        && tree.join("arch/x86/Kconfig").is_file();
    if !is_kernel {
        return Err(Fatal::fail(format!(
            "--tree {}: not a Linux kernel tree (no top Makefile with VERSION, Kconfig and arch/x86)",
            path.display()
        )));
    }
    if let Some(output) = IN_TREE_OUTPUT.iter().find(|p| tree.join(p).exists()) {
        return Err(Fatal {
            code: UNTESTABLE,
            message: format!(
                "--tree {}: it holds in-tree build output ({output}), and `make O=` refuses such a tree: run \
                 `make mrproper` in it (it removes that output)",
                path.display()
            ),
        });
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn only_a_clean_kernel_tree_passes() {
        let root = std::env::temp_dir().join(format!("vfiotest-tree-{}", std::process::id()));
        let tree = root.join("linux");
        fs::create_dir_all(tree.join("arch/x86")).unwrap();
        let e = check(&root.join("absent")).unwrap_err();
        assert!(e.message.contains("No such file or directory"), "{}", e.message);
        let e = check(&tree).unwrap_err();
        assert!(e.message.contains("not a Linux kernel tree"), "{}", e.message);
        fs::write(tree.join("Makefile"), "VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 0\n").unwrap();
        fs::write(tree.join("Kconfig"), "").unwrap();
        fs::write(tree.join("arch/x86/Kconfig"), "").unwrap();
        assert_eq!(check(&tree).unwrap(), tree.canonicalize().unwrap());
        fs::write(tree.join(".config"), "CONFIG_X=y\n").unwrap();
        let e = check(&tree).unwrap_err();
        assert_eq!(e.code, UNTESTABLE);
        assert!(e.message.contains("in-tree build output (.config)") && e.message.contains("make mrproper"));
        assert!(!e.message.contains('\n'));
        fs::remove_dir_all(&root).unwrap();
    }
}
