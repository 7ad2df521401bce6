//! `vfio_pci_device_init_perf_test`: open every device at once, one thread each, into one
//! IOMMU context, and report how long initialization took.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ksft::{Case, Outcome, Test, Verdict};
use vfio::{Bdf, Iommu, IommuMode};

use super::{close_with_bars, mode_variants, open_with_bars};

struct PerfFixture {
    bdfs: Vec<Bdf>,
    iommu: Arc<Iommu>,
}

/// The devices closed with their threads; the context must be free.
impl ksft::Teardown for PerfFixture {
    fn teardown(self) -> Outcome {
        Ok(self.iommu.close()?)
    }
}

pub fn tests(bdfs: &[Bdf]) -> Vec<Test> {
    let bdfs = bdfs.to_vec();
    ksft::fixture(
        "vfio_pci_device_init_perf_test",
        &mode_variants(),
        move |&mode: &IommuMode| -> Result<PerfFixture, Verdict> {
            // The threads race into the kernel, as upstream's do; the library would serialize them.
            Ok(PerfFixture { bdfs: bdfs.clone(), iommu: Iommu::open_racing(mode)? })
        },
        &[Case::new("init", init)],
    )
}

fn secs(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

fn init(t: &mut PerfFixture) -> Outcome {
    println!("Testing parallel initialization of {} devices:", t.bdfs.len());
    for bdf in &t.bdfs {
        println!("    {bdf}");
    }
    let barrier = Arc::new(Barrier::new(t.bdfs.len()));
    let threads: Vec<_> = t
        .bdfs
        .iter()
        .map(|&bdf| {
            let (iommu, barrier) = (Arc::clone(&t.iommu), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let opened = open_with_bars(bdf, &iommu);
                let end = Instant::now();
                // Everyone finishes initializing before anyone tears down.
                barrier.wait();
                let outcome = opened.and_then(|(device, bars)| close_with_bars(device, bars));
                (bdf, start, end, outcome)
            })
        })
        .collect();
    let mut results = Vec::new();
    for thread in threads {
        results.push(thread.join().map_err(|_| Verdict::Fail("a device thread panicked".into()))?);
    }
    ksft::combine(results.iter().map(|(bdf, _, _, outcome)| (bdf, outcome.clone())))?;
    let first = results.iter().map(|r| r.1).min().expect("at least one device");
    let last = results.iter().map(|r| r.2).max().expect("at least one device");
    let times: Vec<Duration> = results.iter().map(|r| r.2 - r.1).collect();
    let (min, max) = (times.iter().min().copied().unwrap_or_default(), times.iter().max().copied().unwrap_or_default());
    let avg = times.iter().sum::<Duration>() / times.len() as u32;
    println!("Wall time: {}", secs(last - first));
    println!("Min init time (per device): {}", secs(min));
    println!("Max init time (per device): {}", secs(max));
    println!("Avg init time (per device): {}", secs(avg));
    Ok(())
}
