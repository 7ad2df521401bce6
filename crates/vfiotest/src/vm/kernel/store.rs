//! The builds of users' trees and patched sources (`<cache>/builds/*`): each marked with its
//! last use, the oldest beyond `--keep-builds` removed, and their size said.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Marks a build's last use.
const USED: &str = ".used";

/// Marks `entry` (a directory under the builds) as used now.
pub fn touch(entry: &Path) {
    let _ = fs::create_dir_all(entry);
    let _ = fs::write(entry.join(USED), "");
}

/// When `entry` was last used (its directory's time if it was never marked).
fn last_use(entry: &Path) -> SystemTime {
    let time = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    time(&entry.join(USED)).or_else(|| time(entry)).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Removes all but the `keep` most recently used builds in `builds` (never `current`), and
/// says on stderr where they are and how much disk they take.
pub fn prune(builds: &Path, keep: usize, current: &Path) {
    let Ok(entries) = fs::read_dir(builds) else { return };
    let mut all: Vec<(SystemTime, PathBuf)> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).map(|p| (last_use(&p), p)).collect();
    all.sort_by_key(|(used, _)| std::cmp::Reverse(*used));
    let (mut kept, mut removed) = (Vec::new(), 0);
    for (index, (_, path)) in all.into_iter().enumerate() {
        if index < keep.max(1) || path == current {
            kept.push(path);
        } else if fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    let bytes = disk_usage(&kept);
    let pruned = match removed {
        0 => String::new(),
        n => format!("; removed the {n} used least recently"),
    };
    let builds_of = match kept.len() {
        1 => "1 build".to_owned(),
        n => format!("{n} builds"),
    };
    eprintln!(
        "[kernel] {builds_of} of trees and patches in {}, {:.1} GiB (the last {} used are kept{pruned})",
        builds.display(),
        bytes as f64 / f64::from(1u32 << 30),
        keep.max(1),
    );
}

/// The disk the files under `roots` take, each hard-linked file once.
fn disk_usage(roots: &[PathBuf]) -> u64 {
    let mut seen = HashSet::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    let mut bytes = 0;
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        bytes += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_builds_go_first() {
        let root = std::env::temp_dir().join(format!("vfiotest-builds-{}", std::process::id()));
        for (name, age) in [("tree-a", 300), ("tree-b", 200), ("patch-c", 100), ("tree-d", 400)] {
            let dir = root.join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("obj"), vec![1u8; 10_000]).unwrap();
            let when = SystemTime::now() - std::time::Duration::from_secs(age);
            fs::File::create(dir.join(USED)).unwrap().set_modified(when).unwrap();
        }
        // The oldest is kept when it is the build in use.
        prune(&root, 2, &root.join("tree-d"));
        let mut left: Vec<String> =
            fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["patch-c", "tree-b", "tree-d"]);
        fs::hard_link(root.join("tree-b/obj"), root.join("patch-c/link")).unwrap();
        let (b, c) = (disk_usage(&[root.join("tree-b")]), disk_usage(&[root.join("patch-c")]));
        let both = disk_usage(&[root.join("tree-b"), root.join("patch-c")]);
        assert!(b >= 10_000 && c >= 20_000, "{b} {c}");
        assert!(both < b + c && both >= c, "a hard-linked file counts once: {b} + {c} vs {both}");
        fs::remove_dir_all(&root).unwrap();
    }
}
