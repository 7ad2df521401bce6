//! AMD-Vi's page tables, as Linux 7.3 lets them be read. Its debugfs shows one device's
//! table entry at a time (write the device to `devid`, read `devtbl`); the entry's root
//! pointer and mode lead to the device's I/O page table in the AMD v1 format, whose pages
//! are read from physical memory through `/proc/kcore` (each RAM segment there carries its
//! physical address). The debugfs dumps no page table itself.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Leaf;
use crate::{Bdf, Error, Result};

/// Where the AMD IOMMU driver's debugfs lives.
pub const DEBUGFS: &str = "/sys/kernel/debug/iommu/amd";

/// Physical memory, as an ELF core of the kernel's address space.
pub const KCORE: &str = "/proc/kcore";

/// An entry's output address: bits 12 to 51.
const OA_MASK: u64 = ((1 << 52) - 1) & !0xfff;

/// The "next level" value that marks a leaf whose size is encoded in its address.
const NL_SIZE: u64 = 7;

/// Where a device's page table starts: from its device-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// Levels of the table (the entry's mode, 1 to 6).
    pub levels: u32,
    /// Physical address of the top table.
    pub table: u64,
}

/// The root in a `devtbl` dump (a header, then `SEG:BB:DD.F QWORD[3] QWORD[2] QWORD[1]
/// QWORD[0] iommuN`); `None` when the entry translates nothing (not valid, no translation, or
/// mode 0).
pub fn dte_root(devtbl: &str) -> Option<Root> {
    let line = devtbl.lines().find(|l| l.split_whitespace().next().is_some_and(|f| f.contains(':')))?;
    let qword0 = u64::from_str_radix(line.split_whitespace().nth(4)?, 16).ok()?;
    let (valid, translates) = (qword0 & 1 != 0, qword0 & 2 != 0);
    let levels = ((qword0 >> 9) & 7) as u32;
    (valid && translates && levels > 0).then_some(Root { levels, table: qword0 & OA_MASK })
}

/// One RAM segment of `/proc/kcore`: physical addresses `paddr..paddr + size` at `offset` in
/// the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The first physical address.
    pub paddr: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Where it starts in the file.
    pub offset: u64,
}

/// The segments with a physical address in an ELF64 core whose header and program headers
/// are `head`.
///
/// # Errors
/// Not an ELF64 little-endian core, or program headers beyond `head`, in one line.
pub fn segments(head: &[u8]) -> std::result::Result<Vec<Segment>, String> {
    let u16_at = |at: usize| head.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |at: usize| head.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    if head.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not an ELF64 little-endian file".to_owned());
    }
    let short = || "program headers past what was read".to_owned();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(short)?).map_err(|_| short())?;
    let (entsize, count) = (usize::from(u16_at(0x36).ok_or_else(short)?), usize::from(u16_at(0x38).ok_or_else(short)?));
    let mut found = Vec::new();
    for i in 0..count {
        let at = phoff + i * entsize;
        let kind = head.get(at..at + 4).ok_or_else(short)?;
        let (offset, paddr, size) = (u64_at(at + 8), u64_at(at + 24), u64_at(at + 40));
        let (Some(offset), Some(paddr), Some(size)) = (offset, paddr, size) else { return Err(short()) };
        // PT_LOAD; a segment with no physical address has p_paddr -1.
        if kind == [1, 0, 0, 0] && paddr != u64::MAX {
            found.push(Segment { paddr, size, offset });
        }
    }
    Ok(found)
}

/// Physical memory, read through `/proc/kcore`.
pub struct PhysicalMemory {
    file: File,
    segments: Vec<Segment>,
}

impl PhysicalMemory {
    /// Opens [`KCORE`] and reads its segments.
    ///
    /// # Errors
    /// It can't be opened or isn't a core.
    pub fn open() -> Result<Self> {
        let path = Path::new(KCORE);
        let file = File::open(path).map_err(|e| Error::file(path, e))?;
        let mut head = vec![0; 64 << 10];
        let read = file.read_at(&mut head, 0).map_err(|e| Error::file(path, e))?;
        head.truncate(read);
        let segments = segments(&head).map_err(|why| Error::file(path, io::Error::other(why)))?;
        Ok(Self { file, segments })
    }

    /// The 64-bit little-endian word at physical address `paddr`.
    ///
    /// # Errors
    /// No RAM segment holds it, or the read fails.
    pub fn read_u64(&self, paddr: u64) -> Result<u64> {
        let path = Path::new(KCORE);
        let segment = self
            .segments
            .iter()
            .find(|s| s.paddr <= paddr && paddr + 8 <= s.paddr + s.size)
            .ok_or_else(|| Error::file(path, io::Error::other(format!("no RAM segment holds {paddr:#x}"))))?;
        let mut word = [0; 8];
        self.file
            .read_exact_at(&mut word, segment.offset + (paddr - segment.paddr))
            .map_err(|e| Error::file(path, e))?;
        Ok(u64::from_le_bytes(word))
    }
}

/// The leaf that maps `iova` in the AMD v1 table at `root`, each entry read by `read` (a
/// physical address to the word there); `Ok(None)` if nothing maps it. The leaf's address is
/// its page's start.
///
/// # Errors
/// What `read` returns.
pub fn walk(root: Root, iova: u64, mut read: impl FnMut(u64) -> Result<u64>) -> Result<Option<Leaf>> {
    let mut walked = format!("DTE root {:#x} levels {}", root.table, root.levels);
    let (mut level, mut table) = (root.levels, root.table);
    loop {
        let shift = 12 + 9 * (level - 1);
        let entry = read(table + ((iova >> shift) & 0x1ff) * 8)?;
        walked += &format!(" L{level} {entry:#018x}");
        if entry & 1 == 0 {
            return Ok(None);
        }
        let (next, oa) = ((entry >> 9) & 7, entry & OA_MASK);
        if level == 1 || next == 0 || next == NL_SIZE {
            // A leaf of its level's size, or of the size its address encodes: a run of ones
            // in the address's low bits, above bit 12.
            let size = match next {
                NL_SIZE => 1u64 << ((oa >> 12).trailing_ones() + 13),
                _ => 1u64 << shift,
            };
            return Ok(Some(Leaf { size, phys: oa & !(size - 1), walk: walked }));
        }
        // Each table entry names the level of the table it points to.
        if next >= u64::from(level) {
            return Err(Error::file(
                Path::new(KCORE),
                io::Error::other(format!("a level-{level} entry points up to level {next}: {walked}")),
            ));
        }
        (level, table) = (next as u32, oa);
    }
}

/// The leaf that maps `iova` for `bdf`, from the debugfs and `/proc/kcore`.
///
/// # Errors
/// The debugfs or `/proc/kcore` can't be read.
pub fn leaf(bdf: Bdf, iova: u64) -> Result<Option<Leaf>> {
    let devid = Path::new(DEBUGFS).join("devid");
    std::fs::write(&devid, bdf.to_string()).map_err(|e| Error::file(&devid, e))?;
    let devtbl = Path::new(DEBUGFS).join("devtbl");
    let dump = std::fs::read_to_string(&devtbl).map_err(|e| Error::file(&devtbl, e))?;
    let Some(root) = dte_root(&dump) else { return Ok(None) };
    let memory = PhysicalMemory::open()?;
    walk(root, iova, |paddr| memory.read_u64(paddr))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const DEVTBL: &str = "DeviceId             QWORD[3]         QWORD[2]         QWORD[1]         QWORD[0] iommu\n\
        0000:00:05.0 0000000000000000 0000000000000000 0000000000000005 6000000104c4e603 iommu0\n";

    #[test]
    fn the_root_comes_from_qword0() {
        assert_eq!(dte_root(DEVTBL), Some(Root { levels: 3, table: 0x1_04c4_e000 }));
        let no_translation = DEVTBL.replace("6000000104c4e603", "0000000000000001");
        assert_eq!(dte_root(&no_translation), None);
        assert_eq!(dte_root("Enter a valid device ID to 'devid' file\n"), None);
    }

    /// A three-level table: a 4 KiB page at 0, a 2 MiB page at 2 MiB, a 1 GiB page at 1 GiB,
    /// a 64 KiB run (size-encoded) at 4 MiB.
    fn memory() -> BTreeMap<u64, u64> {
        let (l3, l2, l1) = (0x10_0000, 0x20_0000, 0x30_0000);
        BTreeMap::from([
            (l3, l2 | (2 << 9) | 1),
            (l3 + 8, 0x4000_0000 | 1),
            (l2, l1 | (1 << 9) | 1),
            (l2 + 8, 0x1_0060_0000 | 1),
            (l2 + 2 * 8, 0x40_0000 | (1 << 9) | 1),
            (l1, 0x1_0000_7000 | 1),
            // 64 KiB: the address's low bits above 12 hold ones up to bit 12 + (16 - 13).
            (0x40_0000, 0x2_0001_0000 | 0x7000 | (7 << 9) | 1),
        ])
    }

    fn at(iova: u64) -> Option<Leaf> {
        let memory = memory();
        let root = Root { levels: 3, table: 0x10_0000 };
        walk(root, iova, |paddr| Ok(memory.get(&paddr).copied().unwrap_or(0))).unwrap()
    }

    #[test]
    fn walks_to_each_leaf_size() {
        let small = at(0).unwrap();
        assert_eq!((small.size, small.phys), (0x1000, 0x1_0000_7000));
        let two_meg = at(0x20_0000).unwrap();
        assert_eq!((two_meg.size, two_meg.phys), (2 << 20, 0x1_0060_0000));
        let gig = at(1 << 30).unwrap();
        assert_eq!((gig.size, gig.phys), (1 << 30, 0x4000_0000));
        let run = at(0x40_0000).unwrap();
        assert_eq!((run.size, run.phys), (64 << 10, 0x2_0001_0000), "{}", run.walk);
        assert!(gig.walk.contains("L3"), "{}", gig.walk);
    }

    #[test]
    fn an_absent_entry_maps_nothing() {
        assert_eq!(at(0x1000), None);
        assert_eq!(at(2 << 30), None);
    }

    #[test]
    fn kcore_segments_keep_only_loads_with_a_physical_address() {
        let mut head = vec![0u8; 0x40 + 3 * 56];
        head[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        head[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        head[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        head[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let mut phdr = |i: usize, kind: u32, offset: u64, paddr: u64, size: u64| {
            let at = 0x40 + i * 56;
            head[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            head[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            head[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
            head[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        };
        phdr(0, 4, 0x100, 0, 0x10);
        phdr(1, 1, 0x2000, u64::MAX, 0x1000);
        phdr(2, 1, 0x8000_0000, 0x10_0000, 0x4000_0000);
        assert_eq!(segments(&head).unwrap(), [Segment { paddr: 0x10_0000, size: 0x4000_0000, offset: 0x8000_0000 }]);
        assert_eq!(segments(&head[..0x50]).unwrap_err(), "program headers past what was read");
        assert_eq!(segments(b"garbage").unwrap_err(), "not an ELF64 little-endian file");
    }
}
