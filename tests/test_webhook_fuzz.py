"""Property-based fuzz of the HTTP edge: whatever a client sends (random JSON, near-valid Alertmanager payloads
with hostile strings and numbers, deep nesting, bytes that are not UTF-8 in headers, made-up ids and limits),
the daemon answers within a bounded time with something other than a 5xx, and logs no traceback for it.

One real daemon per test function (SQLite store, in-process on its own event loop, reached over real sockets
with hand-built requests, so headers can carry any byte), many examples against it. The store can always
persist here, so even a 503 is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TOKEN, alert, notification, settings_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.app import App
from remediator.settings import Settings

ANSWER_WITHIN_S = 15.0
"""Per request; generous, for a busy 2-core machine. A hang (the old header/body behaviour) exceeds it."""

FUZZ = settings(
    max_examples=300,
    deadline=None,  # time is asserted per request, below
    database=None,  # nothing written into the shared working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Daemon:
    """The daemon on a private event loop: a sync hypothesis test drives it with ``run``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: App) -> None:
        self.loop = loop
        self.app = app

    def run(self, request: bytes) -> int:
        return self.loop.run_until_complete(self._send(request))

    async def _send(self, request: bytes) -> int:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.app.port)
        try:
            writer.write(request)
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), ANSWER_WITHIN_S)
        finally:
            writer.close()
        assert time.monotonic() - started < ANSWER_WITHIN_S
        return int(line.split(b" ", 2)[1])


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    env = settings_env(tmp_path, REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    loop = asyncio.new_event_loop()
    app = App(Settings())
    loop.run_until_complete(app.start())
    try:
        yield Daemon(loop, app)
    finally:
        loop.run_until_complete(app.stop())
        loop.close()


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [
        r
        for r in caplog.records
        if r.name.startswith("remediator.server") and r.levelno >= logging.ERROR and r.exc_info
    ]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]
    assert "Error handling request" not in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Strategies

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\u0000", "a\u0000b", "\u202e", "\ufeff", "db; rm -rf /", "%00", "\\", "\U0010ffff"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10).map(lambda s: s + "\u0000"),
)
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),  # json.dumps writes NaN: not JSON
)
LONE_SURROGATES = st.sampled_from(["\ud800", "x\udfff"])  # valid JSON escapes; no UTF-8 (Go never sends them)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | HOSTILE_TEXT | LONE_SURROGATES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(HOSTILE_TEXT, children, max_size=5),
    max_leaves=30,
)
ALERT_KEYS = ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]
TOP_KEYS = [
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "alerts",
]


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A payload Alertmanager could almost have sent, with a few fields made hostile."""
    alerts = []
    for _ in range(draw(st.integers(1, 3))):
        item = alert(
            alertname=draw(st.sampled_from(["DatabaseDown", "HighErrorRate"]) | HOSTILE_TEXT),
            status=draw(st.sampled_from(["firing", "resolved"])),
            fingerprint=draw(HOSTILE_TEXT) if sometimes(draw) else draw(st.sampled_from(["f1", "f2"])),
            starts_at=draw(HOSTILE_TEXT if sometimes(draw) else st.sampled_from(["2026-11-23T10:00:00Z"])),
            container=draw(st.sampled_from(["sms-db", "db"]) | HOSTILE_TEXT),
        )
        item["labels"].update(draw(st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=4)))
        alerts.append(item)
    body: dict[str, Any] = notification(*alerts)
    # Now and then a field of any type: most examples stay valid enough to be stored.
    for item in body["alerts"]:
        if sometimes(draw):
            item[draw(st.sampled_from(ALERT_KEYS))] = draw(JSON)
    if sometimes(draw):
        body[draw(st.sampled_from(TOP_KEYS))] = draw(JSON)
    return json.dumps(body).encode()


def sometimes(draw: st.DrawFn) -> bool:
    """True one time in four (hypothesis favours small integers, so not ``integers(0, 3) == 0``)."""
    return draw(st.sampled_from([False, False, False, True]))


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


BODIES = st.one_of(
    near_valid(),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=2000),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 50_000).map(nested),
    near_valid().map(lambda b: b[: len(b) // 2]),  # cut short
)
HEADER_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
AUTHS = st.one_of(
    st.just(f"Bearer {TOKEN}".encode()),
    st.just(b"Basic " + base64.b64encode(f"am:{TOKEN}".encode())),
    st.sampled_from([b"Bearer s3cr\xe9t", b"Basic \xe9\xe9==", b"Basic !!", b"Bearer", b"", b"\xff"]),
    HEADER_BYTES.map(lambda b: b"Bearer " + b),
    HEADER_BYTES.map(lambda b: b"Basic " + base64.b64encode(b)),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON", b"text/plain", b""]
    ),
    HEADER_BYTES,
)


@st.composite
def webhook_requests(draw: st.DrawFn) -> bytes:
    body = draw(near_valid()) if draw(st.booleans()) else draw(BODIES)
    headers = [b"Host: t", b"Connection: close"]
    if not sometimes(draw):
        auth = draw(AUTHS) if sometimes(draw) else f"Bearer {TOKEN}".encode()
        headers.append(b"Authorization: " + auth)
    content_type = draw(CONTENT_TYPES) if sometimes(draw) else b"application/json"
    headers.append(b"Content-Type: " + content_type)
    for _ in range(draw(st.integers(0, 2)) if sometimes(draw) else 0):
        name = draw(st.sampled_from([b"X-Remediator-Timestamp", b"X-Remediator-Signature", b"X-Junk"]))
        headers.append(name + b": " + draw(HEADER_BYTES))
    if draw(st.booleans()):
        headers.append(b"Content-Length: %d" % len(body))
        framed = body
    else:
        headers.append(b"Transfer-Encoding: chunked")
        framed = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return b"POST /alerts HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + framed


def test_the_webhook_never_answers_5xx_to_any_request(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    seen: Counter[int] = Counter()

    @FUZZ
    @given(request=webhook_requests())
    def check(request: bytes) -> None:
        status = daemon.run(request)
        seen[status] += 1
        assert status < 500, status

    check()
    assert_no_traceback(caplog)
    # The examples reached every layer: refused at the door, refused as bad input, and stored.
    assert seen[200] and seen[400] and seen[401], seen


# ---------------------------------------------------------------------------------------------------------
# The API's parameters

SEGMENTS = st.one_of(
    st.integers().map(str),
    st.sampled_from(
        ["99999999999999999999999", "9223372036854775808", "-1", "0", "+1", "1_0", "1e3", "٣", ""]
    ),
    st.text(max_size=30),
    st.integers(1, 6000).map(lambda n: "9" * n),
)


def quoted(text: str) -> bytes:
    return urllib.parse.quote(text, safe="").encode()


@st.composite
def api_requests(draw: st.DrawFn) -> bytes:
    segment, other = quoted(draw(SEGMENTS)), quoted(draw(SEGMENTS))
    method, path = draw(
        st.sampled_from(
            [
                (b"GET", b"/api/incidents/" + segment),
                (b"GET", b"/api/incidents?limit=" + segment + b"&status=" + other),
                (b"GET", b"/api/incidents?status=" + segment),
                (b"POST", b"/api/incidents/" + segment + b"/approve"),
                (b"POST", b"/api/incidents/" + segment + b"/deny"),
                (b"GET", b"/approval/" + segment + b"?sig=" + other),
                (b"POST", b"/approval/" + segment + b"?sig=" + other),
                (b"POST", b"/api/policies/" + segment + b"/promote"),
            ]
        )
    )
    auth = draw(AUTHS)
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: " + auth
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16\r\n\r\ndecision=approve"
    )  # fmt: skip


def test_the_api_never_answers_5xx_to_any_parameter(daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    seen: Counter[int] = Counter()

    @FUZZ
    @given(request=api_requests())
    def check(request: bytes) -> None:
        status = daemon.run(request)
        seen[status] += 1
        assert status < 500, status

    check()
    assert_no_traceback(caplog)
    assert seen[400] and seen[401] and seen[404], seen
