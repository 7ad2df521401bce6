//! The guest's initramfs: this very binary as `/init` (also `/bin/vfiotest`), and the payload
//! it runs, as JSON. Nothing else: no shell, no busybox.

use std::io::Cursor;
use std::path::Path;

use cpio::NewcBuilder;

use crate::Fatal;
use crate::guest::protocol::{PAYLOAD_PATH, Payload};

const DIR: u32 = 0o040_755;
const EXEC: u32 = 0o100_755;
const FILE: u32 = 0o100_644;
const SYMLINK: u32 = 0o120_777;
const CHAR_DEVICE: u32 = 0o020_600;

/// Packs a newc cpio archive with `/init` (the static binary's bytes, which the caller has
/// already read to check them), `/bin/vfiotest` pointing at it, the payload, and
/// `/dev/console`, which the kernel opens for init before anything is mounted.
pub fn build(vfiotest: Vec<u8>, payload: &Payload, out: &Path) -> Result<(), Fatal> {
    let json = serde_json::to_vec_pretty(payload).map_err(|e| Fatal::fail(format!("the payload: {e}")))?;
    let payload_path = PAYLOAD_PATH.trim_start_matches('/');
    let mut entries: Vec<(NewcBuilder, Vec<u8>)> = ["bin", "etc", "etc/vfiotest", "dev", "proc", "sys", "tmp", "run"]
        .into_iter()
        .map(|dir| (NewcBuilder::new(dir).mode(DIR), Vec::new()))
        .collect();
    entries.extend([
        (NewcBuilder::new("dev/console").mode(CHAR_DEVICE).rdev_major(5).rdev_minor(1), Vec::new()),
        (NewcBuilder::new("init").mode(EXEC), vfiotest),
        (NewcBuilder::new("bin/vfiotest").mode(SYMLINK), b"/init".to_vec()),
        (NewcBuilder::new(payload_path).mode(FILE), json),
    ]);
    let inputs = entries.into_iter().map(|(entry, data)| (entry.uid(0).gid(0).nlink(1), Cursor::new(data)));
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
    fn archive_holds_init_and_payload() {
        use crate::guest::protocol::GuestCommand;
        let dir = std::env::temp_dir().join(format!("vfiotest-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("initrd");
        let args = vec!["-t".to_owned(), "a b".to_owned()];
        let payload = Payload { bdfs: vec!["0000:00:03.0".into()], command: GuestCommand::Run { args } };
        build(b"me".to_vec(), &payload, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("070701"), "newc magic");
        for name in ["init", "bin/vfiotest", "dev/console", "etc/vfiotest/payload.json", "TRAILER!!!"] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains("\"a b\""), "arguments travel whole, spaces and all");
        assert!(!text.contains("busybox"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
