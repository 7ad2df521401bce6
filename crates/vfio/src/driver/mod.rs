//! Userspace drivers that make a device do DMA, so tests can check the IOMMU for real.
//!
//! The interface is upstream's `vfio_pci_driver_ops`: probe, init, remove, memcpy start/wait
//! and send_msi. A driver is one file in this folder that exports a [`Registration`], plus its
//! name in the `drivers!` line below. Upstream also drives Intel DSA and IOAT and NVIDIA's
//! Falcon engine; QEMU emulates none of them, so they are not ported (see the README).

use std::sync::Arc;
use std::time::Duration;

use crate::sysfs::Sysfs;
use crate::{Bdf, Device, DmaBuffer, Result};

/// How much memory a driver gets for its own structures (upstream's `driver->region`).
pub const DRIVER_MEMORY: usize = 2 << 20;

/// A device driver that can copy memory by DMA and raise an MSI.
pub trait DmaDriver: Send {
    /// A short name, e.g. `igb`.
    fn name(&self) -> &'static str;

    /// The largest `size` [`DmaDriver::memcpy_start`] takes.
    fn max_memcpy_size(&self) -> u64;

    /// The largest `count` [`DmaDriver::memcpy_start`] takes.
    fn max_memcpy_count(&self) -> u64;

    /// Brings the device up: maps its registers, enables bus mastering and its interrupt.
    /// `memory` ([`DRIVER_MEMORY`] bytes, DMA-mapped) holds whatever the device reads or
    /// writes besides the copies themselves, such as descriptor rings.
    ///
    /// # Errors
    /// Whatever fails on the way.
    fn init(&mut self, device: &Device, memory: Arc<DmaBuffer>) -> Result<()>;

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

    /// Waits until every copy started is done. A device that wedges (a copy from or to an
    /// unmapped IOVA can do that) is reset and brought up again, so the next copy can work:
    /// that is [`Copied::TimedOutRecovered`], never an error.
    ///
    /// # Errors
    /// The device reported an error, or a step of its recovery failed (the device is then in
    /// no known state).
    fn memcpy_wait(&mut self, device: &Device) -> Result<Copied>;

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

    /// Copies `size` bytes in chunks the device can take, one after another. A chunk that
    /// times out ends the copy there (the device was recovered; the rest would fault alike).
    ///
    /// # Errors
    /// As [`DmaDriver::memcpy_start`] and [`DmaDriver::memcpy_wait`].
    fn memcpy(&mut self, device: &Device, src: u64, dst: u64, size: u64) -> Result<Copied> {
        let chunk = self.max_memcpy_size();
        let mut done = 0;
        while done < size {
            let len = chunk.min(size - done);
            self.memcpy_start(src + done, dst + done, len, 1)?;
            if let Copied::TimedOutRecovered = self.memcpy_wait(device)? {
                return Ok(Copied::TimedOutRecovered);
            }
            done += len;
        }
        Ok(Copied::Done)
    }
}

/// A fault the drivers can be told to fake (`vfiotest run --inject-fault`), so the suite can
/// show that its tests fail when a driver does: a test of the tests, never set otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every copy wedges the engine, and a step of its recovery fails (the igb's reprogramming
    /// after its reset; the edu, which has no reset, never finishes).
    Wedge,
}

impl std::str::FromStr for Fault {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "driver-wedge" => Ok(Self::Wedge),
            _ => Err(crate::Error::Invalid(format!("unknown fault {s:?}: expected driver-wedge"))),
        }
    }
}

static INJECTED: std::sync::OnceLock<Fault> = std::sync::OnceLock::new();

/// Makes every driver in this process fake `fault` from now on (once per process).
pub fn inject(fault: Fault) {
    let _first_wins = INJECTED.set(fault);
}

/// Whether `fault` is being faked.
fn injected(fault: Fault) -> bool {
    INJECTED.get() == Some(&fault)
}

/// How a copy ended, when nothing went wrong with the driver or the device's recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a copy that timed out moved no bytes"]
pub enum Copied {
    /// The device reported every copy done.
    Done,
    /// The device did not finish in time (as after a faulted DMA read), and the driver reset
    /// it and brought it up again: it is ready for the next copy, and this one did not happen.
    TimedOutRecovered,
}

/// Asks `done` up to `tries` times, sleeping `step` between asks, until it says yes
/// (`Ok(true)`; else `Ok(false)`): how a driver waits for a device register or a descriptor.
/// The budget is a count of sleeps, as upstream's drivers count `usleep()` retries, not a
/// deadline: each sleep lasts at least `step`, and longer on a loaded host, so a slow machine
/// gets more time, never a spurious timeout.
fn poll(tries: u32, step: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    for attempt in 0..tries {
        if attempt > 0 {
            std::thread::sleep(step);
        }
        if done()? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a driver makes itself known: the PCI IDs it drives and how to make one.
pub struct Registration {
    /// The driver's name.
    pub name: &'static str,
    /// `(vendor, device)` IDs it drives.
    pub ids: &'static [(u16, u16)],
    /// A fresh, uninitialized driver.
    pub new: fn() -> Box<dyn DmaDriver>,
}

/// Declares the driver modules and the registry in one place: adding a driver is its file and
/// its name here.
macro_rules! drivers {
    ($($module:ident),* $(,)?) => {
        $(mod $module;)*
        /// Every driver, in probe order.
        pub const REGISTRY: &[&Registration] = &[$(&$module::DRIVER),*];
    };
}

// The edu first: the P2P program's variants follow this order, as they did when it listed them.
drivers!(edu, igb);

/// The registered driver for the device at `bdf` (by its sysfs vendor and device IDs).
pub fn lookup(bdf: Bdf) -> Option<&'static Registration> {
    let sysfs = Sysfs::system();
    let id = |attr| sysfs.read_hex(bdf, attr).ok().and_then(|v| u16::try_from(v).ok());
    let (vendor, device) = (id("vendor")?, id("device")?);
    REGISTRY.iter().copied().find(|r| r.ids.contains(&(vendor, device)))
}

/// Whether a driver here knows the device at `bdf`.
pub fn has_driver(bdf: Bdf) -> bool {
    lookup(bdf).is_some()
}

/// A new driver for `device`, if there is one.
pub fn probe(device: &Device) -> Option<Box<dyn DmaDriver>> {
    lookup(device.bdf()).map(|r| (r.new)())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_asks_as_often_as_told_and_stops_at_yes() {
        let mut asked = 0;
        assert!(
            !poll(5, Duration::ZERO, || Ok({
                asked += 1;
                false
            }))
            .unwrap()
        );
        assert_eq!(asked, 5);
        asked = 0;
        assert!(
            poll(5, Duration::ZERO, || Ok({
                asked += 1;
                asked == 2
            }))
            .unwrap()
        );
        assert_eq!(asked, 2);
        let failed = poll(5, Duration::ZERO, || Err(crate::Error::Invalid("read".into())));
        assert!(failed.is_err(), "an error ends the wait");
    }

    #[test]
    fn registry_ids_are_unique() {
        let mut ids: Vec<_> = REGISTRY.iter().flat_map(|r| r.ids.iter()).collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all, "two drivers claim one device");
        for r in REGISTRY {
            assert_eq!((r.new)().name(), r.name);
        }
    }
}
