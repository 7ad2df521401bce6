//! What a kernel or machine may lack, named as `vfiotest run --require` takes it, and the rule
//! that decides whether lacking it is a SKIP or a FAIL.
//!
//! # The rule
//! A SKIP says the kernel *provably* lacks the feature: its config option or module is absent,
//! or the ioctl is unknown (ENOTTY). Where the kernel has the feature and it misbehaves, or the
//! host hides it (a device node missing while sysfs shows the kernel registered it, a module
//! built but not loaded), it is a FAIL that names what is wrong. A feature the user required
//! ([`require`]) is never a SKIP: its absence is a FAIL that names it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::{Error, Result};

/// A feature a test can need from the kernel or the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// iommufd: `/dev/iommu` (`CONFIG_IOMMUFD`, Linux 6.2).
    Iommufd,
    /// The legacy VFIO container with the type1 backend: `/dev/vfio/vfio`
    /// (`CONFIG_VFIO_CONTAINER`, `CONFIG_VFIO_IOMMU_TYPE1`).
    Container,
    /// VFIO device cdevs: `/dev/vfio/devices/vfioN` (`CONFIG_VFIO_DEVICE_CDEV`, Linux 6.6).
    Cdev,
    /// BAR export as a dma-buf: `VFIO_DEVICE_FEATURE_DMA_BUF` (`CONFIG_VFIO_PCI_DMABUF`, 6.19).
    DmaBuf,
    /// 2 MiB hugetlb pages, reserved.
    Hugetlb2M,
    /// 1 GiB hugetlb pages, reserved (on the kernel command line).
    Hugetlb1G,
    /// A reader of the IOMMU's page tables: the Intel IOMMU debugfs
    /// (`CONFIG_INTEL_IOMMU_DEBUGFS`, debugfs mounted).
    IommuPageTables,
    /// SR-IOV: `sriov_totalvfs` for a PF (`CONFIG_PCI_IOV`).
    SrIov,
    /// Interrupt remapping, which lets the IOMMU isolate a device's MSIs (`CONFIG_IRQ_REMAP`
    /// and an IOMMU that has it).
    IrqRemap,
}

impl Feature {
    /// Every feature, in the order `--require all` lists them.
    pub const ALL: [Feature; 9] = [
        Self::Iommufd,
        Self::Container,
        Self::Cdev,
        Self::DmaBuf,
        Self::Hugetlb2M,
        Self::Hugetlb1G,
        Self::IommuPageTables,
        Self::SrIov,
        Self::IrqRemap,
    ];

    /// The name `--require` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Iommufd => "iommufd",
            Self::Container => "container",
            Self::Cdev => "cdev",
            Self::DmaBuf => "dma-buf",
            Self::Hugetlb2M => "hugetlb-2m",
            Self::Hugetlb1G => "hugetlb-1g",
            Self::IommuPageTables => "iommu-pgtables",
            Self::SrIov => "sr-iov",
            Self::IrqRemap => "irq-remap",
        }
    }

    /// Parses `--require`'s list: `all`, or names separated by commas.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming an unknown feature and the known ones.
    pub fn parse_list(list: &str) -> Result<BTreeSet<Feature>> {
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => set.extend(Self::ALL),
                _ => {
                    let feature = Self::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                        let known: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                        Error::Invalid(format!("unknown feature {name:?}: expected all or {}", known.join(", ")))
                    })?;
                    set.insert(feature);
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static REQUIRED: OnceLock<BTreeSet<Feature>> = OnceLock::new();

/// Declares, once per process, the features this machine must have: a missing one is then a
/// FAIL naming it, never a SKIP. Later calls change nothing.
pub fn require(features: BTreeSet<Feature>) {
    let _first_wins = REQUIRED.set(features);
}

/// Whether the user required `feature` ([`require`]).
pub fn is_required(feature: Feature) -> bool {
    REQUIRED.get().is_some_and(|set| set.contains(&feature))
}

/// What the kernel shows of a feature behind a device node that is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KernelHas {
    /// The kernel registered it: `evidence` is where sysfs shows that.
    Yes { evidence: String },
    /// It is a module that is built but not loaded.
    ModuleNotLoaded { module: &'static str },
    /// The kernel provably lacks it: `why` names the option.
    No { why: String },
}

/// The one rule for a missing device node: SKIP only when the kernel lacks the feature.
pub(crate) fn missing_node(feature: Feature, node: &Path, kernel: KernelHas) -> Error {
    let node = node.display();
    match kernel {
        KernelHas::No { why } => Error::unsupported(feature, format!("{node} is missing: {why}")),
        KernelHas::Yes { evidence } => Error::Invalid(format!(
            "{node} is missing although the kernel has it ({evidence}): is devtmpfs mounted on /dev?"
        )),
        KernelHas::ModuleNotLoaded { module } => Error::Invalid(format!(
            "{node} is missing: the {module} module is built but not loaded (modprobe {module})"
        )),
    }
}

/// Whether the running kernel has module `name` built but not loaded.
pub(crate) fn module_built_not_loaded(name: &str) -> bool {
    if Path::new("/sys/module").join(name).exists() {
        return false;
    }
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let dep = std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep")).unwrap_or_default();
    let file = format!("/{name}.ko");
    dep.lines().filter_map(|l| l.split(':').next()).any(|m| m.contains(&file))
}

/// What the kernel shows of a misc device (`/dev/iommu`, `/dev/vfio/vfio`): registered (in
/// `/sys/class/misc/<misc>`), a module not loaded, or absent for want of `option`.
pub(crate) fn misc_device(misc: &str, module: &'static str, option: &str) -> KernelHas {
    let class = Path::new("/sys/class/misc").join(misc);
    match () {
        _ if class.exists() => KernelHas::Yes { evidence: class.display().to_string() },
        _ if module_built_not_loaded(module) => KernelHas::ModuleNotLoaded { module },
        _ => KernelHas::No { why: format!("the kernel lacks {option} (no {})", class.display()) },
    }
}

/// Interrupt remapping is on when some interrupt chip's name carries the `IR-` prefix the
/// remapping domains give it (`IR-PCI-MSI`, `IR-IO-APIC`): the kernel's own statement that it
/// remaps, read from `/proc/interrupts`.
pub(crate) fn irq_remapping_on(interrupts: &str) -> bool {
    interrupts.split_whitespace().any(|word| word.starts_with("IR-"))
}

/// [`Error::Unsupported`] for [`Feature::IrqRemap`] if it is required and off here; else
/// nothing. Nothing else makes its absence visible: without remapping VFIO refuses to attach
/// (a FAIL naming the fix) unless unsafe interrupts are allowed, and then everything works.
///
/// # Errors
/// As above.
pub fn ensure_required_irq_remapping() -> Result<()> {
    if !is_required(Feature::IrqRemap) {
        return Ok(());
    }
    let interrupts = std::fs::read_to_string("/proc/interrupts").map_err(|e| Error::file("/proc/interrupts", e))?;
    match irq_remapping_on(&interrupts) {
        true => Ok(()),
        false => Err(Error::unsupported(
            Feature::IrqRemap,
            "no interrupt is remapped (no IR- chip in /proc/interrupts): the IOMMU lacks interrupt remapping or it is off",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_all_is_every_feature() {
        for f in Feature::ALL {
            assert_eq!(Feature::parse_list(f.name()).unwrap(), BTreeSet::from([f]));
        }
        assert_eq!(Feature::parse_list("all").unwrap().len(), Feature::ALL.len());
        assert_eq!(Feature::parse_list("iommufd, cdev,").unwrap(), BTreeSet::from([Feature::Iommufd, Feature::Cdev]));
        assert!(Feature::parse_list("").unwrap().is_empty());
        let e = Feature::parse_list("iommufd,hugepages").unwrap_err().to_string();
        assert!(e.contains("\"hugepages\"") && e.contains("hugetlb-1g"), "{e}");
    }

    /// The rule, row by row: only a kernel that lacks the feature makes a missing node a SKIP.
    #[test]
    fn a_missing_node_is_a_skip_only_when_the_kernel_lacks_it() {
        let node = Path::new("/dev/iommu");
        let rows = [
            (KernelHas::No { why: "the kernel lacks CONFIG_IOMMUFD".into() }, true, "CONFIG_IOMMUFD"),
            (KernelHas::Yes { evidence: "/sys/class/misc/iommu".into() }, false, "devtmpfs"),
            (KernelHas::ModuleNotLoaded { module: "iommufd" }, false, "modprobe iommufd"),
        ];
        for (kernel, skip, says) in rows {
            let e = missing_node(Feature::Iommufd, node, kernel.clone());
            assert_eq!(e.is_unsupported(), skip, "{kernel:?}: {e}");
            assert!(e.to_string().contains(says) && e.to_string().contains("/dev/iommu"), "{e}");
        }
    }

    #[test]
    fn remapping_is_read_from_the_chip_names() {
        let on = "  24:   0   0  IR-PCI-MSIX-0000:00:07.0    0-edge      nvme0q0\n";
        let off = "  24:   0   0  PCI-MSIX-0000:00:07.0    0-edge      nvme0q0\n   4:  10  0  IO-APIC  4-edge  ttyS0\n";
        assert!(irq_remapping_on(on));
        assert!(!irq_remapping_on(off));
        assert!(!irq_remapping_on("  9: 0 0 IO-APIC 9-fasteoi acpi  # TIR-like\n"), "only a chip name's prefix counts");
    }
}
