//! VFIO capability chains, parsed from the kernel's bytes with every offset checked.
//!
//! A chain is a linked list inside an info buffer: each `vfio_info_cap_header` gives an id, a
//! version and the offset of the next header (0 ends it). A broken kernel or a fuzzer may hand
//! us offsets past the buffer, into the fixed header, or in a loop; each gives an error.

use vfio_sys::uapi::{FromBytes, read_at, vfio_info_cap_header};

use crate::{Error, Result};

const HEADER_LEN: usize = size_of::<vfio_info_cap_header>();

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
        let header: vfio_info_cap_header = read_at(buf, next).ok_or_else(|| {
            Error::malformed(what, format!("capability offset {next:#x} is past the buffer ({:#x} bytes)", buf.len()))
        })?;
        if caps.iter().any(|c: &CapHeader| c.offset == next) {
            return Err(Error::malformed(what, format!("capability chain has a cycle (offset {next:#x} revisited)")));
        }
        caps.push(CapHeader { id: header.id, version: header.version, offset: next });
        next = header.next as usize;
    }
    Ok(caps)
}

/// The capability struct `C` at `cap` (its header included), if the buffer holds all of it.
///
/// # Errors
/// [`Error::Malformed`] naming `what` for a truncated capability.
pub(crate) fn cap_at<C: FromBytes>(buf: &[u8], cap: &CapHeader, what: &str) -> Result<C> {
    read_at(buf, cap.offset)
        .ok_or_else(|| Error::malformed(what, format!("capability {} at {:#x} is truncated", cap.id, cap.offset)))
}

/// Reads the `count` entries `E` that follow the capability struct `C` at `cap`, as the
/// sparse-mmap areas and the IOVA ranges do.
///
/// # Errors
/// [`Error::Malformed`] naming `what` if the buffer can't hold that many.
pub(crate) fn entries_after<C, E: FromBytes>(buf: &[u8], cap: &CapHeader, count: u32, what: &str) -> Result<Vec<E>> {
    let start = cap.offset + size_of::<C>();
    let needed = (count as usize).checked_mul(size_of::<E>()).and_then(|n| n.checked_add(start));
    if needed.is_none_or(|end| end > buf.len()) {
        return Err(Error::malformed(
            what,
            format!("capability {} claims {count} entries, more than the {:#x}-byte buffer holds", cap.id, buf.len()),
        ));
    }
    Ok((0..count as usize).filter_map(|i| read_at(buf, start + i * size_of::<E>())).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vfio_sys::uapi::{vfio_region_info_cap_sparse_mmap, vfio_region_sparse_mmap_area};

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
        type Sparse = vfio_region_info_cap_sparse_mmap;
        let sparse = |buf: &[u8], what| {
            let count = cap_at::<Sparse>(buf, &cap, what)?.nr_areas;
            entries_after::<Sparse, vfio_region_sparse_mmap_area>(buf, &cap, count, what)
        };
        let err = sparse(&buf, "region 0 info").unwrap_err().to_string();
        assert!(err.contains("claims 1000 entries"), "{err}");
        buf[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(sparse(&buf, "x").is_err(), "no overflow");
        let err = cap_at::<Sparse>(&buf[..44], &cap, "x").unwrap_err().to_string();
        assert!(err.contains("truncated"), "a capability cut short: {err}");
    }
}
