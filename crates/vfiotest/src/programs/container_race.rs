//! `vfio_container_race_test` (ours): every device attaching to one fresh container at the same
//! moment, round after round. Upstream's init-perf test races the same way once per mode; this
//! repeats it so that a race in the kernel's container code shows up as a failure here rather
//! than as a rare flake there. Known on 7.3: iommufd's container emulation publishes the compat
//! IOAS before it is finalized, so a group racing through `VFIO_GROUP_GET_DEVICE_FD` can fail
//! with ENOENT (`iommufd_vfio_compat_ioas_create()`).

use std::sync::{Arc, Barrier};
use std::thread;

use ksft::{Case, Outcome, Test, Verdict};
use vfio::{Bdf, Device, Iommu, IommuMode};

use super::mode_variants_where;

/// Rounds per mode: each is a fresh container, so each is a fresh chance for the first
/// attach to race the others.
const ROUNDS: usize = 10;

struct RaceFixture {
    bdfs: Vec<Bdf>,
    mode: IommuMode,
}

/// Each round closes its own context.
impl ksft::Teardown for RaceFixture {
    fn teardown(self) -> Outcome {
        Ok(())
    }
}

pub fn tests(bdfs: &[Bdf]) -> Vec<Test> {
    let bdfs = bdfs.to_vec();
    // Only containers have a first attach that sets things up for the others.
    let variants = mode_variants_where(IommuMode::is_container);
    ksft::fixture(
        "vfio_container_race",
        &variants,
        move |&mode: &IommuMode| -> Result<RaceFixture, Verdict> { Ok(RaceFixture { bdfs: bdfs.clone(), mode }) },
        &[Case::new("parallel_attach", parallel_attach)],
    )
}

fn parallel_attach(t: &mut RaceFixture) -> Outcome {
    // Devices of one group share one attach: only distinct groups race.
    let sysfs = vfio::sysfs::Sysfs::system();
    let mut groups = std::collections::BTreeSet::new();
    for &bdf in &t.bdfs {
        groups.insert(sysfs.iommu_group(bdf)?);
    }
    if groups.len() < 2 {
        ksft::skip!("a race needs two devices or more, in different IOMMU groups ({} groups here)", groups.len());
    }
    for round in 1..=ROUNDS {
        let iommu = Iommu::open_racing(t.mode)?;
        let barrier = Arc::new(Barrier::new(t.bdfs.len()));
        let threads: Vec<_> = t
            .bdfs
            .iter()
            .map(|&bdf| {
                let (iommu, barrier) = (Arc::clone(&iommu), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    let opened = Device::open(bdf, &iommu).map(drop);
                    // Every device is in before any leaves, so no attach sees an empty container.
                    barrier.wait();
                    (bdf, opened)
                })
            })
            .collect();
        let mut opened = Vec::new();
        for thread in threads {
            opened.push(thread.join().map_err(|_| Verdict::Fail("a device thread panicked".into()))?);
        }
        let outcomes =
            opened.into_iter().map(|(bdf, o)| (format!("round {round}/{ROUNDS}, {bdf}"), o.map_err(Verdict::from)));
        ksft::combine(outcomes)?;
    }
    println!("{ROUNDS} rounds of {} devices attaching at once: all attached", t.bdfs.len());
    Ok(())
}
