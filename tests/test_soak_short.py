"""A 30-second soak (bench/soak.py) on real parts: a steady mix of new, re-sent and resolved alerts at 200/s,
real restarts on a private dockerd, and retention running every 10 s. It checks that nothing errs and nothing
is lost (every notification answered and processed, every firing decided, every incident acted on and closed),
never how fast: the speed figures are the benchmark's, run by hand (bench/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from realparts import DockerDaemon

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_half_a_minute_of_steady_load_loses_nothing_and_logs_no_error(docker_daemon: DockerDaemon) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import soak
    finally:
        sys.path.remove(str(BENCH))

    result = soak.run(
        30, docker=docker_daemon, retention_s=5, retention_interval_s=5, slice_s=30, progress=False
    )

    lost = result.lost()
    assert lost == [], "\n".join(lost)
    assert result.errors == []
    assert result.metrics["retention deleted"] > 0  # retention ran, and deleted while the load went on
    assert result.metrics["restarts ok"] >= 1
    assert result.unprocessed == 0
