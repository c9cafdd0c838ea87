#!/usr/bin/env bash
# Every benchmark, one after the other (each takes under about two minutes); the exit status is non-zero
# when any of them misses a target. Needs root (a private dockerd) and what `scripts/dev test` installs.
#
#   bench/run_all.sh 2>&1 | tee bench.log
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

status=0
for bench in ingest remediate storm recovery; do
    echo "== bench/$bench.py"
    if ! .venv/bin/python "bench/$bench.py"; then
        echo "== bench/$bench.py missed a target"
        status=1
    fi
done
exit "$status"
