"""The HTTP edge within bounds (issue 12, items 4, 6, 7, 12): readiness that means "an alert would be accepted",
a 4xx for any credentials or parameter a client makes up, and a daemon that stays reachable however many
connections a client opens and however slowly it sends them.

Real parts only: a real full filesystem (tmpfs), a real daemon process under a real open-files limit, raw
sockets sending the bytes a hostile client sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import REPO, TOKEN, alert, eventually, fill, notification, settings_env

from remediator.app import App
from remediator.logs import RepeatFilter
from remediator.signing import approval_signature

AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


async def exchange(port: int, request: bytes, timeout: float = 20.0) -> tuple[int, bytes]:
    """Send raw bytes, read the whole answer (the request says Connection: close): (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(headers) + b"Connection: close\r\n\r\n"


def post(path: bytes, body: bytes, *headers: bytes) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(headers)
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )  # fmt: skip


async def daemon(start_app: Callable[..., Any], **env: str) -> App:
    app: App = await start_app(REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock", **env)
    return app


# ---------------------------------------------------------------------------------------------------------
# Item 4: /readyz answers what a webhook POST would get


async def test_readyz_says_not_ready_while_the_store_cannot_write_and_ready_again_after(
    start_app: Callable[..., Any], small_disk: Path
) -> None:
    app = await daemon(start_app, REMEDIATOR_STORE__PATH=str(small_disk / "store.sqlite3"))
    base = f"http://127.0.0.1:{app.port}"
    body = json.dumps(notification(alert(alertname="Unmatched"))).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200
        filler = fill(small_disk)
        async with http.post(f"{base}/alerts", data=body, headers=headers) as r:
            assert r.status == 503  # what Alertmanager gets ...
        async with http.get(f"{base}/readyz") as r:  # ... is what an orchestrator is told
            answer = await r.json()
            assert r.status == 503, answer
            assert "full" in answer["error"]
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200  # alive all along: nothing to restart, only to route around
        filler.unlink()
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200
        async with http.post(f"{base}/alerts", data=body, headers=headers) as r:
            assert r.status == 200


# ---------------------------------------------------------------------------------------------------------
# Item 6: credentials a client makes up get 401, never 500


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer s3cr\xe9t\r\n",  # latin-1, as a client sends it raw
        b"Authorization: Bearer " + TOKEN.encode() + b"\xff\r\n",
        b"Authorization: Bearer \xc3\xa9\r\n",  # valid UTF-8, not ASCII
        b"Authorization: Basic \xe9\xe9==\r\n",  # not ASCII inside the base64: ValueError, not binascii.Error
        b"Authorization: Basic " + base64.b64encode(b"\xff\xfe:" + TOKEN.encode() + b"\xff") + b"\r\n",
        b"Authorization: Basic !!!\r\n",
        b"Authorization: \xe9\r\n",
    ],
)
async def test_credentials_that_are_not_ascii_or_not_base64_get_401(
    start_app: Callable[..., Any], header: bytes
) -> None:
    app = await daemon(start_app)
    for request in (get(b"/api/status", header), post(b"/alerts", b"{}", header)):
        status, body = await exchange(app.port, request)
        assert status == 401, body


async def test_credentials_in_utf8_match_a_utf8_token(start_app: Callable[..., Any]) -> None:
    app = await daemon(start_app, REMEDIATOR_SERVER__TOKEN="s3cr\u00e9t")
    status, _ = await exchange(
        app.port, get(b"/api/status", "Authorization: Bearer s3cr\u00e9t\r\n".encode())
    )
    assert status == 200
    basic = base64.b64encode("am:s3cr\u00e9t".encode())
    status, _ = await exchange(app.port, get(b"/api/status", b"Authorization: Basic " + basic + b"\r\n"))
    assert status == 200
    status, _ = await exchange(app.port, get(b"/api/status", b"Authorization: Bearer s3cr\xe9t\r\n"))
    assert status == 401  # the same text in latin-1 is other bytes


# ---------------------------------------------------------------------------------------------------------
# Item 7: every API parameter is validated: 400 or 404


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (get(b"/api/incidents/99999999999999999999999", AUTH), 404),
        (get(b"/api/incidents/9223372036854775808", AUTH), 404),  # 2**63
        (get(b"/api/incidents/9223372036854775807", AUTH), 404),  # 2**63 - 1: a valid id, no such row
        (get(b"/api/incidents/" + b"9" * 5000, AUTH), 404),  # past int()'s 4,300-digit limit too
        (get(b"/api/incidents/0", AUTH), 404),
        (get(b"/api/incidents/-1", AUTH), 404),
        (get(b"/api/incidents/1.5", AUTH), 400),
        (get(b"/api/incidents/+1", AUTH), 400),
        (get(b"/api/incidents/1_0", AUTH), 400),
        (get(b"/api/incidents/%D9%A3", AUTH), 400),  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
        (get(b"/api/incidents?limit=-1", AUTH), 400),  # SQLite: no limit at all
        (get(b"/api/incidents?limit=0", AUTH), 400),
        (get(b"/api/incidents?limit=1001", AUTH), 400),
        (get(b"/api/incidents?limit=99999999999999999999999", AUTH), 400),
        (get(b"/api/incidents?limit=ten", AUTH), 400),
        (get(b"/api/incidents?status=open", AUTH), 400),
        (get(b"/api/incidents?limit=1000&status=active", AUTH), 200),
        (post(b"/api/incidents/99999999999999999999999/approve", b"", AUTH), 404),
        (post(b"/api/incidents/-5/deny", b"", AUTH), 404),
        (post(b"/api/incidents/x/deny", b"", AUTH), 400),
        (get(b"/approval/99999999999999999999999?sig=00"), 404),
        (post(b"/approval/99999999999999999999999?sig=00", b"decision=approve"), 404),
        (get(b"/approval/1?sig=%E9%00"), 404),
    ],
)
async def test_api_parameters_out_of_range_get_400_or_404(
    start_app: Callable[..., Any], request_line: bytes, expected: int
) -> None:
    app = await daemon(start_app)
    status, body = await exchange(app.port, request_line)
    assert status == expected, body


APPROVAL_POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["approve-db"]
steps:
  - act: container.restart
    approval: {timeout_s: 600, on_timeout: deny}
    verify: {resolved_within_s: 60}
  - escalate: log
"""


async def test_an_approval_form_with_a_body_it_cannot_read_gets_400(start_app: Callable[..., Any]) -> None:
    app = await start_app(
        policies={"db.yaml": APPROVAL_POLICY}, REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock"
    )
    body = json.dumps(notification(alert(container="approve-db"))).encode()
    status, _ = await exchange(app.port, post(b"/alerts", body, AUTH, b"Content-Type: application/json\r\n"))
    assert status == 200
    pending = await eventually(lambda: app.gate.approvals.get(1), timeout=30)
    assert app.escalator.link_key is not None
    sig = approval_signature(app.escalator.link_key, 1, pending.requested_at)
    link = b"/approval/1?sig=" + sig.encode()
    assert (await exchange(app.port, get(link)))[0] == 200
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    multipart = b"--b\r\nContent-Disposition: form-data\r\n\r\napprove\r\n--b--\r\n"
    for request in (
        post(link, b"decision=\xff\xfe", form),  # not UTF-8: request.post() raised UnicodeDecodeError
        post(link, multipart, b"Content-Type: multipart/form-data; boundary=b\r\n"),  # a part with no name
        post(link, b"&".join([b"decision=approve"] * 50), form),
    ):
        status, answer = await exchange(app.port, request)
        assert status == 400, answer
        assert (await app.gate.approvals.get(1)).state  # type: ignore[union-attr] == "pending"
    # An unknown charset is no reason for a 500 either: the form's bytes are read as UTF-8.
    charset = b"Content-Type: application/x-www-form-urlencoded; charset=nope\r\n"
    status, answer = await exchange(app.port, post(link, b"decision=deny", charset))
    assert status == 200, answer
    assert (await app.gate.approvals.get(1)).state  # type: ignore[union-attr] == "denied"


async def test_a_signature_header_that_is_not_ascii_gets_401(start_app: Callable[..., Any]) -> None:
    app = await daemon(start_app, REMEDIATOR_SERVER__HMAC_SECRET="hmac-secret")
    json_type = b"Content-Type: application/json\r\n"
    for headers in (
        (b"X-Remediator-Timestamp: %d\r\n" % time.time(), b"X-Remediator-Signature: sha256=\xe9\r\n"),
        (b"X-Remediator-Timestamp: 1\xe9\r\n", b"X-Remediator-Signature: sha256=00\r\n"),
    ):
        status, answer = await exchange(app.port, post(b"/alerts", b"{}", AUTH, json_type, *headers))
        assert status == 401, answer


# ---------------------------------------------------------------------------------------------------------
# Item 12: header and body read time, connection limit


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """What the server sent before closing, or fail if it keeps the connection past ``timeout``. A reset counts
    as closed: a server that closes a socket with unread bytes from the client (one that keeps trickling) sends
    RST, not FIN, and when depends on the machine's timing."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def test_a_client_that_trickles_its_headers_is_closed_after_the_header_timeout(
    start_app: Callable[..., Any],
) -> None:
    app = await daemon(start_app, REMEDIATOR_SERVER__HEADER_TIMEOUT_S="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)

    async def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    try:
        await wait_closed(reader, timeout=20)  # 1 s, and a generous margin for a busy machine
    finally:
        sender.cancel()
        writer.close()
    # Another client is served meanwhile and after.
    status, _ = await exchange(app.port, get(b"/healthz"))
    assert status == 200


async def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(
    start_app: Callable[..., Any],
) -> None:
    app = await daemon(start_app, REMEDIATOR_SERVER__HEADER_TIMEOUT_S="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 20)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(2)  # idle between requests is not the header timeout: still open
        writer.write(b"GET /hea")  # the next request starts, and never ends
        await wait_closed(reader, timeout=20)
    finally:
        writer.close()


async def test_a_client_that_trickles_its_body_gets_408(start_app: Callable[..., Any]) -> None:
    app = await daemon(start_app, REMEDIATOR_SERVER__BODY_TIMEOUT_S="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    writer.write(
        b"POST /alerts HTTP/1.1\r\nHost: t\r\n" + AUTH
        + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )  # fmt: skip
    try:
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 20)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer


async def test_at_the_connection_limit_idle_connections_make_room_and_busy_ones_are_kept(
    start_app: Callable[..., Any],
) -> None:
    app = await daemon(
        start_app, REMEDIATOR_SERVER__MAX_CONNECTIONS="4", REMEDIATOR_SERVER__BODY_TIMEOUT_S="60"
    )
    body = json.dumps(notification(alert(alertname="Unmatched"))).encode()
    # A request in progress: headers in, body on its way.
    busy_reader, busy = await asyncio.open_connection("127.0.0.1", app.port)
    busy.write(post(b"/alerts", body, AUTH, b"Content-Type: application/json\r\n")[:-10])
    await busy.drain()
    await asyncio.sleep(0.5)
    idle = [await asyncio.open_connection("127.0.0.1", app.port) for _ in range(20)]
    try:
        for _ in range(3):
            status, _ = await exchange(app.port, get(b"/healthz"))
            assert status == 200
        # The idle ones were closed to make room (at once: the header timeout is 10 s), all but at most 3.
        closed = 0
        for reader, _ in idle:
            with contextlib.suppress(TimeoutError):
                closed += await asyncio.wait_for(reader.read(), 2) == b""
        assert closed >= 17, closed
        busy.write(post(b"/alerts", body, AUTH, b"Content-Type: application/json\r\n")[-10:])
        answer = await asyncio.wait_for(busy_reader.read(), 20)
        assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        busy.close()
        for _, writer in idle:
            writer.close()


async def test_when_every_connection_is_busy_a_new_one_gets_503(start_app: Callable[..., Any]) -> None:
    app = await daemon(
        start_app, REMEDIATOR_SERVER__MAX_CONNECTIONS="2", REMEDIATOR_SERVER__BODY_TIMEOUT_S="60"
    )
    started = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(
            b"POST /alerts HTTP/1.1\r\nHost: t\r\n" + AUTH
            + b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{"
        )  # fmt: skip
        started.append((reader, writer))
    await asyncio.sleep(0.5)
    try:
        status, _ = await exchange(app.port, get(b"/healthz"))
        assert status == 503
    finally:
        for _, writer in started:
            writer.close()
    await eventually(lambda: app._web is not None and app._web.gate is not None and app._web.gate.open == 0)
    status, _ = await exchange(app.port, get(b"/healthz"))
    assert status == 200


# A real daemon process under a real open-files limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(
    tmp_path: Path, nofile: tuple[int, int], **env: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / "daemon.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", "serve", "--port", str(port)],
            cwd=REPO,
            env={
                **os.environ,
                **settings_env(tmp_path),
                "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,  # the child sets only its own limit
        )
    deadline = time.monotonic() + 60
    while not healthy(port, timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the daemon did not start: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, port, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def healthy(port: int, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    proc, _, log = start_daemon(tmp_path, (1024, 4096))
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        stop(proc)
    assert "open-files limit 4096" in log.read_text()


def test_1100_idle_connections_under_1024_open_files_leave_healthz_reachable_and_the_log_small(
    tmp_path: Path,
) -> None:
    # 1,024 is the hard limit too: the daemon cannot raise it, and has to live within it.
    proc, port, log = start_daemon(tmp_path, (1024, 1024), REMEDIATOR_SERVER__HEADER_TIMEOUT_S="5")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    try:
        if soft < 1500:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        for _ in range(1100):
            s = socket.socket()
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
            except OSError:
                s.close()  # a full accept queue, or the server already closed it: the limit at work
                continue
            held.append(s)
        # While every one of them is held open, a new client is served.
        deadline = time.monotonic() + 30
        answered = 0
        while time.monotonic() < deadline and answered < 5:
            answered += healthy(port, timeout=5)
        assert answered == 5, log.read_text()[-3000:]
        # The held connections that were not already closed to make room are closed after the header timeout.
        deadline = time.monotonic() + 60
        while (open_fds := len(os.listdir(f"/proc/{proc.pid}/fd"))) >= 200:
            assert time.monotonic() < deadline, f"{open_fds} descriptors still open"
            time.sleep(0.5)
        assert healthy(port, timeout=5)
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stop(proc)
    text = log.read_text()
    assert len(text) < 100_000, f"{len(text)} bytes of log: {text[:2000]}"
    assert "out of system resource" not in text
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------------------
# Item 12: repeated log lines are rate-limited


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_lines_pass_up_to_the_burst_then_one_summary_per_interval() -> None:
    clock = Clock()
    written: list[logging.LogRecord] = []
    repeats = RepeatFilter(burst=3, interval_s=60, clock=clock, sink=written.append)

    def log(msg: str, *args: object, name: str = "asyncio") -> None:
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
        if repeats.filter(record):
            written.append(record)

    for fd in range(1000):
        log("socket.accept() out of system resource\nsocket: <fd=%d>", fd)
    log("another kind")
    assert [r.getMessage().split("\n")[0] for r in written] == [
        *["socket.accept() out of system resource"] * 3,
        "another kind",
    ]
    clock.now = 61
    log("another kind")  # after the interval: the count of what was dropped comes out
    summaries = [r.getMessage() for r in written if getattr(r, RepeatFilter.SUMMARY, False)]
    assert summaries == [
        "suppressed 997 more lines like this within 60 s: socket.accept() out of system resource"
    ]
    for _ in range(5):
        log("socket.accept() out of system resource\nsocket: <fd=%d>", 7)
    repeats.flush()
    summaries = [r.getMessage() for r in written if getattr(r, RepeatFilter.SUMMARY, False)]
    assert summaries[-1].startswith("suppressed 2 more lines like this")


def test_kinds_are_bounded_whatever_the_messages() -> None:
    repeats = RepeatFilter(burst=1, interval_s=60, max_kinds=50, clock=Clock())
    for i in range(10_000):
        repeats.filter(logging.LogRecord("x", logging.WARNING, __file__, 1, f"unique {i}", None, None))
    assert len(repeats._windows) <= 50


EMFILE_SCRIPT = """
import asyncio, os, resource, sys
from remediator import logs
logs.setup("text", "INFO")

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, backlog=64)
    # Use up every descriptor, as 1,100 held connections did: accept() now fails with EMFILE.
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    hog = []
    try:
        while True:
            hog.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[1]))
    getattr(logs, "flush", lambda: None)()

asyncio.run(main())
"""


def test_asyncios_accept_errors_go_through_the_rate_limit(tmp_path: Path) -> None:
    script = tmp_path / "emfile.py"
    script.write_text(EMFILE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "6"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(20):  # they wait in the listen queue: accept() keeps failing
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        _, err = proc.communicate(timeout=60)
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode()
    assert text.count("socket.accept() out of system resource") <= 11, f"{len(text)} bytes: {text[:3000]}"
    assert "suppressed" in text and "socket.accept() out of system resource" in text
