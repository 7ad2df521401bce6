//! A test harness that behaves like the kernel's `kselftest_harness.h`.
//!
//! Tests are named `fixture.variant.test`, each runs in its own child process with a timeout,
//! and the output is the same TAP 13 that `kselftest_harness.h` prints, line for line, so
//! results diff against upstream's C selftests. Exit codes follow kselftest: 0 pass, 1 fail,
//! 4 skip.
//!
//! The child is forked, as upstream's is, so a crash or hang in a test can't take the harness
//! with it. A harness with threads of its own can't fork safely; there the child is this same
//! executable, re-run with the same arguments and [`CHILD_ENV`] naming the one test to run
//! ([`run_child`] answers it).

#![deny(unsafe_code, missing_docs)]

mod filter;
mod merge;
mod runner;
mod sys;
mod tap;

pub use filter::{Filter, Filters};
pub use merge::Merger;
pub use runner::{Program, Prologue, Refusal, Summary, list_tests, run_child, run_programs};
pub use tap::{
    Tap, TapLine, parse_line, program_exit_code, program_header, program_named, program_result_line, result_line,
    run_marker, running,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// kselftest exit code: all passed.
pub const KSFT_PASS: i32 = 0;
/// kselftest exit code: something failed.
pub const KSFT_FAIL: i32 = 1;
/// kselftest exit code: expected failure.
pub const KSFT_XFAIL: i32 = 2;
/// kselftest exit code: unexpected pass.
pub const KSFT_XPASS: i32 = 3;
/// kselftest exit code: skipped.
pub const KSFT_SKIP: i32 = 4;

/// The environment variable that tells a re-executed child which test to run (when the harness
/// has threads and so runs its children that way).
pub const CHILD_ENV: &str = "KSFT_CHILD_TEST";

/// The default per-test timeout, as in kselftest_harness.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A test's result as kselftest counts it: the one verdict type of the harness, the TAP
/// parser, and whatever reports results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "lowercase"))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename_all = "lowercase"))]
pub enum Status {
    /// It passed.
    Pass,
    /// It failed.
    Fail,
    /// It could not run here.
    Skip,
    /// It failed, as expected.
    XFail,
    /// It passed, though a failure was expected.
    XPass,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 5] = [Self::Pass, Self::Fail, Self::Skip, Self::XFail, Self::XPass];

    /// The kselftest exit code that carries it.
    pub const fn code(self) -> i32 {
        match self {
            Self::Pass => KSFT_PASS,
            Self::Fail => KSFT_FAIL,
            Self::Skip => KSFT_SKIP,
            Self::XFail => KSFT_XFAIL,
            Self::XPass => KSFT_XPASS,
        }
    }

    /// The status an exit code carries; any code kselftest doesn't define is a failure.
    pub const fn from_code(code: i32) -> Self {
        match code {
            KSFT_PASS => Self::Pass,
            KSFT_SKIP => Self::Skip,
            KSFT_XFAIL => Self::XFail,
            KSFT_XPASS => Self::XPass,
            _ => Self::Fail,
        }
    }

    /// The status a TAP result line carries: `ok`/`not ok` and its directive, if any.
    pub fn from_tap(ok: bool, directive: Option<&str>) -> Self {
        match (ok, directive) {
            (false, _) => Self::Fail,
            (true, Some("SKIP")) => Self::Skip,
            (true, Some("XFAIL")) => Self::XFail,
            (true, Some("XPASS")) => Self::XPass,
            (true, _) => Self::Pass,
        }
    }

    /// The TAP directive that marks it (`SKIP`, `XFAIL`, `XPASS`), if any.
    pub const fn directive(self) -> Option<&'static str> {
        match self {
            Self::Skip => Some("SKIP"),
            Self::XFail => Some("XFAIL"),
            Self::XPass => Some("XPASS"),
            Self::Pass | Self::Fail => None,
        }
    }

    /// Whether the harness prints `OK` for it: everything but a failure. (kselftest_harness
    /// also prints `OK` for XPASS, and counts it in the `passed` total.)
    pub const fn is_ok(self) -> bool {
        !matches!(self, Self::Fail)
    }

    /// The lowercase name: `pass`, `fail`, `skip`, `xfail`, `xpass`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::XFail => "xfail",
            Self::XPass => "xpass",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| format!("unknown test status {s:?}"))
    }
}

/// Why a test did not pass: what a test body returns instead of `Ok(())`.
///
/// A `?` on an error makes it a [`Verdict::Fail`] unless the error says it means "this
/// machine can't do that": errors that can tell implement `From<E> for Verdict` themselves
/// (the `vfio` crate's do); any other standard error converts through [`Verdict::from_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It could not run here; the reason says why.
    Skip(String),
    /// It ran and something was wrong.
    Fail(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip(reason) => write!(f, "SKIP: {reason}"),
            Self::Fail(message) => f.write_str(message),
        }
    }
}

impl Verdict {
    /// The status this verdict gives the test.
    pub const fn status(&self) -> Status {
        match self {
            Self::Skip(_) => Status::Skip,
            Self::Fail(_) => Status::Fail,
        }
    }

    /// The SKIP reason or failure message.
    pub fn reason(&self) -> &str {
        match self {
            Self::Skip(reason) | Self::Fail(reason) => reason,
        }
    }

    /// A failure for an error that can't say what it means.
    pub fn from_error(e: &dyn std::error::Error) -> Self {
        Self::Fail(e.to_string())
    }
}

impl From<std::io::Error> for Verdict {
    fn from(e: std::io::Error) -> Self {
        Self::from_error(&e)
    }
}

/// What a test returns: `Ok(())` passes, `Err` skips or fails with a message.
pub type Outcome = Result<(), Verdict>;

/// The one verdict of work split into labelled parts (a thread per device, say): any failure
/// fails it, naming every failed part; else any skip skips it, naming every skipped part; else
/// it passes. One part's SKIP can never hide another's FAIL.
pub fn combine<L: fmt::Display>(parts: impl IntoIterator<Item = (L, Outcome)>) -> Outcome {
    let (mut failed, mut skipped) = (Vec::new(), Vec::new());
    for (label, outcome) in parts {
        match outcome {
            Ok(()) => {}
            Err(Verdict::Fail(message)) => failed.push(format!("{label}: {message}")),
            Err(Verdict::Skip(reason)) => skipped.push(format!("{label}: {reason}")),
        }
    }
    match (failed.is_empty(), skipped.is_empty()) {
        (false, _) => Err(Verdict::Fail(failed.join("; "))),
        (true, false) => Err(Verdict::Skip(skipped.join("; "))),
        (true, true) => Ok(()),
    }
}

/// Fails the test with a formatted message and the source location unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::Verdict::Fail(format!("{}:{}: {}", file!(), line!(), format!($($arg)+))));
        }
    };
}

/// Fails the test unless the two values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::ensure_eq!($left, $right, "")
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => if l != r {
                return Err($crate::Verdict::Fail(format!(
                    "{}:{}: expected {} == {}: {:?} != {:?} {}",
                    file!(), line!(), stringify!($left), stringify!($right), l, r, format!($($arg)+)
                )));
            }
        }
    };
}

/// Skips the test with a formatted reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {
        return Err($crate::Verdict::Skip(format!($($arg)+)))
    };
}

/// One test case: `fixture.variant.test`, with its body.
#[derive(Clone)]
pub struct Test {
    /// Fixture name.
    pub fixture: String,
    /// Variant name; empty for a fixture without variants.
    pub variant: String,
    /// Test name.
    pub name: String,
    /// Time limit for the child.
    pub timeout: Duration,
    /// A known bug this test fails by, where it runs: then its failure is an XFAIL naming the
    /// bug, and a pass an XPASS (the bug is gone: time to drop the mark).
    pub known_bug: Option<String>,
    body: Arc<dyn Fn() -> Outcome + Send + Sync>,
}

impl fmt::Debug for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Test").field("name", &self.full_name()).field("timeout", &self.timeout).finish()
    }
}

impl Test {
    /// A test with the default timeout.
    pub fn new(
        fixture: impl Into<String>,
        variant: impl Into<String>,
        name: impl Into<String>,
        body: impl Fn() -> Outcome + Send + Sync + 'static,
    ) -> Self {
        Self {
            fixture: fixture.into(),
            variant: variant.into(),
            name: name.into(),
            timeout: DEFAULT_TIMEOUT,
            known_bug: None,
            body: Arc::new(body),
        }
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What a run of it gave, `status` with `reason`, once its known bug is counted: a
    /// failure is an XFAIL naming the bug, a pass an XPASS.
    pub fn expected(&self, status: Status, reason: Option<String>) -> (Status, Option<String>) {
        match (&self.known_bug, status) {
            (Some(bug), Status::Fail) => (Status::XFail, Some(bug.clone())),
            (Some(bug), Status::Pass) => (Status::XPass, Some(format!("passed despite the known bug: {bug}"))),
            _ => (status, reason),
        }
    }

    /// `fixture.variant.test`, or `fixture.test` without a variant.
    pub fn full_name(&self) -> String {
        match self.variant.is_empty() {
            true => format!("{}.{}", self.fixture, self.name),
            false => format!("{}.{}.{}", self.fixture, self.variant, self.name),
        }
    }

    /// Runs the body in this process.
    pub fn run_here(&self) -> Outcome {
        (self.body)()
    }
}

/// A test body that runs on a set-up fixture.
pub type TestFn<F> = fn(&mut F) -> Outcome;

/// A test body that also reads its variant, as upstream's `TEST_F` bodies read `variant`.
pub type VariantTestFn<F, V> = fn(&mut F, &V) -> Outcome;

/// How a case's body is called.
enum Body<F, V> {
    Fixture(TestFn<F>),
    WithVariant(VariantTestFn<F, V>),
}

// Function pointers are `Copy` whatever `F` and `V` are; a derive would demand `F: Copy`.
impl<F, V> Clone for Body<F, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F, V> Copy for Body<F, V> {}

/// One row of a fixture's test table: the test's name, its body and its time limit
/// (upstream's `TEST_F` / `TEST_F_TIMEOUT`).
pub struct Case<F, V = ()> {
    name: &'static str,
    body: Body<F, V>,
    timeout: Duration,
}

impl<F, V> Case<F, V> {
    /// A test with the default timeout.
    pub const fn new(name: &'static str, body: TestFn<F>) -> Self {
        Self { name, body: Body::Fixture(body), timeout: DEFAULT_TIMEOUT }
    }

    /// A test whose body also takes the variant.
    pub const fn with_variant(name: &'static str, body: VariantTestFn<F, V>) -> Self {
        Self { name, body: Body::WithVariant(body), timeout: DEFAULT_TIMEOUT }
    }

    /// The same test with its own time limit.
    pub const fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }
}

/// A fixture's teardown, upstream's `FIXTURE_TEARDOWN`: it runs after the test whatever the
/// test's outcome, and a failed check in it fails the test, even one that passed or skipped.
pub trait Teardown: Sized {
    /// Releases the fixture, checking each step.
    fn teardown(self) -> Outcome;
}

/// A fixture that holds nothing to release.
impl Teardown for () {
    fn teardown(self) -> Outcome {
        Ok(())
    }
}

/// The verdict of a test and then its teardown: the test's own failure comes first (with the
/// teardown's, if that failed too); otherwise a failed teardown fails the test.
fn after_teardown(test: Outcome, teardown: Outcome) -> Outcome {
    match (test, teardown) {
        (Err(Verdict::Fail(test)), Err(teardown)) => {
            Err(Verdict::Fail(format!("{test}\nteardown also failed: {}", teardown.reason())))
        }
        (Err(Verdict::Fail(test)), Ok(())) => Err(Verdict::Fail(test)),
        (_, Err(teardown)) => Err(Verdict::Fail(format!("teardown: {}", teardown.reason()))),
        (test, Ok(())) => test,
    }
}

/// The process's open file descriptors and what each refers to (`/proc/self/fd`); empty where
/// there is no procfs.
fn open_fds() -> BTreeMap<i32, String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return BTreeMap::new() };
    dir.flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?.display().to_string();
            // The listing's own fd, open only while this runs.
            let listing = target.starts_with("/proc/") && target.ends_with("/fd");
            (!listing).then_some((fd, target))
        })
        .collect()
}

/// A failure naming every fd open `after` that was not open `before`: a test and its teardown
/// must close what they open (a leaked device or container fd also keeps its mappings alive).
fn fds_left_open(before: &BTreeMap<i32, String>, after: &BTreeMap<i32, String>) -> Outcome {
    let leaked: Vec<String> = after
        .iter()
        .filter(|(fd, target)| before.get(fd) != Some(target))
        .map(|(fd, target)| format!("{fd} ({target})"))
        .collect();
    match leaked.is_empty() {
        true => Ok(()),
        false => Err(Verdict::Fail(format!("file descriptors left open: {}", leaked.join(", ")))),
    }
}

/// Builds the tests of one fixture: every variant × every test, in declaration order, as
/// kselftest_harness does. Setup is `setup(variant)`; after the test, [`Teardown::teardown`].
pub fn fixture<F: Teardown + 'static, V: Clone + Send + Sync + 'static>(
    fixture: &str,
    variants: &[(&str, V)],
    setup: impl Fn(&V) -> Result<F, Verdict> + Send + Sync + Clone + 'static,
    tests: &[Case<F, V>],
) -> Vec<Test> {
    let mut out = Vec::new();
    for (variant_name, variant) in variants {
        for case in tests {
            let (variant, setup, body) = (variant.clone(), setup.clone(), case.body);
            let test = Test::new(fixture, *variant_name, case.name, move || {
                let before = open_fds();
                let outcome = setup(&variant).and_then(|mut fixture| {
                    let outcome = match body {
                        Body::Fixture(body) => body(&mut fixture),
                        Body::WithVariant(body) => body(&mut fixture, &variant),
                    };
                    after_teardown(outcome, fixture.teardown())
                });
                after_teardown(outcome, fds_left_open(&before, &open_fds()))
            });
            out.push(test.with_timeout(case.timeout));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_bug_turns_a_failure_into_xfail_and_a_pass_into_xpass() {
        let mut test = Test::new("f", "v", "t", || Ok(()));
        assert_eq!(test.expected(Status::Fail, Some("boom".into())), (Status::Fail, Some("boom".into())));
        test.known_bug = Some("QEMU bug".into());
        assert_eq!(test.expected(Status::Fail, Some("boom".into())), (Status::XFail, Some("QEMU bug".into())));
        let (status, reason) = test.expected(Status::Pass, None);
        assert_eq!(status, Status::XPass);
        assert!(reason.unwrap().contains("QEMU bug"));
        assert_eq!(test.expected(Status::Skip, Some("no".into())), (Status::Skip, Some("no".into())), "a skip stays");
    }

    #[test]
    fn an_fd_opened_and_not_closed_is_named() {
        let before = BTreeMap::from([(0, "/dev/null".to_owned()), (3, "/dev/vfio/vfio".to_owned())]);
        assert_eq!(fds_left_open(&before, &before), Ok(()));
        let mut after = before.clone();
        after.insert(4, "/dev/vfio/devices/vfio0".into());
        after.insert(3, "anon_inode:dmabuf".into());
        assert_eq!(
            fds_left_open(&before, &after),
            Err(Verdict::Fail("file descriptors left open: 3 (anon_inode:dmabuf), 4 (/dev/vfio/devices/vfio0)".into())),
            "a reused number with a new file counts too"
        );
        let closed = BTreeMap::from([(0, "/dev/null".to_owned())]);
        assert_eq!(fds_left_open(&before, &closed), Ok(()), "closing more than was opened is fine");
    }

    #[test]
    fn this_process_sees_its_own_fds() {
        let before = open_fds();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let during = open_fds();
        assert!(fds_left_open(&before, &during).unwrap_err().reason().contains("/proc/"), "{during:?}");
        drop(file);
        assert_eq!(fds_left_open(&before, &open_fds()), Ok(()));
    }

    #[test]
    fn a_failing_part_wins_over_skipping_ones_and_every_failure_is_named() {
        let (fail, skip) = (|m: &str| Err(Verdict::Fail(m.into())), |m: &str| Err(Verdict::Skip(m.into())));
        assert_eq!(combine([("a", Ok(())), ("b", Ok(()))]), Ok(()));
        assert_eq!(combine(Vec::<(&str, Outcome)>::new()), Ok(()));
        assert_eq!(combine([("a", skip("no reset")), ("b", fail("EIO"))]), fail("b: EIO"), "the skip comes first");
        assert_eq!(combine([("a", fail("EIO")), ("b", skip("x")), ("c", fail("ENOENT"))]), fail("a: EIO; c: ENOENT"));
        assert_eq!(
            combine([("a", Ok(())), ("b", skip("no cdev")), ("c", skip("no cdev"))]),
            skip("b: no cdev; c: no cdev")
        );
    }

    #[test]
    fn a_failed_teardown_fails_the_test_but_never_hides_its_failure() {
        let fail = |m: &str| Err(Verdict::Fail(m.into()));
        let skip = Err(Verdict::Skip("no reset".into()));
        assert_eq!(after_teardown(Ok(()), Ok(())), Ok(()));
        assert_eq!(after_teardown(skip.clone(), Ok(())), skip);
        assert_eq!(after_teardown(Ok(()), fail("close: EBADF")), fail("teardown: close: EBADF"));
        assert_eq!(after_teardown(skip, fail("close: EBADF")), fail("teardown: close: EBADF"));
        assert_eq!(after_teardown(fail("map"), Ok(())), fail("map"));
        assert_eq!(after_teardown(fail("map"), fail("close")), fail("map\nteardown also failed: close"));
    }
}
