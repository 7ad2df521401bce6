//! Checks several programs make of the kernel.

use ksft::{Outcome, Verdict, ensure_eq};
use vfio::{Bdf, pgtable};

/// The IOMMU's page table for `bdf` must map `iova` with one `leaf`-byte page at physical
/// address `phys`, as the Intel IOMMU debugfs shows it. Without that debugfs it is a SKIP with
/// the reason (a FAIL where the page tables are required): a test whose subject is the IOPTE
/// checked nothing without it.
pub fn check_iopte(bdf: Bdf, iova: u64, leaf: u64, phys: u64) -> Outcome {
    let reader = pgtable::PageTableReader::for_device(bdf)?;
    let found = reader.leaf(bdf, iova)?;
    let found =
        found.ok_or_else(|| Verdict::Fail(format!("IOVA {iova:#x} is not in {}", reader.source(bdf).display())))?;
    ensure_eq!(found.size, leaf, "IOMMU page size at IOVA {iova:#x} ({})", found.walk);
    ensure_eq!(found.phys, phys, "physical address mapped at IOVA {iova:#x} ({})", found.walk);
    println!("# IOVA {iova:#x}: a {leaf:#x}-byte IOPTE to {phys:#x}");
    Ok(())
}
