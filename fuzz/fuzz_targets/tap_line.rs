//! One line of TAP, as the harness's parser reads it (the guest's output, upstream's C
//! programs' output): any text must parse or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    for line in text.split('\n') {
        let _ = ksft::parse_line(line);
        let _ = ksft::running(line);
        let _ = ksft::program_named("vfio", line);
    }
});
