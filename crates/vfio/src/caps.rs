//! VFIO capability chains, parsed from the kernel's bytes with every offset checked.
//!
//! A chain is a linked list inside an info buffer: each `vfio_info_cap_header` gives an id, a
//! version and the offset of the next header (0 ends it). A broken kernel or a fuzzer may hand
//! us offsets past the buffer, into the fixed header, or in a loop; each gives an error.

use crate::{Error, Result};

const HEADER_LEN: usize = 8;

/// One capability: its id, version, and where its header starts in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapHeader {
    /// `VFIO_*_CAP_*` id.
    pub id: u16,
    /// Version of that capability's layout.
    pub version: u16,
    /// Byte offset of the header within the info buffer.
    pub offset: usize,
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

/// Walks the chain starting at `first` in `buf`, whose fixed part is `fixed_len` bytes.
///
/// # Errors
/// [`Error::Malformed`] naming `what` if a header lies in the fixed part or past the buffer,
/// or if the chain has more links than the buffer could hold (a cycle).
pub fn walk_chain(buf: &[u8], first: u32, fixed_len: usize, what: &str) -> Result<Vec<CapHeader>> {
    let mut caps = Vec::new();
    let max_links = buf.len().saturating_sub(fixed_len) / HEADER_LEN;
    let mut next = first as usize;
    while next != 0 {
        if caps.len() >= max_links {
            return Err(Error::malformed(what, format!("capability chain has a cycle (offset {next:#x} revisited)")));
        }
        if next < fixed_len {
            return Err(Error::malformed(
                what,
                format!("capability offset {next:#x} points into the fixed header ({fixed_len:#x} bytes)"),
            ));
        }
        let header = buf.get(next..).filter(|rest| rest.len() >= HEADER_LEN).ok_or_else(|| {
            Error::malformed(what, format!("capability offset {next:#x} is past the buffer ({:#x} bytes)", buf.len()))
        })?;
        let cap = CapHeader {
            id: read_u16(header, 0).unwrap_or_default(),
            version: read_u16(header, 2).unwrap_or_default(),
            offset: next,
        };
        if caps.iter().any(|c: &CapHeader| c.offset == next) {
            return Err(Error::malformed(what, format!("capability chain has a cycle (offset {next:#x} revisited)")));
        }
        caps.push(cap);
        next = read_u32(header, 4).unwrap_or_default() as usize;
    }
    Ok(caps)
}

/// Reads `count` 16-byte `(u64, u64)` records that follow a 16-byte capability header at
/// `cap.offset`, as in the sparse-mmap and IOVA-range capabilities.
pub(crate) fn pairs_after(buf: &[u8], cap: &CapHeader, what: &str) -> Result<Vec<(u64, u64)>> {
    let count = read_u32(buf, cap.offset + 8)
        .ok_or_else(|| Error::malformed(what, format!("capability {} at {:#x} is truncated", cap.id, cap.offset)))?;
    let start = cap.offset + 16;
    let needed = (count as usize).checked_mul(16).and_then(|n| n.checked_add(start));
    if needed.is_none_or(|end| end > buf.len()) {
        return Err(Error::malformed(
            what,
            format!("capability {} claims {count} entries, more than the {:#x}-byte buffer holds", cap.id, buf.len()),
        ));
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = start + i * 16;
            (read_u64(buf, at).unwrap_or_default(), read_u64(buf, at + 8).unwrap_or_default())
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an info buffer: a fixed part of `fixed` bytes, then caps at the given offsets.
    pub(crate) fn buffer(len: usize) -> Vec<u8> {
        vec![0; len]
    }

    pub(crate) fn put_header(buf: &mut [u8], at: usize, id: u16, version: u16, next: u32) {
        buf[at..at + 2].copy_from_slice(&id.to_ne_bytes());
        buf[at + 2..at + 4].copy_from_slice(&version.to_ne_bytes());
        buf[at + 4..at + 8].copy_from_slice(&next.to_ne_bytes());
    }

    #[test]
    fn walks_a_well_formed_chain() {
        let mut buf = buffer(64);
        put_header(&mut buf, 32, 3, 1, 40);
        put_header(&mut buf, 40, 1, 1, 0);
        let caps = walk_chain(&buf, 32, 32, "region 0 info").unwrap();
        assert_eq!(caps.iter().map(|c| (c.id, c.offset)).collect::<Vec<_>>(), [(3, 32), (1, 40)]);
    }

    #[test]
    fn empty_chain() {
        assert!(walk_chain(&buffer(32), 0, 32, "x").unwrap().is_empty());
    }

    #[test]
    fn rejects_a_cycle() {
        let mut buf = buffer(64);
        put_header(&mut buf, 32, 1, 1, 40);
        put_header(&mut buf, 40, 2, 1, 32);
        let err = walk_chain(&buf, 32, 32, "region 2 info").unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn rejects_a_self_loop() {
        let mut buf = buffer(1024);
        put_header(&mut buf, 32, 1, 1, 32);
        assert!(walk_chain(&buf, 32, 32, "x").unwrap_err().to_string().contains("cycle"));
    }

    #[test]
    fn rejects_offsets_past_the_buffer() {
        let mut buf = buffer(48);
        put_header(&mut buf, 32, 1, 1, 44); // a header at 44 would end at 52
        let err = walk_chain(&buf, 32, 32, "region 0 info").unwrap_err().to_string();
        assert!(err.contains("past the buffer"), "{err}");
        assert!(walk_chain(&buf, u32::MAX, 32, "x").is_err());
    }

    #[test]
    fn rejects_offsets_into_the_fixed_part() {
        let buf = buffer(64);
        let err = walk_chain(&buf, 8, 32, "x").unwrap_err().to_string();
        assert!(err.contains("fixed header"), "{err}");
    }

    #[test]
    fn rejects_entry_counts_beyond_the_buffer() {
        let mut buf = buffer(48);
        put_header(&mut buf, 32, 1, 1, 0);
        buf[40..44].copy_from_slice(&1000u32.to_ne_bytes());
        let cap = walk_chain(&buf, 32, 32, "x").unwrap()[0];
        let err = pairs_after(&buf, &cap, "region 0 info").unwrap_err().to_string();
        assert!(err.contains("claims 1000 entries"), "{err}");
        buf[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(pairs_after(&buf, &cap, "x").is_err(), "no overflow");
    }
}
