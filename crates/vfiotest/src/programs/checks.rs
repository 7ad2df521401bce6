//! Checks several programs make of the kernel.

use ksft::{Verdict, ensure_eq};
use vfio::{Bdf, page_size, pgtable};

/// `span` bytes mapped from `iova` to physical address `phys` must start with the largest leaf
/// the IOMMU's page-table format has that fits them (the largest of its sizes that `span`,
/// `iova` and `phys` are multiples of: Intel's 4 KiB, 2 MiB or 1 GiB; for AMD v1 any power of
/// two), pointing at `phys`; a `span` of one page asks for a 4 KiB leaf. Returns the leaf's
/// size. Without a reader for this IOMMU it is a SKIP with the reason (a FAIL where the page
/// tables are required): a test whose subject is the IOPTE checked nothing without it.
pub fn check_iopte(bdf: Bdf, iova: u64, span: u64, phys: u64) -> Result<u64, Verdict> {
    let reader = pgtable::PageTableReader::for_device(bdf)?;
    let leaf = pgtable::largest_leaf(reader.leaf_sizes(), span, iova, phys).unwrap_or(page_size() as u64);
    let found = reader.leaf(bdf, iova)?;
    let found =
        found.ok_or_else(|| Verdict::Fail(format!("IOVA {iova:#x} is not in {}", reader.source(bdf).display())))?;
    ensure_eq!(found.size, leaf, "IOMMU page size at IOVA {iova:#x} ({})", found.walk);
    ensure_eq!(found.phys, phys, "physical address mapped at IOVA {iova:#x} ({})", found.walk);
    println!("# IOVA {iova:#x}: a {leaf:#x}-byte IOPTE to {phys:#x}");
    Ok(leaf)
}
