#!/usr/bin/env bash
# Every benchmark, one after the other (each takes under about four minutes); the exit status is non-zero
# when any of them misses a target. Needs root (a private dockerd) and what `scripts/dev test` installs.
# The 30-minute soak runs too when SOAK=1 (bench/soak.py --minutes 30).
#
#   bench/run_all.sh 2>&1 | tee bench.log
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

status=0
benches=(ingest remediate storm recovery flat_cost pg_scale)
if [[ "${SOAK:-0}" == 1 ]]; then
    benches+=(soak)
fi
for bench in "${benches[@]}"; do
    echo "== bench/$bench.py"
    if ! .venv/bin/python "bench/$bench.py"; then
        echo "== bench/$bench.py missed a target"
        status=1
    fi
done
exit "$status"
