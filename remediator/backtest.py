"""``remediator backtest``: what the policies would have done with past alerts, acting on nothing.

The history (webhook bodies from a file, the store's own inbox, or Prometheus's ``ALERTS`` series turned into
the notifications Alertmanager would have sent) is replayed through the daemon's own parts: the real intake
(matching, targets, hosts, episodes), runner (the ladder, its attempts and verification windows), gate
(flapping, cooldown, rate limit, budget, breakers), escalator and outbox (routing by priority, P3/P4 never
page), on a throwaway SQLite store. Only the edges are stand-ins: every action answers "would have run"
without calling anything, every notifier records without sending.

Time is virtual: the replay runs on an event loop whose clock is the history's (``VirtualLoop``). When nothing
is ready to run, the loop jumps to its next timer instead of waiting, so a week of history with 300 s
verification windows takes seconds, and the runner's own ``asyncio`` waits (verification windows, approval
timeouts, the healthy floor's hold) elapse in history's time, exactly as ``serve`` would spend them. Work
handed to a thread (the store's fsync) runs inline, so no real wait can ever let virtual time run ahead.

How the parts of a ladder that need a live system are read (docs/design.md, D44; docs/operations.md, Backtest):

- verification: recovered when the alert's own resolved arrives within the step's window (the history says
  whether it resolved, and when); HTTP and Prometheus checks of a ``verify`` are not evaluated;
- the healthy floor: with ``--prometheus``, its query is evaluated at the replayed time; without, it cannot be
  evaluated, is taken to hold, and the report says how many actions that concerns;
- every action and diagnosis succeeds (a must-pass check passes); nobody answers an approval request, so its
  timeout decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import selectors
import statistics
import tempfile
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from remediator.actions.base import Action, Params, ProbeResult
from remediator.actions.catalogue import SPECS
from remediator.actions.probes import instant_answer
from remediator.domain.alerts import Notification
from remediator.domain.clock import Clock
from remediator.domain.incidents import AuditRecord, Incident, StepRecord
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.engine.outbox import Outbox
from remediator.engine.runner import Runner
from remediator.errors import RemediatorError
from remediator.escalation.base import Notifiers
from remediator.metrics import Metrics
from remediator.settings import Settings
from remediator.store.base import Store
from remediator.store.sqlite import SqliteStore

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

OWNER = "backtest"
LEASE_S = 10 * 365 * 86_400.0
"""One process replays alone on its own store: its leases never need renewing, so they last the replay."""
SETTLE_S = 86_400.0
"""After the last notification, the longest the replay lets ladders run on (verification windows, approvals)."""
_SETTLE_STEP_S = 30.0
_IDLE_REAL_S = 0.05
_STUCK_REAL_S = 30.0

# The backend each action reports (its breaker's name), as the real actions of the catalogue name it.
_BACKENDS = {"postgres": "postgres", "http": "http"}


# ---------------------------------------------------------------------------------------------------------
# Virtual time


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, when no file is ready, moves the loop's virtual clock to the next timer instead of
    waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.jump: Callable[[float], None] = lambda seconds: None
        self._idle = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            self._idle = 0
            return ready
        if timeout is None:
            # Nothing is scheduled: only a file could wake the loop, and nothing in a replay waits on one. A
            # replay that stays so is stuck (a bug): said, rather than waited on forever.
            self._idle += 1
            if self._idle * _IDLE_REAL_S > _STUCK_REAL_S:
                raise RuntimeError(f"the replay waited {_STUCK_REAL_S:g}s with nothing scheduled: stuck")
            return super().select(_IDLE_REAL_S)
        self._idle = 0
        self.jump(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and jumps over every idle wait, and whose executor work runs
    inline (so a thread can never be outrun by the virtual clock). ``clock`` is the replayed Unix time.

    ``time()`` counts from 0 at ``start``: a Unix time's float has steps of about 2e-7 s, coarser than the
    loop's clock resolution, and a timer due at such a time might never be reached exactly."""

    def __init__(self, start: float) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        self.start = start
        self.now = 0.0
        selector.jump = self._jump

    def _jump(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.now

    def clock(self) -> float:
        """The replayed Unix time (the Clock every part of the replay is given)."""
        return self.start + self.now

    def run_in_executor(  # type: ignore[override]  # any executor: the work runs inline
        self, executor: object, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # delivered to the awaiting coroutine, as a thread's error would be
            future.set_exception(exc)
        return future


# ---------------------------------------------------------------------------------------------------------
# Stand-ins at the edges


@dataclass
class StandInAction:
    """An action of the catalogue that runs nothing: the step is recorded by the runner as it would be."""

    name: str
    kind: Literal["act", "diagnose"]
    params_model: type[Params]
    backend: str

    async def run(self, target: str, params: Params, host: str = "default") -> str:
        return f"backtest: {self.name} would have run on {target} (host {host})"


@dataclass
class StandInNotifier:
    """A notifier that sends nothing; ``pages`` as the real one of that name (PagerDuty pages)."""

    name: str
    pages: bool = False
    sent: int = 0

    async def send(self, payload: Any, dedup_key: str) -> None:
        self.sent += 1

    async def close(self) -> None:
        return None


def stand_in_actions() -> dict[str, Action]:
    """Every action of the catalogue, by name, with the real one's kind, parameters and backend."""
    actions: dict[str, Action] = {}
    for name, spec in SPECS.items():
        params = spec.params
        assert issubclass(params, Params), name  # every catalogue action's parameters are Params
        backend = _BACKENDS.get(name.split(".")[0], "docker")
        actions[name] = StandInAction(name, spec.kind, params, backend)
    return actions


def stand_in_notifiers(settings: Settings) -> Notifiers:
    """The configured notifiers' names, each a stand-in that pages when the real one does, with the routing."""
    escalation = settings.escalation
    paging = set(escalation.pagerduty)
    return Notifiers(
        {name: StandInNotifier(name, name in paging) for name in sorted(escalation.notifier_names())},
        escalation.routing,
    )


@dataclass
class HistoryProbe:
    """The checks of a ladder, read from history: a healthy floor's query at the replayed time (when a
    Prometheus is given; otherwise not evaluable and taken to hold), and no verification check (the alert's own
    resolution decides)."""

    floors: dict[int, str]
    """id() of each policy's healthy-floor check -> the policy's name."""
    clock: Clock
    prometheus_url: str | None = None
    timeout_s: float = 10.0
    evaluated: Counter[str] = field(default_factory=Counter)
    not_evaluable: Counter[str] = field(default_factory=Counter)

    async def check(self, spec: Any) -> ProbeResult:
        policy = self.floors.get(id(spec))
        if policy is None:
            return ProbeResult(None, "not evaluated in a backtest: the alert's resolution decides")
        if self.prometheus_url is None:
            self.not_evaluable[policy] += 1
            return ProbeResult(True, "healthy floor not evaluable without --prometheus: taken to hold")
        self.evaluated[policy] += 1
        # Blocking, on purpose: the virtual clock must not move while Prometheus answers.
        query = urllib.parse.urlencode({"query": spec.query, "time": f"{self.clock():.3f}"})
        try:
            status, raw = _get(f"{self.prometheus_url.rstrip('/')}/api/v1/query?{query}", self.timeout_s)
        except OSError as exc:
            return ProbeResult(None, f"prometheus unreachable: {exc}")
        return instant_answer(status, raw)


# No proxy from the environment, as the daemon's probes (trust_env=False): Prometheus is asked directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout_s: float) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (checked above)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# ---------------------------------------------------------------------------------------------------------
# Sources: what the daemon would have received, and when


@dataclass(frozen=True)
class Delivery:
    """One notification and the Unix time the daemon would have received it."""

    at: float
    notification: Notification


def received_at(notification: Notification) -> float:
    """When a webhook body with no time of its own was sent: its latest change, i.e. the latest ``startsAt``
    of its firing alerts and ``endsAt`` of its resolved ones."""
    times = [
        (a.ends_at or a.starts_at).timestamp() if a.status == "resolved" else a.starts_at.timestamp()
        for a in notification.alerts
    ]
    return max(times)


def read_jsonl(path: Path, max_body_bytes: int) -> list[Delivery]:
    """Webhook bodies, one JSON object a line: a body, or ``{"at": UNIX_OR_ISO, "body": BODY}`` with the time it
    was received. Blank lines and lines starting with ``#`` are skipped."""
    deliveries: list[Delivery] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if len(text) > max_body_bytes:
                raise RemediatorError(f"{path}:{number}: over {max_body_bytes} bytes")
            try:
                raw = json.loads(text)
                at: float | None = None
                if isinstance(raw, dict) and "body" in raw and "alerts" not in raw:
                    at = _time_of(raw.get("at"))
                    raw = raw["body"]
                notification = Notification.model_validate(raw)
            except (ValueError, ValidationError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RemediatorError(
                    f"{path}:{number}: not an Alertmanager webhook v4 body: {reason}"
                ) from exc
            deliveries.append(Delivery(received_at(notification) if at is None else at, notification))
    return sorted(deliveries, key=lambda d: d.at)


def _time_of(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_time(value)
    raise ValueError(f"'at' is neither a Unix time nor an ISO time: {value!r}")


def parse_time(value: str) -> float:
    """A Unix time, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        return float(value)
    except ValueError:
        pass
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: str) -> float:
    """``90s``, ``15m``, ``6h``, ``7d``, ``2w`` in seconds."""
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"not a duration (like 90s, 15m, 6h, 7d, 2w): {value!r}")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


async def read_inbox(store: Store, since: float, until: float) -> list[Delivery]:
    """What this daemon received from ``since`` to ``until``, at the time it received each (read only). A row
    whose body no longer validates is skipped, as intake sets it aside."""
    deliveries = []
    for at, body in await store.inbox_received(since, until):
        try:
            deliveries.append(Delivery(at, Notification.model_validate_json(body)))
        except ValidationError:
            logger.warning("an inbox row received at %s no longer validates; skipped", at)
    return deliveries


# -- Prometheus's ALERTS series ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertmanagerTiming:
    """How Alertmanager would have delivered the alerts (the receiver's route; deploy/alertmanager's defaults)."""

    group_wait_s: float = 0.0
    """From an alert's first firing evaluation to its firing notification."""
    group_interval_s: float = 30.0
    """From an alert's resolution to its resolved notification (the latest the next flush can send it)."""


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over the sorted names and values, 0xff between)."""
    value = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def alerts_samples(
    url: str, start: float, end: float, timeout_s: float = 30.0, chunk_s: float = 86_400.0
) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """The raw samples of ``ALERTS{alertstate="firing"}`` from ``start`` to ``end``, per label set (without
    ``__name__`` and ``alertstate``): their times, ascending. Read with range selectors of at most a day, so no
    step or lookback blurs when an alert started or stopped."""
    series: dict[tuple[tuple[str, str], ...], set[float]] = defaultdict(set)
    at = end
    while at > start:
        span = min(chunk_s, at - start)
        query = urllib.parse.urlencode(
            {"query": f'ALERTS{{alertstate="firing"}}[{math.ceil(span)}s]', "time": f"{at:.3f}"}
        )
        try:
            status, raw = _get(f"{url.rstrip('/')}/api/v1/query?{query}", timeout_s)
        except OSError as exc:
            raise RemediatorError(f"prometheus at {url}: {exc}") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise RemediatorError(
                f"prometheus at {url} answered {status} with a body that is not JSON"
            ) from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise RemediatorError(f"prometheus at {url} answered {status}: {error or 'no result'}")
        for item in body["data"]["result"]:
            labels = {k: v for k, v in item["metric"].items() if k not in ("__name__", "alertstate")}
            key = tuple(sorted(labels.items()))
            series[key].update(float(t) for t, _ in item["values"] if start <= float(t) <= end)
        at -= span
    return {key: sorted(times) for key, times in series.items() if times}


def interval_of(series: Iterable[Sequence[float]], default_s: float = 60.0) -> float:
    """The rule evaluation interval, as the median gap between consecutive samples of every series."""
    gaps = [b - a for times in series for a, b in itertools.pairwise(times) if b > a]
    return statistics.median(gaps) if gaps else default_s


def episodes(times: Sequence[float], interval_s: float) -> list[tuple[float, float]]:
    """(first, last) sample time of each episode: a gap of more than two evaluation intervals ends one (one
    missed evaluation does not)."""
    found: list[tuple[float, float]] = []
    for t in times:
        if found and t - found[-1][1] <= 2 * interval_s:
            found[-1] = (found[-1][0], t)
        else:
            found.append((t, t))
    return found


def deliveries_from_alerts(
    samples: dict[tuple[tuple[str, str], ...], list[float]],
    end: float,
    timing: AlertmanagerTiming,
    interval_s: float | None = None,
    generator_url: str = "",
) -> list[Delivery]:
    """The notifications Alertmanager would have sent for these ALERTS series: per episode, a firing at its
    first sample + group_wait (``startsAt`` = that first sample, as Prometheus sends FiredAt), and, when it
    ended before ``end``, a resolved at its resolution (the first evaluation without it: last sample + the
    interval) + group_interval, ``endsAt`` = that resolution. One alert a notification (each its own group)."""
    interval = interval_s or interval_of(samples.values())
    deliveries: list[Delivery] = []
    for key, times in samples.items():
        labels = dict(key)
        fp = fingerprint(labels)
        for first, last in episodes(times, interval):
            alert = {
                "labels": labels,
                "annotations": {},
                "startsAt": _iso(first),
                "generatorURL": generator_url,
                "fingerprint": fp,
            }
            deliveries.append(_one(first + timing.group_wait_s, {**alert, "status": "firing"}))
            resolved_at = last + interval
            if resolved_at <= end:
                ended = {**alert, "status": "resolved", "endsAt": _iso(resolved_at)}
                deliveries.append(_one(resolved_at + timing.group_interval_s, ended))
    return sorted(deliveries, key=lambda d: (d.at, d.notification.status != "resolved"))


def _one(at: float, alert: dict[str, Any]) -> Delivery:
    body = {
        "version": "4",
        "status": alert["status"],
        "receiver": "backtest",
        "groupKey": f"backtest:{alert['fingerprint']}",
        "groupLabels": {"alertname": alert["labels"].get("alertname", "")},
        "alerts": [alert],
    }
    return Delivery(at, Notification.model_validate(body))


def read_prometheus(
    url: str, start: float, end: float, timing: AlertmanagerTiming, interval_s: float | None = None
) -> list[Delivery]:
    """The notifications Alertmanager would have sent for Prometheus's ALERTS from ``start`` to ``end``."""
    samples = alerts_samples(url, start, end)
    return deliveries_from_alerts(samples, end, timing, interval_s, generator_url=url)


# ---------------------------------------------------------------------------------------------------------
# The replay


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
    report["from"] = _iso(start) if ordered else None
    report["to"] = _iso(ordered[-1].at) if ordered else None
    report["problems"] = problems.lines
    return report


# ---------------------------------------------------------------------------------------------------------
# What the store says happened


_DEDUP = re.compile(r"^remediator-(\d+)-(-?\d+)-(.+)$")


def _hour(ts: float) -> str:
    return datetime.fromtimestamp(ts - ts % 3600, UTC).strftime("%Y-%m-%dT%H:00Z")


async def summarize(store: Store, policies: Sequence[Policy], settings: Settings) -> dict[str, Any]:
    """Per policy, from a store a daemon or a replay wrote: incidents opened, targets refused at intake, the
    actions that ran (step, target, host, time), diagnoses, refusals by reason, verifications, escalations and
    pages by priority, the busiest hour. The same reading for ``serve``'s store and a replay's, so the two can
    be compared."""
    paging = set(settings.escalation.pagerduty)
    rows: dict[str, dict[str, Any]] = {p.name: _empty(p) for p in policies}
    incidents = await store.list_incidents(limit=1_000_000_000)
    for incident in sorted(incidents, key=lambda i: i.id):
        row = rows.setdefault(incident.policy, _empty(None))
        steps = await store.steps(incident.id)
        trail = await store.audit_trail(incident.id, limit=1_000_000_000)
        _count(row, incident, steps, trail, paging)
    unmatched = await store.audit_trail(None, limit=1_000_000_000, kinds=["unmatched"])
    for row in rows.values():
        _busiest(row)
    return {
        "policies": rows,
        "unmatched_alerts": sum(1 for r in unmatched if r.incident_id is None),
    }


def _empty(policy: Policy | None) -> dict[str, Any]:
    return {
        "mode": policy.mode if policy is not None else "removed",
        "incidents": 0,
        "refused_targets": 0,
        "actions": [],
        "diagnoses": 0,
        "refusals": {},
        "verified": 0,
        "not_recovered": 0,
        "approvals_requested": 0,
        "escalations": {},
        "pages": {},
        "_opened_at": [],
    }


def _count(
    row: dict[str, Any],
    incident: Incident,
    steps: list[StepRecord],
    trail: list[AuditRecord],
    paging: set[str],
) -> None:
    row["incidents"] += 1
    row["_opened_at"].append(incident.opened_at)
    refusals: Counter[str] = Counter(row["refusals"])
    escalations: Counter[str] = Counter(row["escalations"])
    pages: Counter[str] = Counter(row["pages"])
    escalated: set[int] = set()  # the step indexes this incident escalated from (one escalation each)
    for record in trail:
        if record.kind in ("refused", "dry_run"):
            refusals[str(record.detail.get("reason", record.kind))] += 1
        elif record.kind in ("verified", "not_recovered"):
            row[record.kind] += 1
        elif record.kind == "approval_queued":
            row["approvals_requested"] += 1
        elif record.kind == "escalation_queued":
            found = _DEDUP.match(str(record.detail.get("dedup_key", "")))
            step = int(found.group(2)) if found else 0
            priority = str(record.detail.get("priority", "unknown"))
            if step not in escalated:
                escalated.add(step)
                escalations[priority] += 1
                if step == -1:
                    # Escalated by intake itself: the target (or its host) was refused; no ladder ran.
                    row["refused_targets"] += 1
                    refusals["allow_list"] += 1
            if str(record.detail.get("notifier", "")) in paging:
                pages[priority] += 1
    row["refusals"] = dict(sorted(refusals.items()))
    row["escalations"] = dict(sorted(escalations.items()))
    row["pages"] = dict(sorted(pages.items()))
    for act in steps:
        if act.kind == "diagnose":
            row["diagnoses"] += 1
        elif act.kind == "act":
            row["actions"].append(
                {
                    "at": _iso(act.started_at),
                    "ts": act.started_at,
                    "step": act.name,
                    "target": incident.target,
                    "host": incident.host,
                    "incident": incident.id,
                }
            )


def _busiest(row: dict[str, Any]) -> None:
    """The clock hour (UTC) with the most incidents opened and actions run together; the earliest on a tie."""
    opened: Counter[str] = Counter(_hour(t) for t in row.pop("_opened_at"))
    acted: Counter[str] = Counter(_hour(a["ts"]) for a in row["actions"])
    hours = sorted(set(opened) | set(acted), key=lambda h: (-(opened[h] + acted[h]), h))
    row["busiest_hour"] = (
        {"hour": hours[0], "incidents": opened[hours[0]], "actions": acted[hours[0]]} if hours else None
    )
    row["actions"].sort(key=lambda a: (a["ts"], a["incident"]))


# ---------------------------------------------------------------------------------------------------------
# Output


def render(
    report: dict[str, Any], table: Callable[[Sequence[str] | None, Iterable[Sequence[object]]], str]
) -> str:
    """The report as people read it: one row per policy, then every action that would have run."""
    lines = [
        f"backtest of {report['notifications']} notifications "
        f"({', '.join(f'{n} {s}' for s, n in sorted(report['alerts'].items())) or 'no alerts'}) "
        f"from {report['from'] or '-'} to {report['to'] or '-'}: nothing was executed, nobody was paged",
        "",
    ]
    rows = []
    for name, row in sorted(report["policies"].items()):
        busiest = row["busiest_hour"]
        rows.append(
            [
                name,
                row["mode"],
                row["incidents"],
                len(row["actions"]),
                f"{row['verified']}/{row['not_recovered']}",
                _pairs(row["refusals"]),
                _pairs(row["escalations"]),
                _pairs(row["pages"]),
                f"{busiest['hour']} ({busiest['incidents']} inc, {busiest['actions']} act)"
                if busiest
                else "",
            ]
        )
    headers = ["POLICY", "MODE", "INCIDENTS", "ACTIONS", "RECOVERED/NOT", "REFUSED", "ESCALATED", "PAGES"]
    lines.append(table([*headers, "BUSIEST HOUR"], rows))
    actions = [
        [a["at"], name, a["step"], a["target"], a["host"], a["incident"]]
        for name, row in sorted(report["policies"].items())
        for a in row["actions"]
    ]
    if actions:
        lines += ["", "actions that would have run:"]
        lines.append(table(["TIME", "POLICY", "STEP", "TARGET", "HOST", "INCIDENT"], sorted(actions)))
    floors = [
        f"  {name}: {row['healthy_floor']}"
        for name, row in sorted(report["policies"].items())
        if row.get("healthy_floor", "none") != "none"
    ]
    if floors:
        lines += ["", "healthy floors:", *floors]
    lines.append("")
    lines.append(f"alerts no policy takes: {report['unmatched_alerts']}")
    if report.get("unfinished_ladders"):
        lines.append(
            f"ladders still running {SETTLE_S:g}s after the history ends: {report['unfinished_ladders']}"
        )
    for problem in report.get("problems", []):
        lines.append(f"problem during the replay: {problem}")
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
