//! What the emulated machine sends: the results port (the init's marks, the suite's TAP, the
//! bench's JSON) and the kernel's console, read by the host's console reader; and the guest's
//! kernel command line, read by its init.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfiotest::guest::protocol::{GuestMark, Switches};
use vfiotest::vm::console::Console;

fuzz_target!(|text: &str| {
    let mut results_port = Console::new("vfio_dma_mapping_test");
    let mut tap_only = Console::reading_tap("vfio_dma_mapping_test 0000:00:03.0");
    for line in text.split('\n') {
        let _ = GuestMark::parse(line);
        results_port.feed(line);
        results_port.feed_console(line);
        tap_only.feed(line);
    }
    let _ = results_port.tally();
    let _ = tap_only.tally();
    let _ = Switches::parse(text);
});
