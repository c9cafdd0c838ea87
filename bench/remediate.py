"""Remediate: from the POST of a firing alert to the container restarted, against a raw docker SDK restart of
the same container, measured in the same run on a private Docker daemon (tests/realparts/).

Times come from the daemon's own event stream: `kill` is the first thing a restart does, `restart` is logged
once the container runs again. Both paths do the same Docker restart, so remediator's overhead is entirely
before the restart begins: it is measured as (POST -> kill) minus (SDK call -> kill), per pair of
iterations, which is free of the restart's own jitter (tens of ms). POST -> restarted is shown too.

Each iteration: remediator gets a new firing alert for the target (a new incident), the bench waits for the
restart, sends "resolved" and waits for the incident to close; then the SDK restarts the same container.
Two policies: one whose ladder is just the restart (the target applies to it), and the shipped
policies/database-down.yaml, which first collects the container's logs as evidence (informational). Both
have their limits (cooldown, rate limit, flapping) and the global budget lifted: restarting one container
forty times a minute is exactly what they exist to refuse.

Target: overhead p50 < 20 ms.

    .venv/bin/python bench/remediate.py [--iterations 20]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import common
from common import Row

RESTART_ONLY = """\
name: bench-restart
match:
  - alertname = BenchDown
target:
  kind: container
  from_label: container
  allow: ["bench-db"]
steps:
  - act: container.restart
    with: {timeout_s: 10}
    verify: {resolved_within_s: 120}
"""


_seq = itertools.count()


def via_remediator(
    daemon: common.Process, events: common.Events, alertname: str, container: str
) -> tuple[int, int]:
    """(ns from POST to kill, ns from POST to restarted)."""
    i = next(_seq)
    starts_at = f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}Z"
    firing = common.alert_json(alertname, f"rem-{i}", starts_at=starts_at, container=container)
    events.drain(container)
    t0 = time.time_ns()
    common.http_json(daemon.url + "/alerts", method="POST", body=common.notification_json(firing))
    kill = events.wait(container, "kill")
    restarted = events.wait(container, "restart")
    resolved = {**firing, "status": "resolved"}
    common.http_json(daemon.url + "/alerts", method="POST", body=common.notification_json(resolved))
    common.wait_for(
        lambda: (
            not common.http_json(daemon.url + "/api/incidents?status=active")["incidents"]
            and not common.http_json(daemon.url + "/api/incidents?status=escalated")["incidents"]
        ),
        timeout=30,
        what="incident resolved",
    )
    return kill - t0, restarted - t0


def via_sdk(client: Any, events: common.Events, container: str, timeout_s: int) -> tuple[int, int]:
    events.drain(container)
    t0 = time.time_ns()
    client.containers.get(container).restart(timeout=timeout_s)
    kill = events.wait(container, "kill")
    restarted = events.wait(container, "restart")
    return kill - t0, restarted - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start()

    realparts = common.realparts()
    work = common.workdir("remediate")
    policies = work / "policies"
    policies.mkdir()
    (policies / "00-bench-restart.yaml").write_text(common.with_limits_lifted(RESTART_ONLY))
    shipped = (common.REPO / "policies" / "database-down.yaml").read_text()
    (policies / "database-down.yaml").write_text(common.with_limits_lifted(shipped))
    docker = realparts.DockerDaemon()
    daemon = None
    events = None
    ms: dict[str, list[float]] = defaultdict(list)
    try:
        for name in ("bench-db", "sms-db"):
            docker.run_container(name)
        events = common.Events(docker.client)
        daemon = common.start_remediator(
            work,
            policies,
            REMEDIATOR_DOCKER__HOST=docker.host,
            REMEDIATOR_GUARDS__BUDGET_COUNT="100000",
            # The shipped policy verifies with a Prometheus query; none runs here (nothing answers on this
            # port), so its verification ends when the bench sends "resolved", after the measured part.
            REMEDIATOR_PROMETHEUS__URL=f"http://127.0.0.1:{realparts.free_port()}",
        )
        sdk = docker.client
        # One warm-up each: the daemon's docker client connects (and probes the API version) on first use.
        via_remediator(daemon, events, "BenchDown", "bench-db")
        via_sdk(sdk, events, "bench-db", 10)
        for i in range(args.iterations):
            r_kill, r_done = via_remediator(daemon, events, "BenchDown", "bench-db")
            s_kill, s_done = via_sdk(sdk, events, "bench-db", 10)
            ms["rem kill"].append(r_kill / 1e6)
            ms["rem done"].append(r_done / 1e6)
            ms["sdk kill"].append(s_kill / 1e6)
            ms["sdk done"].append(s_done / 1e6)
            ms["overhead"].append((r_kill - s_kill) / 1e6)
            ms["overhead e2e"].append((r_done - s_done) / 1e6)
            d_kill, d_done = via_remediator(daemon, events, "DatabaseDown", "sms-db")
            s2_kill, _ = via_sdk(sdk, events, "sms-db", 30)
            ms["shipped kill"].append(d_kill / 1e6)
            ms["shipped done"].append(d_done / 1e6)
            ms["shipped overhead"].append((d_kill - s2_kill) / 1e6)
            if (i + 1) % 5 == 0:
                print(
                    f"{i + 1}/{args.iterations}: overhead median so far {common.median(ms['overhead']):.1f} ms",
                    flush=True,
                )
        rss = daemon.peak_rss_mb()
    finally:
        if daemon is not None:
            daemon.stop()
        if events is not None:
            events.close()
        docker.close()

    m = {k: common.median(v) for k, v in ms.items()}
    overhead_ok = m["overhead"] < 20
    rows = [
        Row("POST -> restart begins (kill)", m["rem kill"], m["sdk kill"], "ms", digits=1),
        Row("POST -> container restarted", m["rem done"], m["sdk done"], "ms", digits=1),
        Row("overhead p50, restart-only policy", m["overhead"], None, "ms", "< 20", overhead_ok, 1),
        Row(
            "  overhead p90",
            common.percentile(ms["overhead"], 90),
            None,
            "ms",
            digits=1,
        ),
        Row("  overhead p50, end to end (restart jitter included)", m["overhead e2e"], None, "ms", digits=1),
        Row(
            "shipped database-down policy (logs first): POST -> kill",
            m["shipped kill"],
            m["sdk kill"],
            "ms",
            digits=1,
        ),
        Row("  its overhead p50 (the diagnosis included)", m["shipped overhead"], None, "ms", digits=1),
        Row("remediator peak RSS", rss, None, "MiB", digits=0),
    ]
    note = (
        f"{args.iterations} paired iterations (after one warm-up), medians; baseline: "
        f"docker SDK containers.get(name).restart(). {common.command_line()}"
    )
    met = common.print_table(
        "remediate: firing alert to container restarted", rows, "docker SDK", note, audit
    )
    shutil.rmtree(Path(work), ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
