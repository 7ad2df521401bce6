#!/bin/sh
# The steps of contrib/lava/vfiotest.yaml: fetch vfiotest, setup, run, cleanup, and report every
# verdict to LAVA. Usage: run-vfiotest.sh URL "BDF ..." [REQUIRE] ["PROGRAM ..."]
set -u
url=$1 devices=$2 require=${3:-} programs=${4:-}
[ -n "$url" ] && [ -n "$devices" ] || { echo "usage: $0 URL 'BDF ...' [REQUIRE] ['PROGRAM ...']" >&2; exit 1; }

signal() { echo "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=$1 RESULT=$2>"; }

bin=$(mktemp -d)/vfiotest
if command -v curl >/dev/null; then fetch="curl -fsSL -o $bin $url"; else fetch="wget -q -O $bin $url"; fi
if ! $fetch || ! chmod +x "$bin"; then signal vfiotest-fetch fail; exit 1; fi
signal vfiotest-fetch pass

# shellcheck disable=SC2086 # BDFs and programs are words.
if ! "$bin" setup $devices; then signal vfiotest-setup fail; exit 1; fi
signal vfiotest-setup pass
trap '"$bin" cleanup $devices' EXIT

results=$(mktemp --suffix=.json)
# shellcheck disable=SC2086
"$bin" run ${require:+--require "$require"} --results "$results" --junit "${results%.json}.xml" $programs $devices
code=$?
# Exit codes are kselftest's: 0 pass, 1 fail, 4 skip.
case $code in 0) signal vfiotest-run pass ;; 4) signal vfiotest-run skip ;; *) signal vfiotest-run fail ;; esac
"$bin" report "$results" --lava
exit 0
