//! Device interrupts delivered to eventfds.

use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{EventfdFlags, eventfd};
use vfio_sys::Errno;
use vfio_sys::ioctl as sys;

use crate::error::Context;
use crate::{Device, Result};

/// `VFIO_DEVICE_GET_IRQ_INFO` for one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// The IRQ index (INTx 0, MSI 1, MSI-X 2 for vfio-pci).
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// How many vectors the index has.
    pub count: u32,
}

/// Vectors `0..n` of one IRQ index wired to eventfds. Disabled again on drop.
///
/// It holds its own duplicate of the device fd, so it can outlive borrows of the [`Device`].
#[derive(Debug)]
pub struct IrqEventfds {
    device: OwnedFd,
    bdf: crate::Bdf,
    index: u32,
    eventfds: Vec<OwnedFd>,
    enabled: bool,
}

impl Device {
    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let raw = sys::device_get_irq_info(self.fd(), index)
            .op(|| format!("VFIO_DEVICE_GET_IRQ_INFO({}, index {index})", self.bdf()))?;
        Ok(IrqInfo { index, flags: raw.flags, count: raw.count })
    }

    /// Enables vectors `0..count` of IRQ `index`, each signalling its own non-blocking eventfd.
    ///
    /// # Errors
    /// `eventfd` or `VFIO_DEVICE_SET_IRQS` errno.
    pub fn enable_irqs(&self, index: u32, count: u32) -> Result<IrqEventfds> {
        let eventfds = (0..count)
            .map(|_| eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).op(|| "eventfd".into()))
            .collect::<Result<Vec<_>>>()?;
        let borrowed: Vec<_> = eventfds.iter().map(|fd| fd.as_fd()).collect();
        sys::device_set_irq_eventfds(self.fd(), index, 0, &borrowed)
            .op(|| format!("VFIO_DEVICE_SET_IRQS({}, index {index}, {count} eventfds)", self.bdf()))?;
        let device =
            self.fd().try_clone_to_owned().map_err(|e| crate::Error::Invalid(format!("dup of the device fd: {e}")))?;
        Ok(IrqEventfds { device, bdf: self.bdf(), index, eventfds, enabled: true })
    }
}

impl IrqEventfds {
    /// How many vectors are enabled.
    pub fn len(&self) -> usize {
        self.eventfds.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.eventfds.is_empty()
    }

    /// Fires `vector` in software (`ACTION_TRIGGER | DATA_NONE`), as if the device had.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn trigger(&self, vector: u32) -> Result<()> {
        sys::device_trigger_irq(&self.device, self.index, vector, 1)
            .op(|| format!("VFIO_DEVICE_SET_IRQS({}, index {}, trigger vector {vector})", self.bdf, self.index))
    }

    /// Reads and clears `vector`'s eventfd: `Some(count)` if it fired, `None` if not.
    ///
    /// # Errors
    /// A read error other than `EAGAIN`, or a vector out of range.
    pub fn take(&self, vector: u32) -> Result<Option<u64>> {
        let fd = self
            .eventfds
            .get(vector as usize)
            .ok_or_else(|| crate::Error::Invalid(format!("vector {vector} is not enabled")))?;
        let mut value = [0u8; 8];
        match rustix::io::read(fd, &mut value) {
            Ok(8) => Ok(Some(u64::from_ne_bytes(value))),
            Ok(n) => Err(crate::Error::Invalid(format!("eventfd read returned {n} bytes"))),
            Err(Errno::AGAIN) => Ok(None),
            Err(e) => Err(crate::Error::sys(format!("read(eventfd of vector {vector})"), e)),
        }
    }

    /// Waits up to `timeout` for `vector` to fire, then reads and clears it.
    ///
    /// # Errors
    /// As [`IrqEventfds::take`].
    pub fn wait(&self, vector: u32, timeout: std::time::Duration) -> Result<Option<u64>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(count) = self.take(vector)? {
                return Ok(Some(count));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Wires the same eventfds to the index again, after `VFIO_DEVICE_RESET` tore the
    /// kernel's side down; whoever holds an eventfd keeps it.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn reenable(&self) -> Result<()> {
        let borrowed: Vec<_> = self.eventfds.iter().map(|fd| fd.as_fd()).collect();
        sys::device_set_irq_eventfds(&self.device, self.index, 0, &borrowed).op(|| {
            format!("VFIO_DEVICE_SET_IRQS({}, index {}, {} eventfds again)", self.bdf, self.index, borrowed.len())
        })
    }

    /// Disables the index and reports the result.
    ///
    /// # Errors
    /// The ioctl's errno.
    pub fn disable(mut self) -> Result<()> {
        self.enabled = false;
        self.disable_now()
    }

    fn disable_now(&self) -> Result<()> {
        sys::device_set_irq_eventfds(&self.device, self.index, 0, &[])
            .op(|| format!("VFIO_DEVICE_SET_IRQS({}, index {}, disable)", self.bdf, self.index))
    }
}

impl Drop for IrqEventfds {
    fn drop(&mut self) {
        if self.enabled {
            let _ = self.disable_now();
        }
    }
}
