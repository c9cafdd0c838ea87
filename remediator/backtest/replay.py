"""The replay itself: the daemon's own intake, runner, gate, escalator and outbox assembled as ``app.py``
builds them, on a throwaway SQLite store, with stand-ins at the edges, driven through the history on the
virtual clock; and the run that wraps it (the loop, the temporary store, the engine's log) into a report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from remediator.backtest.loop import VirtualLoop
from remediator.backtest.sources import Delivery
from remediator.backtest.standins import HistoryProbe, StandInNotifier, stand_in_actions, stand_in_notifiers
from remediator.backtest.summary import summarize
from remediator.backtest.times import iso
from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.engine.outbox import Outbox
from remediator.engine.runner import Runner
from remediator.escalation.base import Notifiers
from remediator.metrics import Metrics
from remediator.settings import Settings
from remediator.store.sqlite import SqliteStore

OWNER = "backtest"
LEASE_S = 10 * 365 * 86_400.0
"""One process replays alone on its own store: its leases never need renewing, so they last the replay."""
SETTLE_S = 86_400.0
"""After the last notification, the longest the replay lets ladders run on (verification windows, approvals)."""
_SETTLE_STEP_S = 30.0


@dataclass
class Replay:
    """The parts of one replay, as the daemon builds them (app.py), with stand-ins at the edges."""

    store: SqliteStore
    intake: Intake
    runner: Runner
    escalator: Escalator
    probe: HistoryProbe
    notifiers: Notifiers


def assemble(
    store: SqliteStore, policies: Sequence[Policy], settings: Settings, clock: Clock, prometheus: str | None
) -> tuple[Replay, Gate]:
    metrics = Metrics(CollectorRegistry())
    notifiers = stand_in_notifiers(settings)
    gate = Gate(store, settings.guards, metrics, clock)
    outbox = Outbox(
        store,
        notifiers,
        StandInNotifier("log"),
        gate.circuits,
        metrics,
        clock,
        settings.escalation.attempts,
        settings.escalation.backoff_max_s,
        owner=OWNER,
        lease_s=LEASE_S,
    )
    escalator = Escalator(store, outbox, metrics, clock)
    floors = {id(p.healthy_floor.prometheus): p.name for p in policies if p.healthy_floor is not None}
    probe = HistoryProbe(floors, clock, prometheus)
    runner = Runner(
        store,
        stand_in_actions(),
        {"prometheus": probe, "http": probe},
        gate,
        escalator,
        metrics,
        clock,
        lease_s=LEASE_S,
    )
    intake = Intake(
        store,
        policies,
        runner,
        escalator,
        metrics,
        clock,
        owner=OWNER,
        lease_s=LEASE_S,
        docker_hosts=settings.docker.fleet().keys(),
    )
    return Replay(store, intake, runner, escalator, probe, notifiers), gate


async def _replay(
    deliveries: Sequence[Delivery],
    policies: Sequence[Policy],
    settings: Settings,
    path: Path,
    prometheus: str | None,
    enforce: bool,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualLoop)
    clock: Clock = loop.clock
    store = SqliteStore(path)
    await store.open()
    replay, gate = assemble(store, policies, settings, clock, prometheus)
    worker: asyncio.Task[None] | None = None
    try:
        await gate.load()
        if enforce:
            for policy in policies:
                if policy.mode != "enforce":
                    await gate.control.set_mode(policy.name, "enforce", by=OWNER)
        worker = asyncio.create_task(replay.intake.run())
        for delivery in deliveries:
            wait = delivery.at - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            body = delivery.notification.model_dump_json(by_alias=True)
            replay.intake.submit(await store.inbox_put(body, clock()), delivery.notification)
        await replay.intake.join()
        horizon = loop.time() + SETTLE_S
        # Polled, not awaited on an event: in virtual time each sleep is a jump, not a wait.
        while replay.runner.running and loop.time() < horizon:  # noqa: ASYNC110
            await asyncio.sleep(_SETTLE_STEP_S)
        unfinished = replay.runner.running
        await asyncio.sleep(_SETTLE_STEP_S)  # the last deliveries of the outbox
        report = await summarize(store, policies, settings)
        report["unfinished_ladders"] = unfinished
        for name, row in report["policies"].items():
            row["healthy_floor"] = _floor_note(
                name, policies, replay.probe.evaluated[name], replay.probe.not_evaluable[name]
            )
        return report
    finally:
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await replay.runner.drain(0)
        await replay.escalator.drain(0)
        await store.close()


def _floor_note(name: str, policies: Sequence[Policy], evaluated: int, not_evaluable: int) -> str:
    policy = next((p for p in policies if p.name == name), None)
    if policy is None or policy.healthy_floor is None:
        return "none"
    if not_evaluable:
        return f"not evaluable (no Prometheus at replay time): taken to hold for {not_evaluable} check(s)"
    if evaluated:
        return f"evaluated at the replayed time ({evaluated} check(s))"
    return "not reached"


class _Problems(logging.Handler):
    """Counts what went wrong inside the replay (a ladder's unexpected error), so the report can say so."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run(
    deliveries: Sequence[Delivery],
    policies: Sequence[Policy],
    settings: Settings,
    *,
    prometheus: str | None = None,
    enforce: bool = False,
    quiet: bool = True,
) -> dict[str, Any]:
    """Replay ``deliveries`` through ``policies`` on a throwaway store in virtual time; the report (a dict, as
    ``-o json`` prints it). ``prometheus``: evaluate healthy floors there at the replayed time. ``enforce``:
    policies in shadow mode are replayed as enforced. ``quiet``: the engine's log lines below ERROR are held
    back (the report says what they would)."""
    ordered = sorted(deliveries, key=lambda d: d.at)
    start = ordered[0].at if ordered else 0.0
    engine_log = logging.getLogger("remediator")
    problems = _Problems()
    level = engine_log.level
    engine_log.addHandler(problems)
    if quiet:
        engine_log.setLevel(logging.ERROR)
    loop = VirtualLoop(start - 1.0)
    try:
        with tempfile.TemporaryDirectory(prefix="remediator-backtest-") as tmp:
            report = loop.run_until_complete(
                _replay(ordered, policies, settings, Path(tmp) / "backtest.sqlite3", prometheus, enforce)
            )
    finally:
        loop.close()
        engine_log.removeHandler(problems)
        engine_log.setLevel(level)
    report["notifications"] = len(ordered)
    report["alerts"] = dict(Counter(a.status for d in ordered for a in d.notification.alerts))
    report["from"] = iso(start) if ordered else None
    report["to"] = iso(ordered[-1].at) if ordered else None
    report["problems"] = problems.lines
    return report
