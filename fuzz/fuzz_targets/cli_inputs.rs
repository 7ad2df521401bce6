//! What a user types: a BDF (or `VFIO_SELFTESTS_BDF`), a feature list for `--require`, a
//! `--known-bug`, and `vfiotest run`'s arguments with kselftest's filters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfiotest::suite::{KnownBug, RunArgs};

fuzz_target!(|text: &str| {
    let _ = text.parse::<vfio::Bdf>();
    let _ = vfio::Feature::parse_list(text);
    let _ = KnownBug::parse(text);
    let args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if let Ok(run) = RunArgs::parse_from(&args) {
        let _ = vfiotest::suite::resolve_targets(&run.targets);
    }
});
