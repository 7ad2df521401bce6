//! Anonymous memory DMA-mapped into an IOMMU context, as one object.

use std::sync::Arc;

use crate::{DmaMapping, Iommu, Mmap, Result};

/// Anonymous shared memory of `len` bytes, mapped for device access at one IOVA: a driver's
/// descriptor rings, a test's copy buffers. Dropping it unmaps the IOVA first, then the memory.
#[derive(Debug)]
pub struct DmaBuffer {
    // Field order is drop order: the device loses access before the memory goes away.
    mapping: DmaMapping,
    window: Mmap,
}

impl DmaBuffer {
    /// Maps `len` bytes of fresh zeroed memory at `iova`.
    ///
    /// # Errors
    /// `mmap`'s errno, or the kernel's refusal of the DMA map.
    pub fn new(iommu: &Arc<Iommu>, iova: u64, len: usize) -> Result<Self> {
        let window = Mmap::anonymous(len)?;
        let mapping = iommu.map(window.whole(), iova)?;
        Ok(Self { mapping, window })
    }

    /// The IOVA of byte 0.
    pub fn iova(&self) -> u64 {
        self.mapping.iova()
    }

    /// The memory, for volatile access at checked offsets.
    pub fn window(&self) -> &Mmap {
        &self.window
    }

    /// Unmaps the IOVA and the memory now, reporting a failed unmap or `munmap`.
    ///
    /// # Errors
    /// The kernel's refusal of the unmap, or `munmap`'s errno.
    pub fn close(self) -> Result<()> {
        self.mapping.unmap()?;
        self.window.unmap()
    }
}
