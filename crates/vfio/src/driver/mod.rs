//! Userspace drivers that make a device do DMA, so tests can check the IOMMU for real.
//!
//! The interface is upstream's `vfio_pci_driver_ops`: probe, init, remove, memcpy start/wait
//! and send_msi. QEMU's `edu` is the one device here; a driver for real hardware (ioat, dsa)
//! implements the same trait and joins [`probe`].

mod edu;

use std::time::Duration;

use crate::{Device, Result};

/// A device driver that can copy memory by DMA and raise an MSI.
pub trait DmaDriver: Send {
    /// A short name, e.g. `edu`.
    fn name(&self) -> &'static str;

    /// The largest `size` [`DmaDriver::memcpy_start`] takes.
    fn max_memcpy_size(&self) -> u64;

    /// The largest `count` [`DmaDriver::memcpy_start`] takes.
    fn max_memcpy_count(&self) -> u64;

    /// Brings the device up: maps its registers, enables bus mastering and its MSI.
    ///
    /// # Errors
    /// Whatever fails on the way.
    fn init(&mut self, device: &Device) -> Result<()>;

    /// Undoes [`DmaDriver::init`].
    ///
    /// # Errors
    /// Whatever fails on the way.
    fn remove(&mut self, device: &Device) -> Result<()>;

    /// Starts `count` copies of `[src, src + size)` to `[dst, dst + size)` (IOVAs), without
    /// interrupts, and returns without waiting for them.
    ///
    /// # Errors
    /// Bad arguments, or the device is not initialized.
    fn memcpy_start(&mut self, src: u64, dst: u64, size: u64, count: u64) -> Result<()>;

    /// Waits until every copy started is done.
    ///
    /// # Errors
    /// The device reported an error or did not finish in time.
    fn memcpy_wait(&mut self) -> Result<()>;

    /// Makes the device send its MSI once; `Ok(false)` if this driver can't.
    ///
    /// # Errors
    /// The device is not initialized.
    fn send_msi(&mut self) -> Result<bool>;

    /// Waits up to `timeout` for the MSI and returns how many times it fired (0 if not).
    ///
    /// # Errors
    /// Reading the eventfd failed.
    fn msi_count(&self, timeout: Duration) -> Result<u64>;

    /// Copies `size` bytes in chunks the device can take, one after another.
    ///
    /// # Errors
    /// As [`DmaDriver::memcpy_start`] and [`DmaDriver::memcpy_wait`].
    fn memcpy(&mut self, src: u64, dst: u64, size: u64) -> Result<()> {
        let chunk = self.max_memcpy_size();
        let mut done = 0;
        while done < size {
            let len = chunk.min(size - done);
            self.memcpy_start(src + done, dst + done, len, 1)?;
            self.memcpy_wait()?;
            done += len;
        }
        Ok(())
    }
}

/// Whether a driver here knows the device at `bdf` (by its sysfs vendor and device IDs).
pub fn has_driver(bdf: crate::Bdf) -> bool {
    edu::Edu::matches(bdf)
}

/// The driver for `device`, if there is one.
pub fn probe(device: &Device) -> Option<Box<dyn DmaDriver>> {
    edu::Edu::probe(device).map(|d| Box::new(d) as Box<dyn DmaDriver>)
}
