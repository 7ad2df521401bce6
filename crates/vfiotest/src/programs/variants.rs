//! Variants: one table of IOMMU modes, expanded the way upstream's
//! `FIXTURE_VARIANT_ADD_ALL_IOMMU_MODES` does.

use vfio::IommuMode;

/// The variants that replicate a fixture across every IOMMU mode.
pub fn mode_variants() -> Vec<(&'static str, IommuMode)> {
    mode_variants_where(|_| true)
}

/// [`mode_variants`] for the modes a fixture applies to, in upstream's order.
pub fn mode_variants_where(applies: impl Fn(IommuMode) -> bool) -> Vec<(&'static str, IommuMode)> {
    IommuMode::ALL.iter().filter(|&&m| applies(m)).map(|&m| (m.name(), m)).collect()
}

/// Upstream's `FIXTURE_VARIANT_ADD_ALL_IOMMU_MODES(suffix, ...)` once per suffix, in order:
/// every mode with the first suffix, then every mode with the next; each named
/// `<mode>_<suffix>` and built by `make(mode, parameter)`.
pub fn mode_variants_by<T: Copy, V>(suffixes: &[(&str, T)], make: impl Fn(IommuMode, T) -> V) -> Vec<(String, V)> {
    suffixes
        .iter()
        .flat_map(|&(suffix, parameter)| IommuMode::ALL.iter().map(move |&mode| (mode, suffix, parameter)))
        .map(|(mode, suffix, parameter)| (format!("{}_{suffix}", mode.name()), make(mode, parameter)))
        .collect()
}
