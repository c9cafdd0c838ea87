"""Verification probes: an HTTP health check on a local server, PromQL on a real Prometheus.

The rule under test: True only on evidence of health, False on evidence of trouble, None (never True) when
the check cannot be evaluated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from pydantic import ValidationError
from realparts import CaptureServer, Prometheus, free_port

from remediator.actions.base import ProbeResult
from remediator.actions.catalogue import build_probes
from remediator.actions.probes import HttpProbe, PrometheusProbe
from remediator.domain.policies import HttpCheck, PrometheusCheck
from remediator.settings import Settings


@pytest_asyncio.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_http_probe_is_healthy_only_on_the_expected_status_and_body(
    capture_server: CaptureServer,
) -> None:
    probe = HttpProbe()
    url = f"{capture_server.url}/healthz?key=s3cret"
    ok = await probe.check(HttpCheck(url=url, body=r'"ok":\s*true'))
    assert ok == ProbeResult(True, f"GET {capture_server.url}/healthz answered 200 and matched")
    assert (await probe.check(HttpCheck(url=url))).healthy is True

    wrong_body = await probe.check(HttpCheck(url=url, body="ready"))
    assert wrong_body.healthy is False and "without a match for 'ready'" in wrong_body.detail
    capture_server.fail_first(1, 503)
    failing = await probe.check(HttpCheck(url=url))
    assert failing == ProbeResult(False, f"GET {capture_server.url}/healthz answered 503, expected 200")
    capture_server.fail_first(1, 503)
    assert (await probe.check(HttpCheck(url=url, status=503))).healthy is True
    assert [r.method for r in capture_server.requests] == ["GET"] * 5


async def test_http_probe_cannot_tell_when_the_endpoint_does_not_answer(silent_url: str) -> None:
    probe = HttpProbe()
    down = await probe.check(HttpCheck(url=f"http://127.0.0.1:{free_port()}/healthz"))
    assert down.healthy is None and "ClientConnectorError" in down.detail
    hung = await probe.check(HttpCheck(url=f"{silent_url}/healthz", timeout_s=0.3))
    assert hung == ProbeResult(None, f"GET {silent_url}/healthz took over 0.3s")
    with pytest.raises(ValidationError, match="is not a regex"):  # refused at load, never at 3 a.m.
        HttpCheck(url=f"{silent_url}/healthz", body="(unclosed")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    prom = Prometheus("global:\n  evaluation_interval: 1h\n")
    try:
        yield prom
    finally:
        prom.close()


@pytest.mark.realparts
@pytest.mark.parametrize(
    ("query", "healthy", "detail"),
    [
        ("vector(1)", True, "1 sample(s), all non-zero: 1"),
        # +, &, #, quotes and braces must reach Prometheus as they are written in the policy.
        (
            'label_replace(vector(1) + vector(1), "q", "a&b#c+d=e", "", "")',
            True,
            "1 sample(s), all non-zero: 2",
        ),
        ('count(up{job="a&b"}) or vector(3)', True, "1 sample(s), all non-zero: 3"),
        ("2 > bool 1", True, "1 sample(s), all non-zero: 1"),
        ("vector(0)", False, "1 of 1 sample(s) are 0 or NaN: 0"),
        ("vector(1) or label_replace(vector(0), 'x', 'y', '', '')", False, "1 of 2 sample(s) are 0 or NaN"),
        ("vector(0) / 0", False, "1 of 1 sample(s) are 0 or NaN: nan"),
        ('up{job="nothing-scrapes-this"}', None, "the query returned no samples"),
        ('pg_up{job="databases"} == 1', None, "the query returned no samples"),
        ("sum(", None, "prometheus answered 400: "),
        ('"text"', None, "the query returned a string"),
    ],
)
async def test_prometheus_probe_needs_samples_that_are_all_non_zero(
    prometheus: Prometheus, query: str, healthy: bool | None, detail: str
) -> None:
    result = await PrometheusProbe(prometheus.url, timeout_s=5).check(PrometheusCheck(query=query))
    assert result.healthy is healthy, result
    assert detail in result.detail, result


async def test_prometheus_probe_cannot_tell_without_prometheus(silent_url: str) -> None:
    down = await PrometheusProbe(f"http://127.0.0.1:{free_port()}").check(PrometheusCheck(query="vector(1)"))
    assert down.healthy is None and down.detail.startswith("prometheus unreachable: ")
    hung = await PrometheusProbe(silent_url, timeout_s=0.3).check(PrometheusCheck(query="vector(1)"))
    assert hung == ProbeResult(None, "prometheus did not answer within 0.3s")


async def test_prometheus_probe_keeps_a_path_prefix_and_sends_the_query_intact(
    capture_server: CaptureServer,
) -> None:
    query = 'sum(rate(http_requests_total{code=~"5..", path="/a&b"}[5m])) + 1 # not a comment'
    result = await PrometheusProbe(f"{capture_server.url}/prom/", timeout_s=2).check(
        PrometheusCheck(query=query)
    )
    (request,) = capture_server.requests
    assert (request.method, request.path) == ("GET", "/prom/api/v1/query")
    assert request.query == {"query": query, "timeout": "2"}
    # The capture server is not Prometheus: an answer without status "success" cannot be read as health.
    assert result == ProbeResult(None, "prometheus answered 200: no result")


def test_build_probes_has_prometheus_only_when_its_url_is_set() -> None:
    assert set(build_probes()) == {"http"}
    assert set(build_probes(Settings(prometheus={"url": None}))) == {"http"}
    probes = build_probes(Settings(prometheus={"url": "http://127.0.0.1:9090", "timeout_s": 2}))
    assert set(probes) == {"http", "prometheus"}
    assert probes["prometheus"] == PrometheusProbe("http://127.0.0.1:9090", 2)
