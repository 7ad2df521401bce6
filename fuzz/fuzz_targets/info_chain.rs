//! What the kernel returns for VFIO's info ioctls: a fixed part and a chain of capabilities
//! linked by offsets (a region's info, with sparse mmap areas; any info's chain). A broken
//! chain, a cycle or an offset past the buffer must be refused, never followed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let first = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let fixed_len = usize::from(data[4]);
    let index = u32::from(data[5] % 10);
    let buf = &data[6..];
    let _ = vfio::caps::walk_chain(buf, first, fixed_len, "fuzzed info");
    if let Ok(region) = vfio::RegionInfo::parse(index, buf) {
        let _ = region.mmap_areas();
    }
});
