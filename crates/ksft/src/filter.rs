//! kselftest_harness's `-t -T -f -F -v -V -r` filters: checked in order, first match decides.

use crate::Test;

/// One filter option. Lower-case options include, upper-case exclude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `-t NAME` (true) / `-T NAME` (false): by test name.
    Test(bool, String),
    /// `-f NAME` / `-F NAME`: by fixture name.
    Fixture(bool, String),
    /// `-v NAME` / `-V NAME`: by variant name.
    Variant(bool, String),
    /// `-r fixture.variant.test`: exactly one test.
    Run(String),
}

impl Filter {
    fn is_positive(&self) -> bool {
        matches!(self, Self::Test(true, _) | Self::Fixture(true, _) | Self::Variant(true, _) | Self::Run(_))
    }

    /// `Some(include)` if this filter matches the test.
    fn decide(&self, test: &Test) -> Option<bool> {
        match self {
            Self::Test(include, name) => (test.name == *name).then_some(*include),
            Self::Fixture(include, name) => (test.fixture == *name).then_some(*include),
            Self::Variant(include, name) => (test.variant == *name).then_some(*include),
            Self::Run(full) => (test.full_name() == *full).then_some(true),
        }
    }
}

/// Filters in command-line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub Vec<Filter>);

impl Filters {
    /// Whether `test` runs: the first matching filter decides; with none matching, a test runs
    /// only if there are no including filters at all (so `-T foo` alone means "all but foo").
    pub fn enabled(&self, test: &Test) -> bool {
        self.0.iter().find_map(|f| f.decide(test)).unwrap_or_else(|| !self.0.iter().any(Filter::is_positive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(fixture: &str, variant: &str, name: &str) -> Test {
        Test::new(fixture, variant, name, || Ok(()))
    }

    fn on(filters: &[Filter], tests: &[Test]) -> Vec<String> {
        let filters = Filters(filters.to_vec());
        tests.iter().filter(|t| filters.enabled(t)).map(Test::full_name).collect()
    }

    fn catalogue() -> Vec<Test> {
        vec![
            t("mmio", "vfio_type1_iommu", "map_full_bar"),
            t("mmio", "vfio_type1_iommu", "map_partial_bar"),
            t("mmio", "iommufd", "map_full_bar"),
            t("other", "", "bind"),
        ]
    }

    #[test]
    fn no_filters_runs_everything() {
        assert_eq!(on(&[], &catalogue()).len(), 4);
    }

    #[test]
    fn include_by_each_kind() {
        let all = catalogue();
        assert_eq!(
            on(&[Filter::Test(true, "map_full_bar".into())], &all),
            ["mmio.vfio_type1_iommu.map_full_bar", "mmio.iommufd.map_full_bar"]
        );
        assert_eq!(on(&[Filter::Fixture(true, "other".into())], &all), ["other.bind"]);
        assert_eq!(on(&[Filter::Variant(true, "iommufd".into())], &all), ["mmio.iommufd.map_full_bar"]);
        assert_eq!(
            on(&[Filter::Run("mmio.vfio_type1_iommu.map_partial_bar".into())], &all),
            ["mmio.vfio_type1_iommu.map_partial_bar"]
        );
        assert_eq!(on(&[Filter::Run("other.bind".into())], &all), ["other.bind"]);
    }

    #[test]
    fn exclusions_alone_keep_the_rest() {
        assert_eq!(
            on(&[Filter::Variant(false, "vfio_type1_iommu".into())], &catalogue()),
            ["mmio.iommufd.map_full_bar", "other.bind"]
        );
    }

    #[test]
    fn first_match_wins() {
        // Upstream's own example: all of variant 'bla' but not test 'foo' is `-T foo -v bla`.
        let all = catalogue();
        let f = [Filter::Test(false, "map_partial_bar".into()), Filter::Variant(true, "vfio_type1_iommu".into())];
        assert_eq!(on(&f, &all), ["mmio.vfio_type1_iommu.map_full_bar"]);
        let f = [Filter::Variant(true, "vfio_type1_iommu".into()), Filter::Test(false, "map_partial_bar".into())];
        assert_eq!(on(&f, &all).len(), 2, "the include matched first");
    }
}
