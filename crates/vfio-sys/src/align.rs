//! Alignment arithmetic for placing BAR mmaps so the kernel can use huge pfnmaps and IOPTEs.

/// The largest alignment worth asking for: 1 GiB, the biggest huge page on any architecture.
pub const MAX_MMAP_ALIGN: u64 = 1 << 30;

/// The alignment to place a mapping of `size` bytes with:
/// `min(next_power_of_two(max(size, page)), 1 GiB)`.
///
/// Non-power-of-two sizes round up, so a 96 KiB area still gets 128 KiB alignment and its
/// first 64 KiB can use a 64 KiB page; sub-page sizes get page alignment.
pub fn mmap_alignment(size: u64, page: u64) -> u64 {
    size.max(page).checked_next_power_of_two().unwrap_or(MAX_MMAP_ALIGN).min(MAX_MMAP_ALIGN)
}

/// The lowest address `>= addr` that is congruent to `phase` modulo `align` (a power of two).
pub fn place(addr: usize, align: usize, phase: usize) -> usize {
    debug_assert!(align.is_power_of_two() && phase < align);
    let delta = phase.wrapping_sub(addr) & (align - 1);
    addr + delta
}

/// Whether `vaddr ≡ offset (mod align)`: the condition for huge mappings of a file at `offset`.
pub fn is_congruent(vaddr: u64, offset: u64, align: u64) -> bool {
    debug_assert!(align.is_power_of_two());
    (vaddr ^ offset) & (align - 1) == 0
}

/// `x` rounded up to a multiple of `to` (a power of two), or `None` on overflow.
pub fn round_up(x: u64, to: u64) -> Option<u64> {
    debug_assert!(to.is_power_of_two());
    Some(x.checked_add(to - 1)? & !(to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: u64 = 4096;
    const G1: u64 = 1 << 30;

    #[test]
    fn alignment_follows_size_up_to_one_gib() {
        assert_eq!(mmap_alignment(2048, K4), K4, "sub-page BAR gets page alignment");
        assert_eq!(mmap_alignment(K4, K4), K4);
        assert_eq!(mmap_alignment(1 << 20, K4), 1 << 20);
        assert_eq!(mmap_alignment(96 << 10, K4), 128 << 10, "non-power-of-two rounds up");
        assert_eq!(mmap_alignment(128 << 30, K4), G1, "128 GiB BAR capped at 1 GiB");
        assert_eq!(mmap_alignment(u64::MAX, K4), G1, "no overflow");
        assert_eq!(mmap_alignment(0, K4), K4);
    }

    #[test]
    fn place_finds_next_congruent_address() {
        assert_eq!(place(0x1000, 0x10_0000, 0), 0x10_0000);
        assert_eq!(place(0x10_0000, 0x10_0000, 0), 0x10_0000, "already placed");
        assert_eq!(place(0x1000, 0x10_0000, 0x2000), 0x2000);
        assert_eq!(place(0x3000, 0x10_0000, 0x2000), 0x10_2000);
        assert_eq!(place(0x7f00_1234_5000, 1 << 30, 0x1000), 0x7f00_4000_1000);
    }

    #[test]
    fn congruence_is_modular() {
        assert!(is_congruent(0x4000_0000, 0x100_0000_0000, G1));
        assert!(is_congruent(0x7f00_4000_1000, 0x1000, G1));
        assert!(!is_congruent(0x7f00_4000_1000, 0, G1), "misaligned by a page");
        assert!(is_congruent(0x1000, 0, K4));
    }

    #[test]
    fn round_up_checks_overflow() {
        assert_eq!(round_up(2048, K4), Some(K4));
        assert_eq!(round_up(K4, K4), Some(K4));
        assert_eq!(round_up(0, K4), Some(0));
        assert_eq!(round_up(u64::MAX - 5, K4), None);
    }
}
