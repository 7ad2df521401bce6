//! Intel 82576 (igb) as a memcpy engine: each copy is one Ethernet frame, transmitted from the
//! source IOVA and looped back into the destination IOVA. Interrupts are MSI-X vector 0.
//!
//! Written from the 82576 datasheet's register facts; the behaviour follows upstream's selftest
//! driver (`tools/testing/selftests/vfio/lib/drivers/igb/`), including its accommodations for
//! QEMU's emulation, which are called out where they are made.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use super::{Copied, DRIVER_MEMORY, DmaDriver, Fault, Registration, injected, poll};
use crate::pci::{PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, VFIO_PCI_MSIX_IRQ_INDEX};
use crate::{BarMapping, Device, DmaBuffer, Error, IrqEventfds, Result};

/// The 82576 PF, PCI 8086:10c9. (Its VFs, 10ca, have no PHY or rings of this shape.)
pub const DRIVER: Registration = Registration { name: "igb", ids: &[(0x8086, 0x10c9)], new: || Box::<Igb>::default() };

/// Register offsets in BAR0 (82576 datasheet, chapter 8).
mod reg {
    pub const CTRL: usize = 0x0000;
    pub const EECD: usize = 0x0010;
    pub const CTRL_EXT: usize = 0x0018;
    pub const MDIC: usize = 0x0020;
    pub const IMC: usize = 0x00d8;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const GPIE: usize = 0x1514;
    pub const EICS: usize = 0x1520;
    pub const EIMS: usize = 0x1524;
    pub const EIMC: usize = 0x1528;
    pub const EIAC: usize = 0x152c;
    pub const EIAM: usize = 0x1530;
    pub const EICR: usize = 0x1580;
    pub const IVAR0: usize = 0x1700;
    /// Queue 0 of each ring; queues 1-3 follow at 0x100 strides.
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const SRRCTL: usize = 0x280c;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const RXDCTL: usize = 0x2828;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const TXDCTL: usize = 0x3828;
    pub const GCR: usize = 0x5b00;
}

const CTRL_FD: u32 = 1 << 0;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_SPD_SEL: u32 = 3 << 8;
const CTRL_SPD_1000: u32 = 2 << 8;
const CTRL_FRCSPD: u32 = 1 << 11;
const CTRL_FRCDPX: u32 = 1 << 12;
const CTRL_RST: u32 = 1 << 26;
const EECD_AUTO_RD: u32 = 1 << 9;
const CTRL_EXT_LINK_MODE: u32 = 3 << 22;
const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
const MDIC_REG_SHIFT: u32 = 16;
const MDIC_PHY_SHIFT: u32 = 21;
const MDIC_OP_WRITE: u32 = 1 << 26;
const MDIC_READY: u32 = 1 << 28;
const MDIC_ERROR: u32 = 1 << 30;
const GCR_CMPL_TMOUT_RESEND: u32 = 1 << 16;
const QUEUE_ENABLE: u32 = 1 << 25;
const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
const RCTL_EN: u32 = 1 << 1;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_LBM_MAC: u32 = 1 << 6;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const GPIE_MSIX_MODE: u32 = 1 << 4;
const GPIE_EIAME: u32 = 1 << 30;
const IVAR_VALID: u32 = 0x80;
/// Advanced transmit data descriptor: DTYP = data, DEXT, insert FCS, end of packet.
const TXD_DTYP_DATA: u32 = 3 << 20;
const TXD_DCMD_EOP: u32 = 1 << 24;
const TXD_DCMD_IFCS: u32 = 1 << 25;
const TXD_DCMD_DEXT: u32 = 1 << 29;
const TXD_PAYLEN_SHIFT: u32 = 14;
/// Receive write-back status: descriptor done.
const RXD_STATUS_DD: u32 = 1 << 0;

/// PHY registers (IEEE 802.3 clause 22), reached through MDIC.
const MII_BMCR: u32 = 0;
const BMCR_SPEED1000: u16 = 1 << 6;
const BMCR_FULLDPLX: u16 = 1 << 8;
const BMCR_ANRESTART: u16 = 1 << 9;
const BMCR_ANENABLE: u16 = 1 << 12;
const BMCR_LOOPBACK: u16 = 1 << 14;

/// Descriptors per ring; one slot stays empty so head == tail means idle.
const RING_SIZE: u64 = 4096;
/// Both descriptor formats are 16 bytes.
const DESC_SIZE: u64 = 16;
/// Where the rings sit in the driver's memory.
const TX_RING: u64 = 0;
const RX_RING: u64 = RING_SIZE * DESC_SIZE;
/// Offset of the 32-bit status word in a receive write-back descriptor.
const RXD_STATUS: u64 = 8;
const _: () = assert!(RX_RING + RING_SIZE * DESC_SIZE <= DRIVER_MEMORY as u64);

/// A frame's payload: at most 1 KiB per copy, as upstream's driver; at least the 60 bytes of
/// a minimum Ethernet frame without its FCS.
const MAX_COPY: u64 = 1024;
const MIN_COPY: u64 = 60;
const MSIX_VECTOR: u32 = 0;
const VECTOR_MASK: u32 = 1 << MSIX_VECTOR;

/// How long the last frame of a batch may take to land: upstream's 200 sleeps of 1 ms (at
/// least 200 ms). At 1 Gb/s the largest batch (4095 frames of 1 KiB) takes about 33 ms on the
/// wire.
const COPY_TRIES: u32 = 200;
const COPY_STEP: Duration = Duration::from_millis(1);

/// The igb driver.
#[derive(Debug, Default)]
pub struct Igb {
    regs: Option<BarMapping>,
    msix: Option<IrqEventfds>,
    memory: Option<Arc<DmaBuffer>>,
    tx_tail: u64,
    rx_tail: u64,
}

impl Igb {
    fn regs(&self) -> Result<&BarMapping> {
        self.regs.as_ref().ok_or_else(|| Error::Invalid("igb: not initialized".into()))
    }

    fn memory(&self) -> Result<&DmaBuffer> {
        self.memory.as_deref().ok_or_else(|| Error::Invalid("igb: not initialized".into()))
    }

    fn read(&self, reg: usize) -> Result<u32> {
        self.regs()?.window().read_u32(reg)
    }

    fn write(&self, reg: usize, value: u32) -> Result<()> {
        self.regs()?.window().write_u32(reg, value)
    }

    fn update(&self, reg: usize, clear: u32, set: u32) -> Result<()> {
        self.write(reg, (self.read(reg)? & !clear) | set)
    }

    /// Global reset (CTRL.RST), then all legacy interrupts masked.
    fn reset(&self) -> Result<()> {
        self.update(reg::CTRL, 0, CTRL_RST)?;
        // The datasheet asks for at least 1 ms before the device is touched again.
        std::thread::sleep(Duration::from_millis(1));
        // Done when the NVM auto-read is: that implies the reset finished too.
        // Upstream's 20 sleeps of 1 ms.
        let read_done = poll(20, Duration::from_millis(1), || {
            Ok(self.read(reg::EECD)? & EECD_AUTO_RD != 0)
        })?;
        // QEMU's igb never sets EECD.AUTO_RD; it signals completion by clearing CTRL.RST.
        if !read_done && self.read(reg::CTRL)? & CTRL_RST != 0 {
            return Err(Error::Timeout("igb: reset did not complete (CTRL.RST still set)".into()));
        }
        self.write(reg::IMC, u32::MAX)
    }

    /// Writes a PHY register through MDIC and waits for the transaction.
    fn write_phy(&self, phy_reg: u32, value: u16) -> Result<()> {
        // A production driver would hold the SW/FW semaphore here; a test device assigned to
        // us has no firmware contending for the PHY.
        self.write(reg::MDIC, u32::from(value) | (phy_reg << MDIC_REG_SHIFT) | (1 << MDIC_PHY_SHIFT) | MDIC_OP_WRITE)?;
        let mut mdic = 0;
        // Upstream's 1000 sleeps of 50 µs.
        poll(1000, Duration::from_micros(50), || {
            mdic = self.read(reg::MDIC)?;
            Ok(mdic & MDIC_READY != 0)
        })?;
        match (mdic & MDIC_READY != 0, mdic & MDIC_ERROR != 0) {
            (true, false) => Ok(()),
            (false, _) => Err(Error::Timeout(format!("igb: PHY register {phy_reg} write did not complete"))),
            (true, true) => Err(Error::Invalid(format!("igb: PHY register {phy_reg} write failed (MDIC {mdic:#x})"))),
        }
    }

    /// PHY internal loopback at 1 Gb/s full duplex, with the MAC forced to match (datasheet
    /// 3.5.6.3.1), so every transmitted frame comes back to the receive queue.
    fn setup_loopback(&self) -> Result<()> {
        // QEMU's igb raises STATUS.LU only when autonegotiation completes, and drops received
        // frames without it; on hardware the next write cancels this before it can finish.
        let _ = self.write_phy(MII_BMCR, BMCR_ANENABLE | BMCR_ANRESTART);
        self.write_phy(MII_BMCR, BMCR_LOOPBACK | BMCR_SPEED1000 | BMCR_FULLDPLX)?;
        // The kernel's igb loopback self-test waits like this before and after forcing the
        // MAC; the datasheet gives no figure.
        std::thread::sleep(Duration::from_millis(50));
        self.update(
            reg::CTRL,
            CTRL_SPD_SEL,
            CTRL_FRCSPD | CTRL_FRCDPX | CTRL_SPD_1000 | CTRL_FD | CTRL_SLU,
        )?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// Programs everything CTRL.RST or an FLR clears: link, rings, receive and transmit
    /// control, and the MSI-X routing. Expects BAR0 mapped and MSI-X enabled through VFIO.
    fn program(&mut self, device: &Device) -> Result<()> {
        let memory = self.memory()?;
        let (tx_ring, rx_ring) = (memory.iova() + TX_RING, memory.iova() + RX_RING);
        self.update(reg::CTRL_EXT, CTRL_EXT_LINK_MODE, CTRL_EXT_DRV_LOAD)?;
        device.update_command(PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY, 0)?;
        self.setup_loopback()?;
        // Don't resend a read whose completion timed out: the unmapped-IOVA tests make such
        // reads on purpose, and endless retries keep the IOMMU's fault handling busy.
        self.update(reg::GCR, GCR_CMPL_TMOUT_RESEND, 0)?;

        let ring_bytes = (RING_SIZE * DESC_SIZE) as u32;
        for (base_lo, base_hi, len, head, tail, iova) in [
            (reg::TDBAL, reg::TDBAH, reg::TDLEN, reg::TDH, reg::TDT, tx_ring),
            (reg::RDBAL, reg::RDBAH, reg::RDLEN, reg::RDH, reg::RDT, rx_ring),
        ] {
            self.write(base_lo, iova as u32)?;
            self.write(base_hi, (iova >> 32) as u32)?;
            self.write(len, ring_bytes)?;
            self.write(head, 0)?;
            self.write(tail, 0)?;
        }
        self.write(reg::TXDCTL, QUEUE_ENABLE)?;
        // Advanced one-buffer receive descriptors, whose write-back has the DD status bit we
        // poll. The buffer size falls back to RCTL.BSIZE's default, 2 KiB.
        self.write(reg::SRRCTL, SRRCTL_DESCTYPE_ADV_ONEBUF)?;
        self.write(reg::RXDCTL, QUEUE_ENABLE)?;
        // Accept whatever the copied bytes say the destination MAC is, and strip the FCS so the
        // frame lands byte for byte. LBM_MAC is for QEMU, whose igb ignores PHY loopback; the
        // 82576 has no MAC loopback, so hardware ignores it.
        self.write(reg::RCTL, RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_LBM_MAC | RCTL_SECRC)?;
        self.write(reg::TCTL, TCTL_EN | TCTL_PSP)?;
        // The queue enables read back as set only once the global enables are.
        // Upstream's 2000 sleeps of 10 µs.
        let enabled = poll(2000, Duration::from_micros(10), || {
            Ok(self.read(reg::TXDCTL)? & self.read(reg::RXDCTL)? & QUEUE_ENABLE != 0)
        })?;
        if !enabled {
            return Err(Error::Timeout("igb: TX/RX queue 0 did not enable".into()));
        }
        // MSI-X: causes routed through IVAR, receive queue 0 to vector 0, which auto-clears
        // its cause and auto-masks on delivery.
        self.write(reg::GPIE, GPIE_MSIX_MODE | GPIE_EIAME)?;
        self.write(reg::EIAC, VECTOR_MASK)?;
        self.write(reg::EIAM, VECTOR_MASK)?;
        self.write(reg::IVAR0, IVAR_VALID | MSIX_VECTOR)?;
        self.write(reg::EIMS, VECTOR_MASK)?;
        self.tx_tail = 0;
        self.rx_tail = 0;
        Ok(())
    }

    /// Writes one transmit and one receive descriptor for a copy of `size` bytes.
    fn queue_copy(&mut self, src: u64, dst: u64, size: u64) -> Result<()> {
        let ring = self.memory()?.window();
        let at = |base: u64, slot: u64| (base + slot * DESC_SIZE) as usize;
        let tx = at(TX_RING, self.tx_tail);
        ring.write_u64(tx, src)?;
        let size32 = size as u32;
        ring.write_u32(tx + 8, size32 | TXD_DTYP_DATA | TXD_DCMD_DEXT | TXD_DCMD_IFCS | TXD_DCMD_EOP)?;
        ring.write_u32(tx + 12, size32 << TXD_PAYLEN_SHIFT)?;
        let rx = at(RX_RING, self.rx_tail);
        ring.write_u64(rx, dst)?;
        // The header address doubles as the write-back's status word: zero means not done.
        ring.write_u64(rx + 8, 0)?;
        self.tx_tail = (self.tx_tail + 1) % RING_SIZE;
        self.rx_tail = (self.rx_tail + 1) % RING_SIZE;
        Ok(())
    }

    /// Whether the receive descriptor of the last copy queued has been written back.
    fn last_copy_done(&self) -> Result<bool> {
        let slot = (self.rx_tail + RING_SIZE - 1) % RING_SIZE;
        let status = self
            .memory()?
            .window()
            .read_u32((RX_RING + slot * DESC_SIZE + RXD_STATUS) as usize)
            ?;
        Ok(status & RXD_STATUS_DD != 0)
    }
}

impl DmaDriver for Igb {
    fn name(&self) -> &'static str {
        DRIVER.name
    }

    fn max_memcpy_size(&self) -> u64 {
        MAX_COPY
    }

    fn max_memcpy_count(&self) -> u64 {
        RING_SIZE - 1
    }

    fn init(&mut self, device: &Device, memory: Arc<DmaBuffer>) -> Result<()> {
        if memory.window().len() < DRIVER_MEMORY {
            return Err(Error::Invalid(format!("igb: driver memory of {:#x} bytes is too small", memory.window().len())));
        }
        self.regs = Some(device.map_bar(0)?);
        self.memory = Some(memory);
        self.reset()?;
        // MSI-X first: enabling it touches only VFIO and config space, and `program` is then
        // the same after an FLR, when the eventfds are re-armed instead.
        self.msix = Some(device.enable_irqs(VFIO_PCI_MSIX_IRQ_INDEX, 1)?);
        self.program(device)
    }

    fn remove(&mut self, _device: &Device) -> Result<()> {
        self.write(reg::RCTL, 0)?;
        self.write(reg::TCTL, 0)?;
        self.reset()?;
        if let Some(msix) = self.msix.take() {
            msix.disable()?;
        }
        self.regs = None;
        self.memory = None;
        Ok(())
    }

    fn memcpy_start(&mut self, src: u64, dst: u64, size: u64, count: u64) -> Result<()> {
        if !(MIN_COPY..=MAX_COPY).contains(&size) || count == 0 || count > self.max_memcpy_count() {
            return Err(Error::Invalid(format!(
                "igb: memcpy of {size:#x} bytes × {count}: each copy is one frame of {MIN_COPY}..={MAX_COPY} bytes, at most {} at once",
                self.max_memcpy_count()
            )));
        }
        // The copies run without interrupts; memcpy_wait unmasks again.
        self.write(reg::EIMC, VECTOR_MASK)?;
        for _ in 0..count {
            self.queue_copy(src, dst, size)?;
        }
        // Descriptors in memory before the tail bumps that hand them to the device.
        fence(Ordering::SeqCst);
        self.write(reg::RDT, self.rx_tail as u32)?;
        self.write(reg::TDT, self.tx_tail as u32)
    }

    fn memcpy_wait(&mut self, device: &Device) -> Result<Copied> {
        let wedged = injected(Fault::Wedge);
        let done = !wedged && poll(COPY_TRIES, COPY_STEP, || self.last_copy_done())?;
        // The write-back before the data it vouches for.
        fence(Ordering::SeqCst);
        // EIAC is set, so the cause is cleared by writing, never by reading EICR.
        self.write(reg::EICR, u32::MAX)?;
        self.write(reg::EIMS, VECTOR_MASK)?;
        if done {
            return Ok(Copied::Done);
        }
        // A descriptor that never completes usually follows a faulted DMA read, after which
        // the engine stays wedged until a function-level reset: reset, re-arm the same
        // eventfds (the reset tore the kernel's side down) and program the device again.
        device.reset()?;
        if let Some(msix) = &self.msix {
            msix.reenable()?;
        }
        if wedged {
            return Err(Error::Invalid("igb: injected fault: reprogramming after the reset failed".into()));
        }
        self.program(device)?;
        Ok(Copied::TimedOutRecovered)
    }

    fn send_msi(&mut self) -> Result<bool> {
        self.write(reg::EICS, VECTOR_MASK)?;
        Ok(true)
    }

    fn msi_count(&self, timeout: Duration) -> Result<u64> {
        let msix = self.msix.as_ref().ok_or_else(|| Error::Invalid("igb: not initialized".into()))?;
        Ok(msix.wait(MSIX_VECTOR, timeout)?.unwrap_or(0))
    }
}
