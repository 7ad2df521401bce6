//! A test harness that behaves like the kernel's `kselftest_harness.h`.
//!
//! Tests are named `fixture.variant.test`, each runs in its own child process with a timeout,
//! and the output is the same TAP 13 that `kselftest_harness.h` prints, line for line, so
//! results diff against upstream's C selftests. Exit codes follow kselftest: 0 pass, 1 fail,
//! 4 skip.
//!
//! The child is this same executable, re-run with the same arguments and
//! [`CHILD_ENV`] naming the one test to run: no `fork()` in a threaded Rust process, and a
//! crash or hang in a test can't take the harness with it.

#![deny(unsafe_code, missing_docs)]

mod filter;
mod runner;
mod tap;

pub use filter::{Filter, Filters};
pub use runner::{Program, Prologue, Refusal, Summary, run_child, run_programs};
pub use tap::{Tap, TapLine, parse_line};

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

/// The environment variable that tells a re-executed child which test to run.
pub const CHILD_ENV: &str = "KSFT_CHILD_TEST";

/// The default per-test timeout, as in kselftest_harness.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a test did not pass.
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

impl<E: std::error::Error> From<E> for Verdict {
    fn from(e: E) -> Self {
        Self::Fail(e.to_string())
    }
}

/// What a test returns: `Ok(())` passes, `Err` skips or fails with a message.
pub type Outcome = Result<(), Verdict>;

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
            body: Arc::new(body),
        }
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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

/// Builds the tests of one fixture: every variant × every test, in declaration order, as
/// kselftest_harness does. Setup is `setup(variant)`; teardown is the fixture's `Drop`.
pub fn fixture<F: 'static, V: Clone + Send + Sync + 'static>(
    fixture: &str,
    variants: &[(&str, V)],
    setup: impl Fn(&V) -> Result<F, Verdict> + Send + Sync + Clone + 'static,
    tests: &[(&str, TestFn<F>)],
) -> Vec<Test> {
    let mut out = Vec::new();
    for (variant_name, variant) in variants {
        for &(test_name, body) in tests {
            let (variant, setup) = (variant.clone(), setup.clone());
            out.push(Test::new(fixture, *variant_name, test_name, move || {
                let mut fixture = setup(&variant)?;
                body(&mut fixture)
            }));
        }
    }
    out
}
