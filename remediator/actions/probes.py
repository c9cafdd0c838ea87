"""Verification checks: did the action work? An HTTP health endpoint, or a Prometheus instant query.

An alert resolves minutes after the system recovered (the rule's ``for:``, the evaluation interval,
Alertmanager's group_interval); a check sees recovery within seconds. But a check that cannot be evaluated
(the endpoint is unreachable, the query returns no series, Prometheus is down) answers ``healthy=None``, and
the runner never reads that as recovered: missing data must not close an incident.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import aiohttp

from remediator.actions.base import ProbeResult
from remediator.actions.http import shown_url
from remediator.domain.policies import HttpCheck, PrometheusCheck

# A health page or a query answer is small; anything larger is read only this far.
_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpProbe:
    """GET the check's URL: healthy when the status is the expected one and the body matches its regex."""

    async def check(self, spec: Any) -> ProbeResult:
        assert isinstance(spec, HttpCheck)
        url = shown_url(spec.url)
        # Compiled (RE2, linear time) when the policy was loaded: a regex that cannot run never gets here.
        pattern = spec.body_pattern
        timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                session.get(spec.url, allow_redirects=False) as response,
            ):
                status = response.status
                text = (await response.content.read(_MAX_BODY_BYTES)).decode("utf-8", "replace")
        except TimeoutError:
            return ProbeResult(None, f"GET {url} took over {spec.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return ProbeResult(None, f"GET {url} failed: {type(exc).__name__}: {exc}")
        if status != spec.status:
            return ProbeResult(False, f"GET {url} answered {status}, expected {spec.status}")
        if pattern is not None and not pattern.search(text):
            return ProbeResult(False, f"GET {url} answered {status} without a match for {spec.body!r}")
        return ProbeResult(True, f"GET {url} answered {status}" + (" and matched" if pattern else ""))


def _sample_value(value: Any) -> float:
    # Prometheus sends [timestamp, "value"], the value as a string ("1", "0.5", "NaN", "+Inf").
    return float(value[1])


def _truthy(data: dict[str, Any]) -> ProbeResult:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        values = [_sample_value(result)]
    elif kind == "vector":
        if not result:
            return ProbeResult(None, "the query returned no samples")
        values = [_sample_value(sample["value"]) for sample in result]
    else:
        return ProbeResult(None, f"the query returned a {kind}, not an instant vector or a scalar")
    # NaN is not a value anyone can read as "healthy": it counts as false, as zero does.
    falsy = [v for v in values if v == 0 or math.isnan(v)]
    shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
    if falsy:
        return ProbeResult(False, f"{len(falsy)} of {len(values)} sample(s) are 0 or NaN: {shown}")
    return ProbeResult(True, f"{len(values)} sample(s), all non-zero: {shown}")


@dataclass(frozen=True)
class PrometheusProbe:
    """An instant query of the policy's fixed PromQL: healthy when it returns at least one sample and every
    sample is non-zero. No sample, an error or an unreachable Prometheus: cannot tell (None)."""

    url: str
    """Prometheus base URL (``http://127.0.0.1:9090``, or with a path prefix)."""
    timeout_s: float = 5.0
    """Seconds one query may take."""

    async def check(self, spec: Any) -> ProbeResult:
        assert isinstance(spec, PrometheusCheck)
        endpoint = self.url.rstrip("/") + "/api/v1/query"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                # Passed as params, the query is percent-encoded by yarl: its +, &, # and quotes reach
                # Prometheus intact instead of being read as separators.
                session.get(
                    endpoint,
                    params={"query": spec.query, "timeout": f"{self.timeout_s:g}"},
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                raw = await response.content.read(_MAX_BODY_BYTES * 16)
        except TimeoutError:
            return ProbeResult(None, f"prometheus did not answer within {self.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return ProbeResult(None, f"prometheus unreachable: {type(exc).__name__}: {exc}")
        return instant_answer(status, raw)


def instant_answer(status: int, raw: bytes) -> ProbeResult:
    """What an answer of ``/api/v1/query`` (HTTP ``status``, body ``raw``) says: healthy, not, or cannot tell.
    Shared with the backtest, which asks the same query at a past time."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ProbeResult(None, f"prometheus answered {status} with a body that is not JSON")
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "") if isinstance(body, dict) else ""
        return ProbeResult(None, f"prometheus answered {status}: {error or 'no result'}")
    try:
        return _truthy(body.get("data") or {})
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        return ProbeResult(None, f"prometheus answered an unexpected result: {exc}")
