//! The TAP of several machines merged into one document: each line goes to the machine its
//! first byte names, in any order and any shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else { return };
    let machines = usize::from(shape % 4) + 1;
    let programs = usize::from(shape / 4);
    let mut out = Vec::new();
    let mut merger = ksft::Merger::new("vfio", machines, programs, &mut out);
    for line in rest.split(|&b| b == b'\n') {
        let Some((&to, line)) = line.split_first() else { continue };
        let Ok(line) = std::str::from_utf8(line) else { continue };
        merger.line(usize::from(to) % machines, line, &mut out);
    }
    merger.flush(&mut out);
});
