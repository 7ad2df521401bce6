#!/bin/sh
# How long a kernel developer waits, measured as a user gets it (issue 8's goals):
#   warm, whole catalogue:  `vfiotest vm`, boot → verdict          (goal ≤ 60 s)
#   warm, one program:      `vfiotest vm --device 0000:00:03.0 -- vfio_dma_mapping_mmio_test`
#   cold (--cold):          the README's main command with an empty cache and target dir,
#                           start → first verdict, kernel build included   (goal ≤ 6 min)
# Run from the repository root. Prints one line per number; exits 1 if a run fails.
set -eu

cold=false
[ "${1:-}" = "--cold" ] && cold=true

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Runs "$@", shows its stderr summary, and prints the seconds from start to its first TAP
# result line and to its end (boot → verdict is vfiotest's own report).
timed() {
    log=$(mktemp)
    start=$(now)
    first=""
    "$@" 2>"$log" | while IFS= read -r line; do
        case "$line" in
            "ok "* | "not ok "* | "# ok "* | "# not ok "*)
                [ -e "$log.first" ] || now >"$log.first" ;;
        esac
    done
    end=$(now)
    [ -e "$log.first" ] && first=$(secs "$start" "$(cat "$log.first")")
    summary=$(grep -E '^\[vm\] [0-9]+ tests:' "$log" || true)
    rm -f "$log" "$log.first"
    [ -n "$summary" ] || { echo "run failed: $*" >&2; return 1; }
    echo "  first verdict ${first:-?} s, end $(secs "$start" "$end") s; ${summary#\[vm\] }"
}

cargo build --release --quiet
bin=target/x86_64-unknown-linux-gnu/release/vfiotest
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)"

echo "warm, whole catalogue: $bin vm"
timed "$bin" vm
echo "warm, one program on one device: $bin vm --device 0000:00:03.0 -- vfio_dma_mapping_mmio_test"
timed "$bin" vm --device 0000:00:03.0 -- vfio_dma_mapping_mmio_test
echo "warm, one program on one device: $bin vm --device 0000:00:05.0 -- vfio_pci_driver_test"
timed "$bin" vm --device 0000:00:05.0 -- vfio_pci_driver_test

if $cold; then
    cache=$(mktemp -d) target=$(mktemp -d)
    echo "cold: VFIOTEST_CACHE=$cache CARGO_TARGET_DIR=$target cargo run --release -- vm"
    (export VFIOTEST_CACHE="$cache" CARGO_TARGET_DIR="$target"; timed cargo run --release --quiet -- vm)
    rm -rf "$cache" "$target"
fi
