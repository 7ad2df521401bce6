//! The guest's initramfs: busybox, this very binary, and an init that runs the suite.

use std::io::Cursor;
use std::path::Path;

use cpio::NewcBuilder;

use crate::Fatal;

const INIT: &str = include_str!("init.sh");
const SETUP_PROOF: &str = include_str!("setup_proof.sh");

const DIR: u32 = 0o040_755;
const EXEC: u32 = 0o100_755;
const FILE: u32 = 0o100_644;

/// Packs a newc cpio archive with `/init`, `/bin/busybox`, `/bin/vfiotest` (the static binary's
/// bytes, which the caller has already read to check them) and the run's settings in
/// `/etc/vfiotest.env`.
pub fn build(busybox: &Path, vfiotest: Vec<u8>, bdfs: &[&str], run_args: &[String], out: &Path) -> Result<(), Fatal> {
    for arg in run_args {
        if arg.chars().any(|c| c.is_whitespace() || "'\"$`\\;&|<>".contains(c)) {
            return Err(Fatal::fail(format!(
                "run argument {arg:?} can't be passed to the guest: no spaces or shell characters"
            )));
        }
    }
    let env = format!("VFIOTEST_BDFS=\"{}\"\nVFIOTEST_ARGS=\"{}\"\n", bdfs.join(" "), run_args.join(" "));
    let entries: Vec<(&str, u32, Vec<u8>)> = vec![
        ("bin", DIR, Vec::new()),
        ("etc", DIR, Vec::new()),
        ("dev", DIR, Vec::new()),
        ("proc", DIR, Vec::new()),
        ("sys", DIR, Vec::new()),
        ("tmp", DIR, Vec::new()),
        ("init", EXEC, INIT.as_bytes().to_vec()),
        ("bin/setup-proof", EXEC, SETUP_PROOF.as_bytes().to_vec()),
        ("etc/vfiotest.env", FILE, env.into_bytes()),
        ("bin/busybox", EXEC, std::fs::read(busybox).map_err(|e| Fatal::fail(format!("{}: {e}", busybox.display())))?),
        ("bin/vfiotest", EXEC, vfiotest),
    ];
    let inputs = entries
        .into_iter()
        .map(|(name, mode, data)| (NewcBuilder::new(name).mode(mode).uid(0).gid(0).nlink(1), Cursor::new(data)));
    let file = std::fs::File::create(out).map_err(|e| Fatal::fail(format!("{}: {e}", out.display())))?;
    cpio::write_cpio(inputs, std::io::BufWriter::new(file))
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(|e| Fatal::fail(format!("writing {}: {e}", out.display())))
}

/// Whether an ELF executable is statically linked (it has no `PT_INTERP` program header), so it
/// runs in an initramfs without a dynamic loader.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    let u64_at =
        |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    // A 64-bit little-endian ELF: magic, ELFCLASS64, ELFDATA2LSB.
    if bytes.get(0..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff + i * phentsize).is_some_and(|ty| ty != PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_static() {
        // .cargo/config.toml builds everything with crt-static, so the guest can run it.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_static_elf(&me));
    }

    #[test]
    fn a_dynamic_binary_is_not() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh), "/bin/sh on Debian is dynamically linked");
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn archive_holds_init_and_settings() {
        let dir = std::env::temp_dir().join(format!("vfiotest-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (bb, out) = (dir.join("busybox"), dir.join("initrd"));
        std::fs::write(&bb, b"bb").unwrap();
        build(&bb, b"me".to_vec(), &["0000:00:03.0"], &["-t".into(), "map_full_bar".into()], &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("070701"), "newc magic");
        assert!(text.contains("VFIOTEST_BDFS=\"0000:00:03.0\""));
        assert!(text.contains("VFIOTEST_ARGS=\"-t map_full_bar\""));
        assert!(text.contains("TRAILER!!!"));
        assert!(build(&bb, b"me".to_vec(), &[], &["a b".into()], &out).is_err(), "spaces can't cross");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
