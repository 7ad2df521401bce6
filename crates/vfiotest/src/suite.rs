//! `vfiotest run`'s arguments: the programs, the devices, kselftest's filters and the
//! requirements, parsed by one parser wherever they are read: by `vfiotest run` itself, and by
//! `vfiotest vm` for the guest's run.

use clap::{ArgAction, Args, FromArgMatches};
use ksft::{Filter, Filters};
use vfio::Bdf;

use crate::{Fatal, programs};

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Program names to run (else all of them), then the devices to run on (else
    /// $VFIO_SELFTESTS_BDF).
    #[arg(value_name = "PROGRAM|BDF")]
    pub targets: Vec<String>,
    /// Include tests named NAME.
    #[arg(short = 't', value_name = "NAME", action = ArgAction::Append)]
    test: Vec<String>,
    /// Exclude tests named NAME.
    #[arg(short = 'T', value_name = "NAME", action = ArgAction::Append)]
    no_test: Vec<String>,
    /// Include fixture NAME.
    #[arg(short = 'f', value_name = "NAME", action = ArgAction::Append)]
    fixture: Vec<String>,
    /// Exclude fixture NAME.
    #[arg(short = 'F', value_name = "NAME", action = ArgAction::Append)]
    no_fixture: Vec<String>,
    /// Include variant NAME.
    #[arg(short = 'v', value_name = "NAME", action = ArgAction::Append)]
    variant: Vec<String>,
    /// Exclude variant NAME.
    #[arg(short = 'V', value_name = "NAME", action = ArgAction::Append)]
    no_variant: Vec<String>,
    /// Run only fixture.variant.test.
    #[arg(short = 'r', value_name = "NAME", action = ArgAction::Append)]
    run: Vec<String>,
    /// List every test (upstream's table, on stderr) and exit 4, as kselftest_harness does.
    #[arg(short = 'l')]
    pub list: bool,
    /// Enable debug prints. Accepted for kselftest_harness compatibility: none of the ported
    /// tests prints debug messages, upstream's included.
    #[arg(short = 'd')]
    debug: bool,
    /// Features this kernel must have, comma-separated, or `all`: a test that would SKIP for
    /// want of one FAILs instead, naming it. Features: iommufd, container, cdev, dma-buf,
    /// hugetlb-2m, hugetlb-1g, iommu-pgtables, sr-iov, irq-remap (see the README).
    #[arg(long, value_name = "FEATURES", env = "VFIOTEST_REQUIRE")]
    pub require: Option<String>,
    /// Tests that fail by a known bug, as `PATTERN=BUG`: PATTERN matches `program/test`
    /// (`vfio_pci_driver_test 0000:01:00.0/vfio_pci_driver_test.iommufd.memcpy_success`; `*`
    /// matches anything). Such a test's failure is an XFAIL naming BUG, its pass an XPASS.
    #[arg(long = "known-bug", value_name = "PATTERN=BUG", value_parser = KnownBug::parse)]
    pub known_bugs: Vec<KnownBug>,
    /// Make the DMA drivers fake a fault (`driver-wedge`: every copy wedges the engine and its
    /// recovery fails), to show that the tests fail when a driver does.
    #[arg(long, value_name = "FAULT", hide = true)]
    pub inject_fault: Option<String>,
    /// Only these programs of the run, by their index in it (the vm runner's share of the
    /// programs for one of several machines).
    #[arg(long, value_delimiter = ',', hide = true)]
    pub units: Vec<usize>,
    /// The filters in command-line order (first match wins), rebuilt from the options above.
    #[arg(skip)]
    pub filters: Filters,
}

impl RunArgs {
    /// Parses `vfiotest run`'s arguments (without the `run`), filters in their order.
    ///
    /// # Errors
    /// clap's complaint, in one line.
    pub fn parse_from(args: &[String]) -> Result<Self, Fatal> {
        let command = Self::augment_args(clap::Command::new("run").no_binary_name(true));
        let matches = command.try_get_matches_from(args).map_err(|e| Fatal::fail(crate::clap_error_line(&e)))?;
        let mut parsed = Self::from_arg_matches(&matches).map_err(|e| Fatal::fail(e.to_string()))?;
        parsed.filters = filters_in_order(&matches);
        Ok(parsed)
    }
}

/// Tests that fail by a known bug (`--known-bug`).
#[derive(Clone, Debug)]
pub struct KnownBug {
    pattern: glob::Pattern,
    bug: String,
}

impl KnownBug {
    /// `PATTERN=BUG`.
    ///
    /// # Errors
    /// No `=`, an empty bug, or a malformed pattern, in one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (pattern, bug) = text.split_once('=').ok_or("expected PATTERN=BUG")?;
        if bug.trim().is_empty() {
            return Err("the bug after '=' is empty".to_owned());
        }
        let pattern = glob::Pattern::new(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        Ok(Self { pattern, bug: bug.to_owned() })
    }

    /// Marks each test of `programs` the pattern matches with the bug.
    pub fn mark(&self, programs: &mut [ksft::Program]) {
        for program in programs {
            for test in &mut program.tests {
                if self.pattern.matches(&format!("{}/{}", program.name, test.full_name())) {
                    test.known_bug = Some(self.bug.clone());
                }
            }
        }
    }
}

/// kselftest filters are decided by the first match, so their command-line order matters.
pub fn filters_in_order(m: &clap::ArgMatches) -> Filters {
    type MakeFilter = fn(String) -> Filter;
    let kinds: [(&str, MakeFilter); 7] = [
        ("test", |n| Filter::Test(true, n)),
        ("no_test", |n| Filter::Test(false, n)),
        ("fixture", |n| Filter::Fixture(true, n)),
        ("no_fixture", |n| Filter::Fixture(false, n)),
        ("variant", |n| Filter::Variant(true, n)),
        ("no_variant", |n| Filter::Variant(false, n)),
        ("run", Filter::Run),
    ];
    let mut indexed = Vec::new();
    for (id, make) in kinds {
        if let (Some(values), Some(indices)) = (m.get_many::<String>(id), m.indices_of(id)) {
            indexed.extend(indices.zip(values.cloned().map(make)));
        }
    }
    indexed.sort_by_key(|(i, _)| *i);
    Filters(indexed.into_iter().map(|(_, f)| f).collect())
}

/// Splits `run`'s positional arguments into the program names they start with (none: all
/// programs) and the devices.
pub fn resolve_targets(targets: &[String]) -> Result<(Vec<&'static str>, Vec<Bdf>), Fatal> {
    let program_named = |t: &String| programs::PROGRAMS.iter().find(|p| p.name == t).map(|p| p.name);
    let names: Vec<&'static str> = targets.iter().map_while(program_named).collect();
    let rest = &targets[names.len()..];
    let mut bdfs = rest
        .iter()
        .map(|t| {
            t.parse::<Bdf>().map_err(|e| match t.contains(':') {
                true => Fatal::fail(e.to_string()),
                false => Fatal::fail(format!("{t:?} is neither a test program (see `vfiotest list`) nor a BDF")),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if bdfs.is_empty()
        && let Ok(env) = std::env::var("VFIO_SELFTESTS_BDF")
    {
        bdfs = env.split_whitespace().map(|s| s.parse::<Bdf>()).collect::<Result<_, _>>()?;
    }
    // A device named twice would be opened twice by one program; upstream's harness takes each
    // once.
    if let Some(twice) = bdfs.iter().enumerate().find_map(|(i, b)| bdfs[..i].contains(b).then_some(b)) {
        return Err(Fatal::fail(format!("{twice} is named twice")));
    }
    Ok((names, bdfs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_command_line_order() {
        let args: Vec<String> = ["-T", "foo", "-v", "bla", "-t", "x"].map(String::from).to_vec();
        assert_eq!(
            RunArgs::parse_from(&args).unwrap().filters.0,
            [Filter::Test(false, "foo".into()), Filter::Variant(true, "bla".into()), Filter::Test(true, "x".into())]
        );
    }

    #[test]
    fn targets_split_into_programs_and_devices() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (p, b) = resolve_targets(&args(&["vfio_dma_mapping_mmio_test", "0000:00:03.0"])).unwrap();
        assert_eq!(p, ["vfio_dma_mapping_mmio_test"]);
        assert_eq!(b.len(), 1);
        let two = ["vfio_p2p_dma_test", "vfio_dma_buf_test", "0000:00:03.0", "0000:00:05.0"];
        let (p, b) = resolve_targets(&args(&two)).unwrap();
        assert_eq!((p, b.len()), (vec!["vfio_p2p_dma_test", "vfio_dma_buf_test"], 2));
        let (p, b) = resolve_targets(&args(&["0000:00:03.0"])).unwrap();
        assert!(p.is_empty() && b.len() == 1, "no program named: all of them");
        let err = resolve_targets(&args(&["0000:00:03.0", "vfio_dma_buf_test"])).unwrap_err();
        assert!(err.message.contains("neither a test program"), "programs come first: {}", err.message);
        let err = resolve_targets(&args(&["nonsense"])).unwrap_err();
        assert_eq!(err.message, "\"nonsense\" is neither a test program (see `vfiotest list`) nor a BDF");
        assert_eq!(err.code, ksft::KSFT_FAIL);
        let err = resolve_targets(&args(&["0000:00:zz.0"])).unwrap_err();
        assert!(err.message.starts_with("invalid BDF"), "{}", err.message);
    }

    #[test]
    fn a_known_bug_marks_the_tests_its_pattern_matches() {
        let bdfs: Vec<Bdf> = vec!["0000:01:00.0".parse().unwrap(), "0000:00:05.0".parse().unwrap()];
        let mut catalogue = programs::catalogue(&["vfio_pci_driver_test"], &bdfs);
        let bug = KnownBug::parse("vfio_pci_driver_test 0000:01:00.0/*.memcpy_success=QEMU bug").unwrap();
        bug.mark(&mut catalogue);
        let marked: Vec<String> = catalogue
            .iter()
            .flat_map(|p| {
                p.tests.iter().filter(|t| t.known_bug.is_some()).map(move |t| format!("{} {}", p.name, t.name))
            })
            .collect();
        assert_eq!(marked.len(), 5, "one per IOMMU mode, on that device only: {marked:?}");
        assert!(marked.iter().all(|m| m.contains("0000:01:00.0") && m.ends_with("memcpy_success")), "{marked:?}");
        assert_eq!(KnownBug::parse("no-equals").unwrap_err(), "expected PATTERN=BUG");
        assert_eq!(KnownBug::parse("a/*= ").unwrap_err(), "the bug after '=' is empty");
        assert!(KnownBug::parse("[=x").unwrap_err().starts_with("pattern \"[\""));
    }
}
