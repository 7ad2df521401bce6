#!/bin/bash
# Runs every fuzz target for a number of executions each (default 1,000,000), starting from
# the committed seeds; what the fuzzer finds new stays in fuzz/corpus, a crash in
# fuzz/artifacts. Usage: fuzz/run.sh [RUNS | --seconds N]
set -euo pipefail
cd "$(dirname "$0")"
limit=(-runs="${1:-1000000}")
[[ "${1:-}" == --seconds ]] && limit=(-max_total_time="$2")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    # -rss_limit_mb and -timeout turn an OOM or a hang into a failure, like a crash.
    cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        "${limit[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 |
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)|ERROR|SUMMARY|panicked' |
        sed "s/^/[$target] /"
done
