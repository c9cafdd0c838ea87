"""Soak: remediator under a steady, realistic load for a long time (default 30 minutes), with retention running.

What it measures: `python -m remediator serve` (SQLite store on the real disk, JSON log) takes 200 alerts/s
(one alert per notification, open loop, keep-alive connections) of a mix:

- noise no policy takes (alertname SoakNoise): new alerts (~20%), re-sends of the ones still firing (~60%),
  and their resolutions (~20%); up to 2,000 fire at once;
- real problems (alertname SoakDown) on five busybox containers of a private dockerd (tests/realparts): each
  container gets a new episode every 30 s, re-sent every second for 14 s, then resolved. The policy restarts the
  container and verifies by the resolution, so every episode opens an incident and runs one real restart.

Retention is set short (every 60 s; inbox, incidents, audit, episodes and outbox kept 120 s; the guard windows
and budget 60 s), so it runs throughout. Sampled every 5 s: the daemon's RSS, open file descriptors
(/proc/PID/fd) and the store's size on disk (the SQLite file, its WAL and shared memory).

The baseline is the run itself: its start (after a warm-up of 5 minutes, or a fifth of a short run).
Targets: RSS growth after the warm-up < 10 MiB; ingest rate of every slice (5 minutes) within 5% of the rate
offered; store size bounded (the last slice's largest size <= 1.25 x the largest after warm-up); open fds flat
(end <= warm-up + 10); no ERROR in the daemon's log; nothing lost: every notification answered 200, every
alert counted as received, every firing got a decision (opened, attached, duplicate, stale or unmatched), no
unprocessed inbox row at the end, no incident left open, every incident opened ran its restart (or was refused
by a guard, counted).

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 200]

tests/test_soak_short.py runs it for 60 s as a test of "no error, nothing lost" only (never of speed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import scale_common
from common import Row

CONTAINERS = 5
EPISODE_PERIOD_S = 30
EPISODE_FIRING_S = 15
MAX_NOISE = 2_000
SAMPLE_S = 5.0

POLICY = """\
name: soak
match:
  - alertname = SoakDown
target:
  kind: container
  from_label: container
  allow: ["soak-[0-9]+"]
limits:
  cooldown_s: 1
  max_actions: {count: 100, window_s: 60}
  flapping: {count: 100, window_s: 60}
steps:
  - act: container.restart
    with: {timeout_s: 10}
    verify: {resolved_within_s: 60}
"""


def settings(retention_s: float, interval_s: float) -> dict[str, str]:
    return {
        "REMEDIATOR_LOG__FORMAT": "json",
        "REMEDIATOR_GUARDS__BUDGET_COUNT": "10000",
        "REMEDIATOR_GUARDS__BUDGET_WINDOW_S": "60",
        "REMEDIATOR_RETENTION__INTERVAL_S": str(interval_s),
        "REMEDIATOR_RETENTION__INBOX_S": str(retention_s),
        "REMEDIATOR_RETENTION__INCIDENTS_S": str(retention_s),
        "REMEDIATOR_RETENTION__AUDIT_S": str(retention_s),
        "REMEDIATOR_RETENTION__OUTBOX_S": str(retention_s),
        "REMEDIATOR_RETENTION__EPISODES_S": str(retention_s),
        "REMEDIATOR_PROMETHEUS__URL": "",
    }


class Mix:
    """The requests, built as they fall due; counts what was sent, by kind."""

    def __init__(self, port: int, seed: int = 14) -> None:
        self.port = port
        self.rng = random.Random(seed)
        self.noise: dict[str, str] = {}  # firing fingerprint -> startsAt
        self.noise_keys: list[str] = []
        self.serial = 0
        self.episode: dict[int, tuple[int, str, str]] = {}  # container -> (episode no, fingerprint, startsAt)
        self.schedule: list[tuple[float, int, str]] = []  # (due second, container, "fire"|"resend"|"resolve")
        self.next_plan_s = 0
        self.sent: dict[str, int] = dict.fromkeys(
            ("noise new", "noise resend", "noise resolve", "down fire", "down resend", "down resolve"), 0
        )

    @staticmethod
    def _stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"

    def _plan(self, until_s: float) -> None:
        """The SoakDown schedule up to ``until_s``: per container, an episode every EPISODE_PERIOD_S, staggered."""
        while self.next_plan_s <= until_s:
            second = self.next_plan_s
            for k in range(CONTAINERS):
                phase = (second + k * EPISODE_PERIOD_S // CONTAINERS) % EPISODE_PERIOD_S
                if phase == 0:
                    self.schedule.append((second, k, "fire"))
                elif phase < EPISODE_FIRING_S:
                    self.schedule.append((second, k, "resend"))
                elif phase == EPISODE_FIRING_S:
                    self.schedule.append((second, k, "resolve"))
            self.next_plan_s += 1

    def _down(self, k: int, what: str) -> bytes | None:
        if what == "fire":
            number = self.episode.get(k, (0, "", ""))[0] + 1
            self.episode[k] = (number, f"soakdown-{k}-{number:06d}", self._stamp(time.time()))
        elif k not in self.episode:
            return None  # the run began inside this container's cycle
        number, fingerprint, starts = self.episode[k]
        status = "resolved" if what == "resolve" else "firing"
        self.sent[f"down {what}"] += 1
        alert = common.alert_json("SoakDown", fingerprint, status, starts, container=f"soak-{k}")
        if what == "resolve":
            del self.episode[k]
        return common.post_request(self.port, common.notification_json(alert))

    def __call__(self, t: float) -> bytes:
        self._plan(t)
        while self.schedule and self.schedule[0][0] <= t:
            _, k, what = self.schedule.pop(0)
            request = self._down(k, what)
            if request is not None:
                return request
        roll = self.rng.random()
        if (roll < 0.2 or not self.noise_keys) and len(self.noise_keys) < MAX_NOISE:
            self.serial += 1
            fingerprint = f"noise-{self.serial:09d}"
            starts = self._stamp(time.time())
            self.noise[fingerprint] = starts
            self.noise_keys.append(fingerprint)
            kind, status = "noise new", "firing"
        else:
            index = self.rng.randrange(len(self.noise_keys))
            fingerprint = self.noise_keys[index]
            starts = self.noise[fingerprint]
            if roll < 0.4 or (len(self.noise_keys) >= MAX_NOISE and roll < 0.5):
                self.noise_keys[index] = self.noise_keys[-1]
                self.noise_keys.pop()
                del self.noise[fingerprint]
                kind, status = "noise resolve", "resolved"
            else:
                kind, status = "noise resend", "firing"
        self.sent[kind] += 1
        alert = common.alert_json(
            "SoakNoise",
            fingerprint,
            status,
            starts,
            instance=f"10.2.{self.serial // 250 % 250}.{self.serial % 250}",
        )
        return common.post_request(self.port, common.notification_json(alert))

    def resolve_all(self) -> list[bytes]:
        """What ends the run: every SoakDown episode still firing resolves (noise may stay firing)."""
        out = []
        for k in list(self.episode):
            request = self._down(k, "resolve")
            if request is not None:
                out.append(request)
        return out

    @property
    def firing_sent(self) -> int:
        return (
            self.sent["noise new"]
            + self.sent["noise resend"]
            + self.sent["down fire"]
            + self.sent["down resend"]
        )


@dataclass
class Sample:
    t: float
    rss: float
    fds: int
    files: int
    store: int
    db_file: int


@dataclass
class SoakResult:
    seconds: float
    rate: float
    warmup_s: float
    slice_s: float
    samples: list[Sample]
    load: scale_common.PacedResult
    sent: dict[str, int]
    firing_sent: int
    metrics: dict[str, float]
    unprocessed: int
    errors: list[str]
    warnings: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def slices(self) -> list[tuple[float, float, float]]:
        """(start s, answers/s, p99 latency ms) per slice of the load."""
        out = []
        start = 0.0
        while start < self.seconds - 1:
            end = min(start + self.slice_s, self.seconds)
            lat = [latency for at, latency in self.load.answered if start <= at < end]
            out.append((start, len(lat) / (end - start), common.percentile(lat, 99) * 1000))
            start = end
        return out

    def at(self, t: float) -> Sample:
        return min(self.samples, key=lambda s: abs(s.t - t))

    def lost(self) -> list[str]:
        """What says something was lost: empty when nothing was."""
        m = self.metrics
        problems = []
        if self.load.ok != self.load.sent:
            problems.append(
                f"{self.load.sent - self.load.ok} requests not answered 200: {self.load.statuses}"
            )
        if self.load.errors:
            problems.append(f"{len(self.load.errors)} connection errors: {self.load.errors[:3]}")
        if m["received"] != self.load.sent:
            problems.append(f"alerts received {m['received']:.0f} != sent {self.load.sent}")
        if m["firing decisions"] != self.firing_sent:
            problems.append(
                f"firing decisions {m['firing decisions']:.0f} != firing alerts sent {self.firing_sent}"
            )
        if self.unprocessed:
            problems.append(f"{self.unprocessed} inbox rows unprocessed at the end")
        if m["open incidents"]:
            problems.append(f"{m['open incidents']:.0f} incidents still open at the end")
        if m["opened"] != self.sent["down fire"]:
            problems.append(
                f"incidents opened {m['opened']:.0f} != SoakDown episodes {self.sent['down fire']}"
            )
        if m["restarts"] + m["refusals"] < m["opened"]:
            problems.append(
                f"restarts {m['restarts']:.0f} + refusals {m['refusals']:.0f} < opened {m['opened']:.0f}"
            )
        if m["retention runs ok"] < 1:
            problems.append("retention never completed a run")
        return problems


def _sampler(pid: int, store_dir: Path, samples: list[Sample], stop: threading.Event, t0: float) -> None:
    while not stop.is_set():
        try:
            fds, files = scale_common.open_fds(pid)
            samples.append(
                Sample(
                    time.monotonic() - t0,
                    scale_common.rss_mib(pid),
                    fds,
                    files,
                    scale_common.dir_bytes(store_dir),
                    (store_dir / "remediator.sqlite3").stat().st_size,
                )
            )
        except OSError:
            return
        stop.wait(SAMPLE_S)


def run(
    seconds: float,
    rate: float = 200,
    docker: Any = None,
    retention_s: float = 120,
    retention_interval_s: float = 60,
    slice_s: float = 300,
    warmup_s: float | None = None,
    progress: bool = True,
) -> SoakResult:
    """One soak of ``seconds``; ``docker`` is a realparts.DockerDaemon (one is started when None)."""
    own_docker = docker is None
    if own_docker:
        docker = scale_common.realparts().DockerDaemon()
    work = common.workdir("soak")
    policies = work / "policies"
    policies.mkdir()
    (policies / "soak.yaml").write_text(POLICY)
    warmup = warmup_s if warmup_s is not None else min(300.0, seconds / 5)
    try:
        for k in range(CONTAINERS):
            docker.run_container(f"soak-{k}")
        daemon = common.start_remediator(
            work,
            policies,
            REMEDIATOR_DOCKER__HOST=docker.host,
            **settings(retention_s, retention_interval_s),
        )
        samples: list[Sample] = []
        stop = threading.Event()
        t0 = time.monotonic()
        sampler = threading.Thread(
            target=_sampler, args=(daemon.pid, work / "state", samples, stop, t0), daemon=True
        )
        sampler.start()
        mix = Mix(daemon.port)
        try:

            def tick(t: float) -> None:
                if progress and int(t) % 60 == 0 and samples:
                    s = samples[-1]
                    print(
                        f"  {t / 60:5.1f} min: RSS {s.rss:.1f} MiB, fds {s.fds}, store {s.store / 2**20:.1f} MiB,"
                        f" backlog {common.backlog(daemon)}",
                        flush=True,
                    )

            load = asyncio.run(scale_common.paced_load(daemon.port, mix, rate, seconds, on_tick=tick))
            ends = mix.resolve_all()
            for request in ends:
                status = asyncio.run(_send_one(daemon.port, request))
                load.sent += 1
                load.statuses[status] = load.statuses.get(status, 0) + 1
                load.ok += status == 200
            common.wait_drained(daemon, timeout=120)

            def settled() -> bool:
                text = common.http_text(daemon.url + "/metrics")
                return common.metric_sum(text, "remediator_incidents_open") == 0

            common.wait_for(settled, timeout=90, what="every incident closed", interval=0.2)
            time.sleep(1)  # the load's connections are closed: the last sample shows what stays open
            stop.set()
            sampler.join()
            fds, files = scale_common.open_fds(daemon.pid)
            s = samples[-1]
            samples.append(
                Sample(
                    time.monotonic() - t0, scale_common.rss_mib(daemon.pid), fds, files, s.store, s.db_file
                )
            )
            text = common.http_text(daemon.url + "/metrics")
            metrics = {
                "received": common.metric_sum(text, "remediator_alerts_received_total"),
                "firing decisions": sum(
                    common.metric_sum(text, "remediator_decisions_total", decision=d)
                    for d in ("opened", "attached", "duplicate", "stale", "target_refused", "unmatched")
                ),
                "opened": common.metric_sum(text, "remediator_decisions_total", decision="opened"),
                "resolved": common.metric_sum(text, "remediator_decisions_total", decision="resolved"),
                "restarts": common.metric_sum(text, "remediator_actions_total", action="container.restart"),
                "restarts ok": common.metric_sum(
                    text, "remediator_actions_total", action="container.restart", outcome="ok"
                ),
                "refusals": common.metric_sum(text, "remediator_refusals_total"),
                "open incidents": common.metric_sum(text, "remediator_incidents_open"),
                "retention deleted": common.metric_sum(text, "remediator_retention_deleted_total"),
                "retention runs ok": common.metric_sum(text, "remediator_retention_last_run_successful"),
                "store retries": common.metric_sum(
                    text, "remediator_decisions_total", decision="store_retry"
                ),
            }
        finally:
            stop.set()
            daemon.stop()
        errors, warnings = scale_common.log_problems(daemon.log)
        db = sqlite3.connect(f"file:{work / 'state' / 'remediator.sqlite3'}?mode=ro", uri=True)
        try:
            unprocessed = int(
                db.execute("SELECT count(*) FROM inbox WHERE processed_at IS NULL").fetchone()[0]
            )
            rows = {
                t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("inbox", "incidents", "audit", "episodes")
            }
        finally:
            db.close()
        return SoakResult(
            seconds,
            rate,
            warmup,
            slice_s,
            samples,
            load,
            dict(mix.sent),
            mix.firing_sent,
            metrics,
            unprocessed,
            errors,
            warnings,
            {"rows at the end": rows},
        )
    finally:
        for k in range(CONTAINERS):
            with contextlib.suppress(Exception):  # best effort: the daemon may be gone
                docker.client.containers.get(f"soak-{k}").remove(force=True)
        if own_docker:
            docker.close()
        shutil.rmtree(work, ignore_errors=True)


async def _send_one(port: int, request: bytes) -> int:
    conn = await common.Connection.open(port)
    try:
        return await conn.send(request)
    finally:
        await conn.close()


def report(result: SoakResult, audit: common.CpuAudit | None) -> bool:
    s = result.samples
    warm = result.at(result.warmup_s)
    end = s[-1]
    first = s[0]
    after = [x for x in s if x.t >= result.warmup_s]
    last_slice = [x for x in s if x.t >= result.seconds - result.slice_s]
    slices = result.slices()
    rates = [r for _, r, _ in slices]
    store_warm_max = max(x.store for x in after[: max(1, len(after) // 6)])
    store_last_max = max(x.store for x in last_slice) if last_slice else end.store
    rss_growth = end.rss - warm.rss
    lost = result.lost()
    rows = [
        Row("RSS at start / end of warm-up", first.rss, None, "MiB", digits=1),
        Row(f"RSS at the end ({result.seconds / 60:.0f} min)", end.rss, warm.rss, "MiB", digits=1),
        Row("RSS growth after warm-up", rss_growth, None, "MiB", "< 10", rss_growth < 10, 1),
        Row("peak RSS", max(x.rss for x in s), None, "MiB", digits=1),
        Row(
            "open fds other than sockets, at the end",
            end.files,
            warm.files,
            "",
            "<= warm-up + 5",
            end.files <= warm.files + 5,
            0,
        ),
        Row("open fds, all, at the end (load's connections closed)", end.fds, first.fds, "", digits=0),
        Row(
            "open fds, all, max after warm-up (64 connections at most)",
            max(x.fds for x in after),
            None,
            "",
            digits=0,
        ),
    ]
    for start, rate, p99 in slices:
        ok = rate >= 0.95 * result.rate
        end_s = min(start + result.slice_s, result.seconds)
        rows.append(
            Row(
                f"ingest {start / 60:4.1f}-{end_s / 60:.1f} min",
                rate,
                result.rate,
                "alerts/s",
                ">= 0.95x offered",
                ok,
                1,
            )
        )
        rows.append(Row("  p99 ack latency", p99, None, "ms", digits=1))
    rows += [
        Row(
            "store size, max in the first sixth after warm-up", store_warm_max / 2**20, None, "MiB", digits=1
        ),
        Row(
            "store size, max in the last slice",
            store_last_max / 2**20,
            store_warm_max / 2**20,
            "MiB",
            "<= 1.25x",
            store_last_max <= 1.25 * store_warm_max,
            1,
        ),
        Row("store size, max over the run", max(x.store for x in s) / 2**20, None, "MiB", digits=1),
        Row(
            "  of which the database file (the rest: WAL)",
            max(x.db_file for x in s) / 2**20,
            None,
            "MiB",
            digits=1,
        ),
        Row("retention: rows deleted", result.metrics["retention deleted"], None, "", digits=0),
        Row("incidents opened / restarts (ok) / refusals", result.metrics["opened"], None, "", digits=0),
        Row("  restarts", result.metrics["restarts"], None, "", digits=0),
        Row("  restarts ok", result.metrics["restarts ok"], None, "", digits=0),
        Row("  refusals", result.metrics["refusals"], None, "", digits=0),
        Row("ERROR lines in the daemon's log", len(result.errors), None, "", "0", not result.errors, 0),
        Row("WARNING lines in the daemon's log", len(result.warnings), None, "", digits=0),
        Row("signs of loss (see below)", len(lost), None, "", "0", not lost, 0),
    ]
    note = (
        f"{result.seconds / 60:g} min at {result.rate:g} alerts/s offered (sent {result.load.sent:,}: "
        + ", ".join(f"{k} {v:,}" for k, v in result.sent.items())
        + f"); warm-up {result.warmup_s:.0f} s; rows at the end {result.extra.get('rows at the end')};"
        f" ingest slices range {min(rates):.1f}-{max(rates):.1f}/s. {common.command_line()}"
    )
    met = common.print_table(
        "soak: a steady realistic mix with retention running", rows, "baseline", note, audit
    )
    for problem in lost:
        print(f"  LOST: {problem}")
    for line in result.errors[:20]:
        print(f"  ERROR: {line}")
    for line in sorted(set(result.warnings))[:10]:
        print(f"  warning ({result.warnings.count(line)}x): {line}")
    print("  over time (min: RSS MiB, fds all/not sockets, store MiB = file + WAL):")
    step = max(1, len(s) // 16)
    for x in [*s[::step], s[-1]]:
        print(
            f"   {x.t / 60:5.1f}: {x.rss:.1f}, {x.fds}/{x.files}, {x.store / 2**20:.1f} = {x.db_file / 2**20:.1f} + ..."
        )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=200, help="alerts/s offered")
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start(max_wait_s=30)  # a load of 200/s hardly depends on it
    seconds = args.minutes * 60
    slice_s = 300.0 if seconds >= 1200 else max(10.0, seconds / 6)
    result = run(seconds, args.rate, slice_s=slice_s)
    return 0 if report(result, audit) else 1


if __name__ == "__main__":
    sys.exit(main())
