"""The metrics that are not counted where things happen: the store's gauges, read at scrape time, the same on
every replica (design D34), and the runtime and build series the registry carries."""

from __future__ import annotations

from pathlib import Path

from engine_rig import Rig, close_all, make_policy, start
from helpers import alert
from prometheus_client import generate_latest

from remediator import __version__
from remediator.domain.story import iso
from remediator.engine.gauges import StoreGauges
from remediator.metrics import Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_the_registry_carries_process_platform_and_build_series() -> None:
    one, two = Metrics(), Metrics()  # two registries (tests, replicas in one process) never collide
    text = generate_latest(two.registry).decode()
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert f"\n{name}" in text or text.startswith(name), name
    assert value(one, "remediator_build_info", version=__version__) == 1


async def test_store_gauges_are_read_from_the_store_and_agree_across_replicas(tmp_path: Path) -> None:
    rigs: list[Rig] = []
    try:
        rig = await start(rigs, tmp_path, make_policy(within=3600))
        rig.send(alert("DatabaseDown", fingerprint="g1", container="db"))
        await rig.settle()
        (incident,) = await rig.store.open_incidents()
        now = rig.clock()
        await rig.gate.approvals.request(incident, "container.restart", 600)
        # An escalation queued 90 s ago, leased to another replica (nothing here delivers it).
        payload = {"event": "escalate", "escalated_at": iso(now - 90)}
        await rig.store.outbox_put(incident.id, "oncall", "k-1", payload, now, "elsewhere", now + 3600)
        await rig.gate.control.set_paused(True, by="test")

        # Two replicas: each its own registry, reading the one store.
        replicas = [Metrics(), Metrics()]
        for metrics in replicas:
            gauges = StoreGauges(rig.store, rig.gate, rig.intake, metrics, rig.clock)
            await gauges.refresh()
        for metrics in replicas:
            assert value(metrics, "remediator_incidents_open") == 1
            assert value(metrics, "remediator_approvals_pending") == 1
            assert value(metrics, "remediator_outbox_undelivered") == 1
            assert value(metrics, "remediator_outbox_oldest_undelivered_age_seconds") == 90
            assert value(metrics, "remediator_paused") == 1
            assert value(metrics, "remediator_dry_run") == 0
            assert value(metrics, "remediator_intake_backlog") == 0

        # A scrape within min_interval_s reuses the last read; the next one reads the store again.
        metrics = Metrics()
        gauges = StoreGauges(rig.store, rig.gate, rig.intake, metrics, rig.clock, min_interval_s=5)
        await gauges.refresh()
        await rig.gate.control.set_paused(False, by="test")
        assert await rig.gate.approvals.decide(incident.id, approve=False, by="test")
        await gauges.refresh()
        assert value(metrics, "remediator_paused") == 1
        rig.clock.advance(5)
        await gauges.refresh()
        assert value(metrics, "remediator_paused") == 0
        assert value(metrics, "remediator_approvals_pending") == 0
        assert value(metrics, "remediator_outbox_oldest_undelivered_age_seconds") == 95
    finally:
        await close_all(rigs)
