//! The JSON vfiotest reads back: a results document (`vfiotest report`), a bench run
//! (`vfiotest bench-report`), the setup state file, and the guest's payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(results) = vfiotest_report::Results::from_json(text) {
        // What is read must also be written out in every format without a panic.
        let _ = vfiotest_report::kcidb::document(&results, "fuzz");
        let _ = vfiotest_report::junit::document(&results);
        let _ = vfiotest_report::lava::signals(&results);
    }
    let _ = vfiotest::bench::report::SavedBench::parse(text);
    let _ = vfiotest::setup::State::parse(text);
    let _ = serde_json::from_str::<vfiotest::guest::protocol::Payload>(text);
});
