//! QEMU's `edu` device (PCI 1234:11e8), documented in QEMU's `docs/specs/edu.rst`.
//!
//! It copies between guest memory (an IOVA, translated by the IOMMU) and a 4 KiB buffer inside
//! the device, one transfer at a time, each finishing 100 ms of virtual time after it starts.
//! A memcpy is therefore two transfers per 4 KiB: RAM → buffer, then buffer → RAM.

use std::sync::Arc;
use std::time::Duration;

use crate::pci::{PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, VFIO_PCI_MSI_IRQ_INDEX};

use super::{Copied, DmaDriver, Fault, Registration, injected, poll};
use crate::{BarMapping, Device, DmaBuffer, Error, IrqEventfds, Result};

/// The edu, PCI 1234:11e8.
pub const DRIVER: Registration = Registration { name: "edu", ids: &[(0x1234, 0x11e8)], new: || Box::<Edu>::default() };

/// Register offsets in BAR0.
const REG_ID: usize = 0x00;
const REG_IRQ_RAISE: usize = 0x60;
const REG_IRQ_ACK: usize = 0x64;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;

const DMA_CMD_START: u64 = 1 << 0;
/// Direction: set means buffer → RAM.
const DMA_CMD_TO_RAM: u64 = 1 << 1;

/// The device's DMA buffer, in its own address space.
const DMA_BUFFER: u64 = 0x40000;
/// The whole 4 KiB buffer. QEMU before 8.2.1 rejects a transfer that ends on its last byte
/// (an off-by-one fixed by "edu: fix DMA range upper bound check") and aborts the whole VM;
/// `vfiotest vm` refuses such a QEMU.
const MAX_TRANSFER: u64 = 4096;

/// A transfer takes 100 ms of virtual time; 2000 sleeps of 5 ms (at least 10 s) allow for a
/// slow emulator before calling it stuck.
const TRANSFER_TRIES: u32 = 2000;
const TRANSFER_STEP: Duration = Duration::from_millis(5);

/// The value the driver raises as its interrupt.
const MSI_STATUS: u32 = 1;

/// Copies started by `memcpy_start` and driven to the end by `memcpy_wait`.
#[derive(Debug, Clone, Copy)]
struct Job {
    src: u64,
    dst: u64,
    size: u64,
    remaining: u64,
}

/// The edu driver.
#[derive(Debug, Default)]
pub struct Edu {
    regs: Option<BarMapping>,
    msi: Option<IrqEventfds>,
    job: Option<Job>,
}

impl Edu {
    fn regs(&self) -> Result<&BarMapping> {
        self.regs.as_ref().ok_or_else(|| Error::Invalid("edu: not initialized".into()))
    }

    fn write64(&self, reg: usize, value: u64) -> Result<()> {
        self.regs()?.window().write_u64(reg, value)
    }

    fn read64(&self, reg: usize) -> Result<u64> {
        self.regs()?.window().read_u64(reg)
    }

    fn write32(&self, reg: usize, value: u32) -> Result<()> {
        self.regs()?.window().write_u32(reg, value)
    }

    /// Starts one transfer of `len` bytes between RAM at `iova` and the device buffer.
    fn transfer(&self, iova: u64, len: u64, to_ram: bool) -> Result<()> {
        let (src, dst, cmd) = match to_ram {
            false => (iova, DMA_BUFFER, DMA_CMD_START),
            true => (DMA_BUFFER, iova, DMA_CMD_START | DMA_CMD_TO_RAM),
        };
        self.write64(REG_DMA_SRC, src)?;
        self.write64(REG_DMA_DST, dst)?;
        self.write64(REG_DMA_COUNT, len)?;
        self.write64(REG_DMA_CMD, cmd)
    }

    /// Waits for the transfer in flight to finish (the START bit clears).
    fn wait_transfer(&self) -> Result<()> {
        if injected(Fault::Wedge) {
            return Err(Error::Timeout("edu: injected fault: the DMA never finished".into()));
        }
        let done = poll(TRANSFER_TRIES, TRANSFER_STEP, || {
            Ok(self.read64(REG_DMA_CMD)? & DMA_CMD_START == 0)
        })?;
        match done {
            true => Ok(()),
            false => Err(Error::Timeout(format!("edu: DMA still running after {TRANSFER_TRIES} polls {TRANSFER_STEP:?} apart"))),
        }
    }
}

impl DmaDriver for Edu {
    fn name(&self) -> &'static str {
        "edu"
    }

    fn max_memcpy_size(&self) -> u64 {
        MAX_TRANSFER
    }

    /// Sized by time, not bytes: 40 copies take about 8 s at 200 ms each.
    fn max_memcpy_count(&self) -> u64 {
        40
    }

    /// The edu copies through its own buffer and needs no memory of the driver's.
    fn init(&mut self, device: &Device, _memory: Arc<DmaBuffer>) -> Result<()> {
        let regs = device.map_bar(0)?;
        let id = regs.window().read_u32(REG_ID)?;
        if id & 0xffff != 0x00ed {
            return Err(Error::Invalid(format!("edu: unexpected ID register {id:#010x}")));
        }
        device.update_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0)?;
        self.msi = Some(device.enable_irqs(VFIO_PCI_MSI_IRQ_INDEX, 1)?);
        self.regs = Some(regs);
        Ok(())
    }

    fn remove(&mut self, device: &Device) -> Result<()> {
        if self.job.is_some() {
            let _finished = self.memcpy_wait(device)?;
        }
        if let Some(msi) = self.msi.take() {
            msi.disable()?;
        }
        self.regs = None;
        device.update_command(0, PCI_COMMAND_MASTER)
    }

    fn memcpy_start(&mut self, src: u64, dst: u64, size: u64, count: u64) -> Result<()> {
        if size == 0 || size > MAX_TRANSFER || count == 0 || count > self.max_memcpy_count() {
            return Err(Error::Invalid(format!("edu: memcpy of {size:#x} bytes × {count} is out of range")));
        }
        if self.job.is_some() {
            return Err(Error::Invalid("edu: a memcpy is already in progress".into()));
        }
        // The device does one transfer at a time: start the first here, the rest in wait.
        self.transfer(src, size, false)?;
        self.job = Some(Job { src, dst, size, remaining: count });
        Ok(())
    }

    /// The edu finishes every transfer, faulted or not (its DMA of an unmapped IOVA reads or
    /// writes nothing); one that never finishes is an error, as it has no reset to recover by.
    fn memcpy_wait(&mut self, _device: &Device) -> Result<Copied> {
        let Some(job) = self.job.take() else {
            return Err(Error::Invalid("edu: no memcpy in progress".into()));
        };
        for copy in 0..job.remaining {
            if copy > 0 {
                self.transfer(job.src, job.size, false)?;
            }
            self.wait_transfer()?;
            self.transfer(job.dst, job.size, true)?;
            self.wait_transfer()?;
        }
        Ok(Copied::Done)
    }

    fn send_msi(&mut self) -> Result<bool> {
        self.write32(REG_IRQ_RAISE, MSI_STATUS)?;
        // Acknowledge at once, so the next raise signals again.
        self.write32(REG_IRQ_ACK, MSI_STATUS)?;
        Ok(true)
    }

    fn msi_count(&self, timeout: Duration) -> Result<u64> {
        let msi = self.msi.as_ref().ok_or_else(|| Error::Invalid("edu: not initialized".into()))?;
        Ok(msi.wait(0, timeout)?.unwrap_or(0))
    }
}
