//! `vfio_pci_driver_test`: a userspace driver makes the device DMA through the IOMMU in every
//! mode: copies between mapped IOVAs must arrive byte for byte, copies from or to an unmapped
//! IOVA must not disturb mapped memory, and the device's MSI must reach its eventfd.

use std::any::Any;
use std::time::Duration;

use ksft::{Case, Outcome, Refusal, Tap, Test, Verdict, ensure, ensure_eq, skip};
use vfio::driver::{self, Copied, DRIVER_MEMORY};
use vfio::{Bdf, DmaBuffer, IommuMode};

use super::{DeviceFixture, Engine, mode_variants};

/// Memory for copies: src and dst halves. Upstream maps 1 GiB; no copy here exceeds 16 KiB
/// (4 × the largest chunk of any driver), and pinning 1 GiB per test under TCG costs seconds
/// for nothing.
const MEMCPY_REGION: u64 = 2 << 20;
/// How long an MSI may take to reach its eventfd. Upstream reads the eventfd blocking, bounded
/// only by the test's 30 s timeout; 10 s leaves a loaded host room and a lost MSI a clear failure.
const MSI_WAIT: Duration = Duration::from_secs(10);
/// What "no MSI" waits before it is believed.
const NO_MSI_WAIT: Duration = Duration::from_millis(50);

struct DriverFixture {
    engine: Engine,
    memcpy: DmaBuffer,
    size: u64,
    src_iova: u64,
    dst_iova: u64,
    unmapped_iova: u64,
    dev: DeviceFixture,
}

impl DriverFixture {
    fn setup(bdf: Bdf, mode: IommuMode) -> Result<Self, Verdict> {
        let mut dev = DeviceFixture::open(bdf, mode)?;
        if !driver::has_driver(bdf) {
            skip!("No driver found for device {bdf}");
        }
        let memcpy = DmaBuffer::new(&dev.iommu, dev.iova.alloc(MEMCPY_REGION)?, MEMCPY_REGION as usize)?;
        let engine_iova = dev.iova.alloc(DRIVER_MEMORY as u64)?;
        // Any IOVA that overlaps no mapping.
        let unmapped_iova = dev.iova.alloc(1 << 30)?;
        let engine = Engine::start(&dev.device, &dev.iommu, engine_iova)?
            .ok_or_else(|| Verdict::Fail(format!("no driver for {bdf}")))?;
        let driver = &engine.driver;
        // Four times the largest single copy exercises chunking; half the region at most.
        let size = (driver.max_memcpy_size() * 4).min(MEMCPY_REGION / 2);
        let src_iova = memcpy.iova();
        Ok(Self { engine, memcpy, size, src_iova, dst_iova: src_iova + size, unmapped_iova, dev })
    }

    fn fill(&self, src: u8, dst: u8) -> Outcome {
        let len = self.size as usize;
        self.memcpy.window().fill(0, len, src)?;
        self.memcpy.window().fill(len, len, dst)?;
        Ok(())
    }

    /// Counts of the bytes of src and dst that are not `src_byte` and `dst_byte`.
    fn differing(&self, src_byte: u8, dst_byte: u8) -> Result<(usize, usize), Verdict> {
        let len = self.size as usize;
        let read = |at| self.memcpy.window().read_bytes(at, len);
        let (src, dst) = (read(0)?, read(len)?);
        Ok((src.iter().filter(|&&b| b != src_byte).count(), dst.iter().filter(|&&b| b != dst_byte).count()))
    }

    fn ensure_no_msi(&self) -> Outcome {
        let fired = self.engine.driver.msi_count(NO_MSI_WAIT)?;
        ensure_eq!(fired, 0, "MSIs the {} raised without being asked", self.engine.driver.name());
        Ok(())
    }

    fn copy_and_check(&mut self) -> Outcome {
        self.fill(b'x', b'y')?;
        let copied = self.engine.driver.memcpy(&self.dev.device, self.src_iova, self.dst_iova, self.size)?;
        ensure_eq!(copied, Copied::Done, "a {:#x}-byte DMA copy between mapped IOVAs", self.size);
        let (_, dst_wrong) = self.differing(b'x', b'x')?;
        ensure_eq!(dst_wrong, 0, "bytes of dst that differ from src after a {:#x}-byte DMA copy", self.size);
        Ok(())
    }
}

/// Upstream's `vfio_pci_device_cleanup()` with a driver: the device stops its DMA before its
/// memory and the copy buffers go, then the device and the context close. (A test that panics
/// skips this; its child exits, and a device still copying meets unmapped IOVAs, not freed
/// memory, because every buffer leaves the IOMMU before its pages are unmapped.)
impl ksft::Teardown for DriverFixture {
    fn teardown(self) -> Outcome {
        self.engine.stop(&self.dev.device)?;
        self.memcpy.close()?;
        self.dev.teardown()
    }
}

/// Upstream skips the whole program on a device it has no driver for.
pub fn prologue(bdf: Bdf, _: &mut Tap<'_>) -> Result<Option<Box<dyn Any>>, Refusal> {
    match driver::has_driver(bdf) {
        true => Ok(None),
        false => Err(Refusal::Skip(format!("No driver found for device {bdf}"))),
    }
}

pub fn tests(bdf: Bdf) -> Vec<Test> {
    ksft::fixture(
        "vfio_pci_driver_test",
        &mode_variants(),
        move |&mode| DriverFixture::setup(bdf, mode),
        &[
            Case::new("init_remove", init_remove),
            Case::new("memcpy_success", memcpy_success),
            Case::new("memcpy_from_unmapped_iova", memcpy_from_unmapped_iova),
            Case::new("memcpy_to_unmapped_iova", memcpy_to_unmapped_iova),
            Case::new("send_msi", send_msi),
            Case::new("mix_and_match", mix_and_match),
            // Upstream's TEST_F_TIMEOUT(..., memcpy_storm, 60).
            Case::new("memcpy_storm", memcpy_storm).timeout(Duration::from_secs(60)),
        ],
    )
}

fn init_remove(t: &mut DriverFixture) -> Outcome {
    for _ in 0..10 {
        t.engine.driver.remove(&t.dev.device)?;
        t.engine.driver.init(&t.dev.device, t.engine.memory())?;
    }
    Ok(())
}

fn memcpy_success(t: &mut DriverFixture) -> Outcome {
    t.copy_and_check()?;
    t.ensure_no_msi()
}

/// A copy that faults. Not every device reports a faulting read, so a copy that completes or
/// one that timed out (and after which the driver recovered the device) are both accepted, as
/// upstream accepts either; a driver error, such as a failed reset or re-arm in the recovery,
/// fails the test, as upstream's driver asserts each step.
fn copy_that_faults(t: &mut DriverFixture, src: u64, dst: u64) -> Outcome {
    let _done_or_recovered: Copied = t.engine.driver.memcpy(&t.dev.device, src, dst, t.size)?;
    Ok(())
}

fn memcpy_from_unmapped_iova(t: &mut DriverFixture) -> Outcome {
    t.fill(b'x', b'y')?;
    // What is asserted is that the source, which the copy never names, is untouched.
    copy_that_faults(t, t.unmapped_iova, t.dst_iova)?;
    let (src_wrong, _) = t.differing(b'x', b'y')?;
    ensure_eq!(src_wrong, 0, "bytes of src changed by a copy from an unmapped IOVA");
    t.ensure_no_msi()
}

fn memcpy_to_unmapped_iova(t: &mut DriverFixture) -> Outcome {
    t.fill(b'x', b'y')?;
    copy_that_faults(t, t.src_iova, t.unmapped_iova)?;
    // The write had nowhere to land: neither half of the mapped region may have changed.
    let (src_wrong, dst_wrong) = t.differing(b'x', b'y')?;
    ensure!(
        src_wrong == 0 && dst_wrong == 0,
        "a copy to an unmapped IOVA changed mapped memory ({src_wrong} src, {dst_wrong} dst bytes)"
    );
    t.ensure_no_msi()
}

fn send_msi(t: &mut DriverFixture) -> Outcome {
    if !t.engine.driver.send_msi()? {
        skip!("Driver does not support send_msi()\n");
    }
    ensure_eq!(t.engine.driver.msi_count(MSI_WAIT)?, 1, "MSIs seen after one send_msi()");
    Ok(())
}

fn mix_and_match(t: &mut DriverFixture) -> Outcome {
    for _ in 0..10 {
        t.copy_and_check()?;
        copy_that_faults(t, t.unmapped_iova, t.dst_iova)?;
        if t.engine.driver.send_msi()? {
            ensure_eq!(t.engine.driver.msi_count(MSI_WAIT)?, 1, "MSIs seen after one send_msi()");
        }
    }
    Ok(())
}

fn memcpy_storm(t: &mut DriverFixture) -> Outcome {
    let total: u64 = 250 << 30;
    let size = t.engine.driver.max_memcpy_size().min(MEMCPY_REGION / 2);
    let count = (total / size).min(t.engine.driver.max_memcpy_count());
    println!("Kicking off {count} memcpys of size {size:#x}");
    t.fill(b'x', b'y')?;
    t.engine.driver.memcpy_start(t.src_iova, t.dst_iova, size, count)?;
    ensure_eq!(t.engine.driver.memcpy_wait(&t.dev.device)?, Copied::Done, "the storm of {count} copies");
    let copied = t.memcpy.window().read_bytes(t.size as usize, size as usize)?;
    ensure!(copied.iter().all(|&b| b == b'x'), "the storm's copies did not arrive");
    t.ensure_no_msi()
}
