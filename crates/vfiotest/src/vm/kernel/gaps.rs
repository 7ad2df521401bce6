//! What an older kernel's missing options mean for the suite: which modes and programs SKIP.
//!
//! The build leaves out a fragment option the tree's Kconfig doesn't define (it reports it
//! as lacking); this says, once, what that costs.

/// An option some kernels lack, when it came, and what the suite can't do without it.
struct Gap {
    option: &'static str,
    /// What the tests see without it.
    consequence: &'static str,
}

const GAPS: &[Gap] = &[
    Gap {
        option: "CONFIG_IOMMUFD",
        consequence: "no /dev/iommu (iommufd came in 6.2): the iommufd and iommufd_compat_* modes and \
                      vfio_iommufd_setup_test SKIP",
    },
    Gap {
        option: "CONFIG_VFIO_DEVICE_CDEV",
        consequence: "no VFIO device cdevs (6.6): the iommufd mode SKIPs (the compat modes still run)",
    },
    Gap {
        option: "CONFIG_VFIO_PCI_DMABUF",
        consequence: "no BAR export as a dma-buf (6.19): vfio_dma_buf_test and the iommufd BAR maps SKIP",
    },
    Gap {
        option: "CONFIG_VFIO_CONTAINER",
        consequence: "the legacy container is always built before 6.2: nothing SKIPs",
    },
    Gap { option: "CONFIG_VFIO_GROUP", consequence: "groups are always built before 6.6: nothing SKIPs" },
    Gap { option: "CONFIG_AMD_IOMMU_DEBUGFS", consequence: "no AMD IOMMU debugfs: behind amd, the IOPTE checks SKIP" },
    Gap {
        option: "CONFIG_INTEL_IOMMU_DEBUGFS",
        consequence: "no Intel IOMMU debugfs: behind intel, the IOPTE checks SKIP",
    },
];

/// One line per option the kernel lacks, saying what it costs.
pub fn describe(lacks: &[String]) -> Vec<String> {
    lacks
        .iter()
        .map(|option| {
            let consequence =
                GAPS.iter().find(|g| g.option == option).map_or("no test needs it directly", |g| g.consequence);
            format!("{option}: {consequence}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lacking_option_says_what_skips() {
        let lines = describe(&["CONFIG_IOMMUFD".to_owned(), "CONFIG_SOMETHING_NEW".to_owned()]);
        assert!(lines[0].starts_with("CONFIG_IOMMUFD: no /dev/iommu (iommufd came in 6.2)"), "{lines:?}");
        assert_eq!(lines[1], "CONFIG_SOMETHING_NEW: no test needs it directly");
    }

    #[test]
    fn every_gap_names_an_option_of_our_fragment() {
        let fragment = include_str!("../../../../../vm/guest.config");
        for gap in GAPS {
            assert!(fragment.lines().any(|l| l.starts_with(&format!("{}=", gap.option))), "{}", gap.option);
        }
    }
}
