#!/bin/bash
# Refresh the planner's prior, vm/program-durations.json: what each program of the default
# topology takes on the emulated machine behind each vIOMMU, with the guest clock counting
# instructions (icount) and without. `vfiotest vm` plans a run from the local history in
# ~/.cache/vfiotest and falls back to this prior, so a fresh clone's first run is split as well
# as a warm one.
#
# usage: vm/refresh-durations.sh [RUNS]   (default 3 runs of the vIOMMU matrix, about 5 min each warm)
#
# Each run records the clock its machines used; over several runs the planner places programs
# on both, so both keys fill. Commit the result with the numbers' machine in the message.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${VFIOTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfiotest}
for run in $(seq "${1:-3}"); do
    echo "[refresh] whole suite behind every vIOMMU, run $run" >&2
    cargo run --release -q -- vm --viommu all >/dev/null
done
# Over the old prior: a program the matrix ran on one clock only keeps the other clock's time.
python3 - "$cache/program-durations.json" vm/program-durations.json <<'EOF2'
import json, sys
seen, prior = (json.load(open(path)) for path in sys.argv[1:])
prior.update(seen)
with open(sys.argv[2], "w") as out:
    json.dump(dict(sorted(prior.items())), out, indent=2)
    out.write("\n")
EOF2
echo "[refresh] vm/program-durations.json: $(grep -c '"' vm/program-durations.json) programs×clocks" >&2
