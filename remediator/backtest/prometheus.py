"""Prometheus as a backtest reads it: its HTTP API asked directly and blocking (so the virtual clock cannot
move while it answers), and its ``ALERTS`` series turned into the notifications Alertmanager would have sent."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from remediator.backtest.sources import Delivery
from remediator.backtest.times import iso
from remediator.domain.alerts import Notification
from remediator.errors import RemediatorError

# No proxy from the environment, as the daemon's probes (trust_env=False): Prometheus is asked directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """The status and body of a GET of ``url``; an HTTP error's status and body are an answer, not a raise."""
    if not url.startswith(("http://", "https://")):
        raise OSError(f"not an http(s) URL: {url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (checked above)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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
            status, raw = http_get(f"{url.rstrip('/')}/api/v1/query?{query}", timeout_s)
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
                "startsAt": iso(first),
                "generatorURL": generator_url,
                "fingerprint": fp,
            }
            deliveries.append(_one(first + timing.group_wait_s, {**alert, "status": "firing"}))
            resolved_at = last + interval
            if resolved_at <= end:
                ended = {**alert, "status": "resolved", "endsAt": iso(resolved_at)}
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
