//! The tests that need their own `main()` (they boot the emulated machine, or re-run themselves
//! as a child) still report as libtest does: each check is a named trial, and the run ends with
//! `test result: … N passed`, so `cargo test`, `cargo nextest` and CI parsers count them and
//! `--list` and name filters work. Output is never captured: a VM's progress shows as it goes.

#![allow(dead_code)] // Each includer uses what it needs.

pub use libtest_mimic::Completion;
use libtest_mimic::{Arguments, Trial};

/// Runs the trials one at a time (each may boot a VM on a two-core host) unless
/// `--test-threads` says otherwise, and exits with libtest's code.
pub fn main(trials: Vec<Trial>) -> ! {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(1);
    libtest_mimic::run(&args, trials).exit()
}

/// A check that passes unless it panics.
pub fn check(name: &str, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}

/// A check that can find it has nothing to check here (no kernel source, say): it returns
/// `Completion::ignored_with(why)`, which libtest shows as ignored, with the reason.
pub fn check_if(name: &str, body: impl FnOnce() -> Completion + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || Ok(body()))
}
