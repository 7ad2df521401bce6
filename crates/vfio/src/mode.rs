//! The five ways to give a device an IOMMU: one table, used everywhere.

use std::fmt;
use std::str::FromStr;

use vfio_sys::uapi::{VFIO_TYPE1_IOMMU, VFIO_TYPE1V2_IOMMU};

use crate::Error;

/// What a mode opens: a VFIO container, or an iommufd IOAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A VFIO container at `path` (the legacy `/dev/vfio/vfio`, or iommufd's emulation of it
    /// at `/dev/iommu`), set to `VFIO_SET_IOMMU` type `iommu_type`. Devices join through their
    /// group.
    Container {
        /// The device node.
        path: &'static str,
        /// `VFIO_TYPE1_IOMMU` or `VFIO_TYPE1v2_IOMMU`.
        iommu_type: u32,
    },
    /// Native iommufd: an IOAS in `/dev/iommu`; devices bind through their cdevs.
    Iommufd,
}

/// An IOMMU backend, named as upstream's selftests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuMode {
    /// `/dev/vfio/vfio` container with the legacy type1 IOMMU driver.
    VfioType1,
    /// `/dev/vfio/vfio` container with type1v2.
    VfioType1v2,
    /// `/dev/iommu` used as a VFIO container, type1 semantics.
    IommufdCompatType1,
    /// `/dev/iommu` used as a VFIO container, type1v2 semantics.
    IommufdCompatType1v2,
    /// Native iommufd: an IOAS, and the device through its cdev.
    Iommufd,
}

impl IommuMode {
    /// Every mode, in upstream's variant order.
    pub const ALL: [IommuMode; 5] =
        [Self::VfioType1, Self::VfioType1v2, Self::IommufdCompatType1, Self::IommufdCompatType1v2, Self::Iommufd];

    /// The order a user who doesn't care about the mode should try them in: upstream's default,
    /// native iommufd, first; then iommufd's container emulation and the legacy container, type1v2
    /// before type1 (a stock distribution kernel may lack iommufd and VFIO cdevs).
    pub const PREFERENCE: [IommuMode; 5] =
        [Self::Iommufd, Self::IommufdCompatType1v2, Self::VfioType1v2, Self::IommufdCompatType1, Self::VfioType1];

    /// The upstream name, e.g. `vfio_type1v2_iommu`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::VfioType1 => "vfio_type1_iommu",
            Self::VfioType1v2 => "vfio_type1v2_iommu",
            Self::IommufdCompatType1 => "iommufd_compat_type1",
            Self::IommufdCompatType1v2 => "iommufd_compat_type1v2",
            Self::Iommufd => "iommufd",
        }
    }

    /// Every mode's name.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|m| m.name()).collect()
    }

    /// What the mode opens.
    pub const fn backend(self) -> Backend {
        match self {
            Self::VfioType1 => Backend::Container { path: "/dev/vfio/vfio", iommu_type: VFIO_TYPE1_IOMMU },
            Self::VfioType1v2 => Backend::Container { path: "/dev/vfio/vfio", iommu_type: VFIO_TYPE1V2_IOMMU },
            Self::IommufdCompatType1 => Backend::Container { path: "/dev/iommu", iommu_type: VFIO_TYPE1_IOMMU },
            Self::IommufdCompatType1v2 => Backend::Container { path: "/dev/iommu", iommu_type: VFIO_TYPE1V2_IOMMU },
            Self::Iommufd => Backend::Iommufd,
        }
    }

    /// Whether devices join through a VFIO container (and their group), not a cdev.
    pub const fn is_container(self) -> bool {
        matches!(self.backend(), Backend::Container { .. })
    }

    /// Whether the mode has TYPE1 (v1) semantics: an unmap may cover more or less than asked
    /// (legacy v1 unmaps a whole mapping or nothing; iommufd's emulation cuts an area, and
    /// disables large IOPTEs to do so).
    pub const fn is_type1_v1(self) -> bool {
        matches!(self.backend(), Backend::Container { iommu_type: VFIO_TYPE1_IOMMU, .. })
    }

    /// Whether the backend is iommufd (native or compat), which has its own rules.
    pub const fn is_iommufd(self) -> bool {
        !matches!(self, Self::VfioType1 | Self::VfioType1v2)
    }

    /// The module whose `allow_unsafe_interrupts` parameter decides whether a device may attach
    /// without MSI isolation: iommufd binds devices for its container emulation too.
    pub const fn isolation_module(self) -> &'static str {
        match self.is_iommufd() {
            true => "iommufd",
            false => "vfio_iommu_type1",
        }
    }

    /// Whether a BAR's virtual address can be DMA-mapped. Only the legacy type1 driver
    /// follows VM_PFNMAP; iommufd refuses MMIO by VA and takes a dma-buf instead.
    pub const fn allows_va_mmio(self) -> bool {
        !self.is_iommufd()
    }
}

impl fmt::Display for IommuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IommuMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| Error::UnknownMode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_is_every_mode_once_upstreams_default_first() {
        let mut preferred = IommuMode::PREFERENCE.to_vec();
        assert_eq!(preferred[0], IommuMode::Iommufd, "upstream's default_iommu_mode");
        preferred.sort_by_key(|m| m.name());
        let mut all = IommuMode::ALL.to_vec();
        all.sort_by_key(|m| m.name());
        assert_eq!(preferred, all);
    }

    #[test]
    fn names_round_trip() {
        for mode in IommuMode::ALL {
            assert_eq!(mode.name().parse::<IommuMode>().unwrap(), mode);
        }
    }

    #[test]
    fn unknown_mode_lists_the_valid_ones() {
        let err = "type2".parse::<IommuMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown IOMMU mode \"type2\": expected one of vfio_type1_iommu, vfio_type1v2_iommu, \
             iommufd_compat_type1, iommufd_compat_type1v2, iommufd"
        );
    }

    #[test]
    fn backends_follow_upstreams_modes() {
        let containers: Vec<_> = IommuMode::ALL.into_iter().filter(|m| m.is_container()).collect();
        assert_eq!(containers.len(), 4, "every mode but native iommufd is a container");
        assert_eq!(IommuMode::Iommufd.backend(), Backend::Iommufd);
        let v1: Vec<_> = IommuMode::ALL.into_iter().filter(|m| m.is_type1_v1()).collect();
        assert_eq!(v1, [IommuMode::VfioType1, IommuMode::IommufdCompatType1]);
        for mode in containers {
            let Backend::Container { path, .. } = mode.backend() else { unreachable!() };
            assert_eq!(path == "/dev/iommu", mode.is_iommufd(), "{mode}");
        }
    }

    #[test]
    fn only_legacy_type1_maps_mmio_by_va() {
        let allowed: Vec<_> = IommuMode::ALL.into_iter().filter(|m| m.allows_va_mmio()).collect();
        assert_eq!(allowed, [IommuMode::VfioType1, IommuMode::VfioType1v2]);
    }
}
