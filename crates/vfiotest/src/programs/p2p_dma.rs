//! `vfio_p2p_dma_test` (ours): peer-to-peer DMA proven byte by byte. A DMA engine (edu or igb,
//! through its userspace driver) copies into and out of another device's RAM-backed BAR
//! (ivshmem's BAR2) through the IOMMU, and the CPU reads the bytes back through the BAR's
//! mmap. The BAR is mapped the way each mode takes MMIO: a type1 container by the mmap's
//! virtual address, an iommufd as a dma-buf. Upstream's MMIO test checks only the map call.

use std::sync::Arc;

use ksft::{Case, Outcome, Test, Verdict, ensure, ensure_eq, skip};
use vfio::driver::{self, Copied, DRIVER_MEMORY};
use vfio::pci::PCI_COMMAND_MEMORY;
use vfio::sysfs::Sysfs;
use vfio::{
    BarMapping, BarSlice, Bdf, Device, DmaBuf, DmaBuffer, DmaMapping, Iommu, IommuMode, IovaAllocator, Probe, Prot,
};

use super::{Engine, ensure_nothing_mapped, mode_variants_by};

/// ivshmem-plain's PCI IDs: its BAR2 is plain RAM, so what a DMA writes there reads back.
const IVSHMEM: (u64, u64) = (0x1af4, 0x1110);
const SHARED_BAR: u32 = 2;
/// Bytes copied each way: two pages, more than one copy of either engine.
const SIZE: usize = 8192;

#[derive(Clone, Copy)]
struct P2pVariant {
    mode: IommuMode,
    engine: &'static str,
}

struct P2pFixture {
    engine: Engine,
    /// Host memory the engine copies from or to.
    ram: DmaBuffer,
    /// The peer's BAR in the IOMMU, at `bar_iova`.
    bar_mapping: DmaMapping,
    bar_iova: u64,
    /// In iommufd modes, what `bar_mapping` was imported from.
    dma_buf: Option<DmaBuf>,
    /// The peer's BAR, as the CPU sees it.
    shared: BarMapping,
    peer: Device,
    engine_device: Device,
    iommu: Arc<Iommu>,
}

/// The engine stops before the memory it uses goes; the BAR leaves the IOMMU before its mmap
/// and its device; the devices leave the context before it closes.
impl ksft::Teardown for P2pFixture {
    fn teardown(self) -> Outcome {
        self.engine.stop(&self.engine_device)?;
        self.ram.close()?;
        self.bar_mapping.unmap()?;
        if let Some(buf) = self.dma_buf {
            buf.close()?;
        }
        self.shared.unmap()?;
        ensure_nothing_mapped(&self.iommu)?;
        self.peer.close()?;
        self.engine_device.close()?;
        Ok(self.iommu.close()?)
    }
}

impl P2pFixture {
    fn setup(bdfs: &[Bdf], variant: P2pVariant) -> Result<Self, Verdict> {
        let is_engine = |bdf: &&Bdf| driver::lookup(**bdf).is_some_and(|r| r.name == variant.engine);
        let Some(&engine_bdf) = bdfs.iter().find(is_engine) else {
            skip!("no {} among the devices", variant.engine);
        };
        let sysfs = Sysfs::system();
        let is_ivshmem = |bdf: &&Bdf| {
            (sysfs.read_hex(**bdf, "vendor").ok(), sysfs.read_hex(**bdf, "device").ok())
                == (Some(IVSHMEM.0), Some(IVSHMEM.1))
        };
        let Some(&peer_bdf) = bdfs.iter().find(is_ivshmem) else {
            skip!("no ivshmem (a RAM-backed BAR) among the devices");
        };

        let iommu = Iommu::open(variant.mode)?;
        let engine_device = Device::open(engine_bdf, &iommu)?;
        let peer = Device::open(peer_bdf, &iommu)?;
        let shared = peer.map_bar(SHARED_BAR)?;
        let mut iovas = IovaAllocator::new(iommu.iova_ranges()?)?;

        let engine = Engine::start(&engine_device, &iommu, iovas.alloc(DRIVER_MEMORY as u64)?)?
            .ok_or_else(|| Verdict::Fail(format!("no driver for {engine_bdf}")))?;
        let ram = DmaBuffer::new(&iommu, iovas.alloc(SIZE as u64)?, SIZE)?;

        let bar_iova = iovas.alloc(SIZE as u64)?;
        let (bar_mapping, dma_buf) = match variant.mode.allows_va_mmio() {
            true => {
                let range =
                    shared.range(0, SIZE).ok_or_else(|| Verdict::Fail(format!("BAR{SHARED_BAR} is too small")))?;
                (iommu.map(range, bar_iova)?, None)
            }
            false => {
                let buf = peer.export_dma_buf(SHARED_BAR, &[BarSlice::new(0, SIZE as u64)])?;
                (iommu.map_dma_buf(&buf, 0, SIZE as u64, bar_iova, Prot::READ_WRITE)?, Some(buf))
            }
        };
        println!(
            "# {} at {engine_bdf} copies to and from {peer_bdf} BAR{SHARED_BAR} at IOVA {bar_iova:#x} ({})",
            variant.engine,
            match dma_buf {
                Some(_) => "a dma-buf",
                None => "its mmap",
            }
        );
        Ok(Self { engine, ram, bar_mapping, bar_iova, dma_buf, shared, peer, engine_device, iommu })
    }

    /// Copies `SIZE` bytes by DMA from `src` to `dst`: done, or timed out with the engine
    /// recovered; a failed recovery is an error.
    fn copy(&mut self, src: u64, dst: u64) -> vfio::Result<Copied> {
        self.engine.driver.memcpy(&self.engine_device, src, dst, SIZE as u64)
    }
}

pub fn tests(bdfs: &[Bdf]) -> Vec<Test> {
    let bdfs = bdfs.to_vec();
    // Every engine a driver here drives, in the registry's order.
    let engines: Vec<(&str, &'static str)> = driver::REGISTRY.iter().map(|r| (r.name, r.name)).collect();
    let names = mode_variants_by(&engines, |mode, engine| P2pVariant { mode, engine });
    let variants: Vec<(&str, P2pVariant)> = names.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    ksft::fixture(
        "vfio_p2p_dma",
        &variants,
        move |&variant: &P2pVariant| P2pFixture::setup(&bdfs, variant),
        &[Case::new("to_bar", to_bar), Case::new("from_bar", from_bar), Case::new("bar_decode_off", bar_decode_off)],
    )
}

/// A pattern no stuck bit, lost page or shifted copy can reproduce: byte `i` of `seed`.
fn pattern(seed: u8) -> Vec<u8> {
    (0..SIZE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn read(window: &vfio::Mmap) -> Result<Vec<u8>, Verdict> {
    Ok(window.read_bytes(0, SIZE)?)
}

/// How many of `got`'s bytes differ from `want`, and where the first one is.
fn mismatch(got: &[u8], want: &[u8]) -> Option<(usize, usize)> {
    let first = got.iter().zip(want).position(|(g, w)| g != w)?;
    Some((got.iter().zip(want).filter(|(g, w)| g != w).count(), first))
}

/// Which way a copy goes.
#[derive(Clone, Copy)]
enum Direction {
    ToBar,
    FromBar,
}

impl P2pFixture {
    /// Fills the source with a pattern and clears the destination, copies by DMA, and checks
    /// every byte through the destination's CPU mapping.
    fn copy_and_check(&mut self, direction: Direction, seed: u8) -> Outcome {
        let (bar, ram) = ((self.shared.window(), self.bar_iova), (self.ram.window(), self.ram.iova()));
        let ((src, src_iova), (dst, dst_iova), what) = match direction {
            Direction::ToBar => (ram, bar, "the BAR"),
            Direction::FromBar => (bar, ram, "host memory"),
        };
        let want = pattern(seed);
        src.write_bytes(0, &want)?;
        dst.fill(0, SIZE, 0)?;
        // The engine's driver, not `self.copy`: the windows stay borrowed meanwhile.
        let copied = self.engine.driver.memcpy(&self.engine_device, src_iova, dst_iova, SIZE as u64)?;
        ensure_eq!(copied, Copied::Done, "a DMA copy of {SIZE} bytes to {what}");
        let got = read(dst)?;
        if let Some((count, first)) = mismatch(&got, &want) {
            ensure!(false, "{count} of {SIZE} bytes in {what} differ after the DMA (first at {first:#x})");
        }
        Ok(())
    }
}

/// The engine copies host memory into the peer's BAR; the BAR's mmap reads the bytes back.
fn to_bar(t: &mut P2pFixture) -> Outcome {
    t.copy_and_check(Direction::ToBar, 0x5a)
}

/// The engine copies the peer's BAR into host memory.
fn from_bar(t: &mut P2pFixture) -> Outcome {
    t.copy_and_check(Direction::FromBar, 0xa5)
}

/// Subject: what the IOMMU does with a peer's BAR once the peer stops decoding memory. Under
/// iommufd the dma-buf is revoked and its IOPTE must be gone; under type1 the IOPTE stays
/// (7.3's type1 is never told; only the CPU mmap is zapped). Both are read from the IOMMU's page
/// table, so without a page-table reader this is a SKIP: the rest can't tell a kernel that
/// revokes from one that doesn't. Around that, the engine's DMA to the BAR must not land (the
/// emulated peer decodes nothing with decode off, whatever the IOMMU does, so this alone
/// proves nothing of the kernel) and the CPU's mmap of the BAR raises SIGBUS (vfio-pci's zap).
fn bar_decode_off(t: &mut P2pFixture) -> Outcome {
    let before = pattern(0x3c);
    t.shared.window().write_bytes(0, &before)?;
    t.ram.window().write_bytes(0, &pattern(0xc3))?;
    t.peer.update_command(0, PCI_COMMAND_MEMORY)?;
    let iopte = vfio::pgtable::leaf(t.engine_device.bdf(), t.bar_iova);
    // The engine may or may not report the fault; what counts is where the bytes went.
    let copied = t.copy(t.ram.iova(), t.bar_iova);
    // vfio-pci zapped the CPU's mmap too: touching it now is a bus error.
    let cpu = t.shared.window().probe_u32(0);
    // Decode comes back on before any verdict, so the teardown finds the device as it was.
    t.peer.update_command(PCI_COMMAND_MEMORY, 0)?;
    let (copied, cpu, present) = (copied?, cpu?, iopte?.is_some());
    println!("# DMA to the BAR with decode off: {copied:?}; IOPTE present: {present}");
    ensure_eq!(present, t.dma_buf.is_none(), "IOPTE for the BAR with its decode off (type1 keeps it)");
    ensure_eq!(cpu, Probe::BUS_ERROR, "a CPU read of the BAR's mmap with its decode off");
    let after = read(t.shared.window())?;
    if let Some((count, first)) = mismatch(&after, &before) {
        ensure!(false, "{count} bytes landed in a BAR whose memory decode was off (first at {first:#x})");
    }
    Ok(())
}
