"""What the benchmarks share: the real parts (tests/realparts/, imported by path), a remediator daemon as a
subprocess, a lean HTTP/1.1 load generator, Alertmanager-shaped payloads, statistics and the result table.

Every process listens on 127.0.0.1 and is stopped by its pid; every load is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
TOKEN = "bench-token-0123456789abcdef"
PYTHON = sys.executable

# Never route benchmark traffic through a proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _tests_module(name: str) -> ModuleType:
    """A module of tests/ (loaded by path: bench/ is not a package of it), so both use one copy."""
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "tests" / name
    if path.is_dir():  # a package (tests/realparts/): its modules import each other relatively
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
    else:
        spec = importlib.util.spec_from_file_location(name, path.with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def realparts() -> ModuleType:
    """tests/realparts/, the same private dockerd, Prometheus and Alertmanager the tests use."""
    return _tests_module("realparts")


# ---------------------------------------------------------------------------------------------------------
# HTTP helpers (blocking; for setup and polling, never for the measured load)


def http_json(url: str, *, method: str = "GET", body: Any = None, token: str | None = TOKEN) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with _http.open(request, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def http_text(url: str) -> str:
    with _http.open(url, timeout=10) as resp:
        return str(resp.read().decode())


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------
# Processes: remediator serve, and the bare aiohttp handler


@dataclass
class Process:
    """A server we started: its pid, port and log; stop() by pid (TERM, then KILL)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    url: str = ""

    def __post_init__(self) -> None:
        self.url = f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        """CPU time (user + system) the process has used so far, in seconds."""
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process has had, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(
    argv: list[str], env: dict[str, str], log: Path, port: int, ready_path: str, cwd: Path | None = None
) -> Process:
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env={**clean, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    process = Process(proc, port, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[2:4]} exited with {proc.returncode}:\n{process.log_tail()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            _http.open(process.url + ready_path, timeout=1) as resp,
        ):
            if resp.status == 200:
                return process
        if time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"not ready in 30 s:\n{process.log_tail()}")
        time.sleep(0.05)


def start_remediator(
    workdir: Path, policies_dir: Path, port: int | None = None, source: Path | None = None, **env: str
) -> Process:
    """`python -m remediator serve` on ``port`` (default: a free one), SQLite store under ``workdir``, the
    bench token; ``source``: run the remediator package found there (an older commit's, see `checkout`)
    instead of this tree's."""
    port = port or realparts().free_port()
    settings = {
        "REMEDIATOR_STATE_DIR": str(workdir / "state"),
        "REMEDIATOR_POLICIES_DIR": str(policies_dir),
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        "REMEDIATOR_SERVER__SHUTDOWN_GRACE_S": "1",
        **env,
    }
    argv = [PYTHON, "-m", "remediator", "serve", "--host", LOOPBACK, "--port", str(port)]
    # `python -m` puts the working directory first on sys.path, ahead of the venv's install of this tree.
    return _spawn(argv, settings, workdir / f"remediator-{port}.log", port, "/readyz", cwd=source)


def checkout(ref: str, workdir: Path) -> Path:
    """The remediator package and policies of commit ``ref``, extracted under ``workdir`` (no worktree is
    registered in the repository), to measure it beside this tree in the same run."""
    target = workdir / f"source-{ref}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "remediator", "policies"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start_bare_handler(workdir: Path) -> Process:
    """The baseline: bench/bare_handler.py, an aiohttp handler that parses the JSON body and answers 200."""
    port = realparts().free_port()
    argv = [PYTHON, str(Path(__file__).with_name("bare_handler.py")), str(port)]
    return _spawn(argv, {}, workdir / "bare.log", port, "/healthz")


def backlog(daemon: Process) -> int:
    return int(http_json(daemon.url + "/readyz", token=None)["backlog"])


def wait_drained(daemon: Process, timeout: float = 60) -> float:
    """Wait until intake has processed everything acknowledged; returns the seconds it took."""
    started = time.monotonic()
    wait_for(lambda: backlog(daemon) == 0, timeout=timeout, what="intake backlog", interval=0.01)
    return time.monotonic() - started


def metric_sum(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        found = re.match(r"([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)", line)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(found.group(3))
    return total


# ---------------------------------------------------------------------------------------------------------
# Docker events


class Events:
    """Container events of the daemon, by container name, with the daemon's timestamps (ns)."""

    def __init__(self, client: Any) -> None:
        self._queues: dict[str, queue.Queue[tuple[str, int]]] = defaultdict(queue.Queue)
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._stream = client.events(decode=True, filters={"type": "container"})
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self._stream:
                name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                action = event.get("Action", "")
                self._counts[(name, action)] += 1
                self._queues[name].put((action, int(event["timeNano"])))
        except Exception:  # the stream ends when the daemon stops
            return

    def drain(self, name: str) -> None:
        q = self._queues[name]
        while not q.empty():
            q.get_nowait()

    def wait(self, name: str, action: str, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {action} event for {name}")
            got, at = self._queues[name].get(timeout=remaining)
            if got == action:
                return at

    def count(self, name: str, action: str) -> int:
        """How many ``action`` events ``name`` has had since the stream opened (or since the last drain)."""
        return self._counts[(name, action)]

    def close(self) -> None:
        self._stream.close()


# ---------------------------------------------------------------------------------------------------------
# Payloads shaped like Alertmanager's (webhook version 4)


def alert_json(
    alertname: str,
    fingerprint: str,
    status: str = "firing",
    starts_at: str = "2026-11-23T10:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager sends it: the tests' own shape (tests/helpers.py), so both measure the same."""
    alert: dict[str, Any] = _tests_module("helpers").alert(
        alertname, status=status, fingerprint=fingerprint, starts_at=starts_at, **labels
    )
    return alert


def notification_json(*alerts: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = _tests_module("helpers").notification(*alerts)
    return body


def post_request(port: int, body: dict[str, Any], path: str = "/alerts", token: str = TOKEN) -> bytes:
    """One complete HTTP/1.1 keep-alive POST, as bytes, ready to write on a socket."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUser-Agent: Alertmanager/0.25.0\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


# ---------------------------------------------------------------------------------------------------------
# Load generator: raw asyncio streams, one request in flight per connection (as Alertmanager sends)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        """Write one request, read its whole response; returns the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head!r}")
        await self.reader.readexactly(int(length.group(1)))
        return status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class LoadResult:
    sent: int
    ok: int
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def pct_ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000


async def closed_loop(
    port: int, requests: Sequence[bytes], connections: int, duration_s: float
) -> LoadResult:
    """As fast as the server answers: ``connections`` clients, each sending its next request when the previous
    one is answered, until ``duration_s`` or the requests run out."""
    conns = [await Connection.open(port) for _ in range(connections)]
    next_index = 0
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def client(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(requests) and time.perf_counter() < deadline:
            request = requests[next_index]
            next_index += 1
            t0 = time.perf_counter()
            status = await conn.send(request)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return LoadResult(len(latencies), statuses.get(200, 0), elapsed, latencies, statuses)


async def open_loop(
    port: int, requests: Sequence[bytes], rate: float, max_connections: int = 256
) -> LoadResult:
    """A fixed arrival rate: request i is due at i/rate seconds; its latency counts from when it was due, so a
    server that falls behind shows it (no coordinated omission). Connections are reused when idle."""
    idle: list[Connection] = []
    opened = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    slots = asyncio.Semaphore(max_connections)

    async def one(request: bytes, due: float) -> None:
        nonlocal opened
        async with slots:
            if idle:
                conn = idle.pop()
            else:
                opened += 1
                conn = await Connection.open(port)
            status = await conn.send(request)
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
            idle.append(conn)

    # Warm connections, so the first requests do not pay the TCP handshake.
    for _ in range(4):
        idle.append(await Connection.open(port))
    tasks = []
    started = time.perf_counter()
    for i, request in enumerate(requests):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    for conn in idle:
        await conn.close()
    return LoadResult(len(latencies), statuses.get(200, 0), elapsed, latencies, statuses)


# ---------------------------------------------------------------------------------------------------------
# Statistics and the table


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


@dataclass
class Row:
    """One line of the results: a figure for remediator, the baseline's, their ratio, and the target."""

    what: str
    value: float
    baseline: float | None = None
    unit: str = ""
    target: str = ""
    ok: bool | None = None  # None: informational, no target
    digits: int = 1


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def print_table(
    title: str, rows: Sequence[Row], baseline_name: str, note: str = "", audit: CpuAudit | None = None
) -> bool:
    """Print the results; returns True when every target is met."""
    header = ("", "remediator", baseline_name, "ratio", "target", "")
    lines = []
    for row in rows:
        ratio = "-"
        if row.baseline not in (None, 0) and row.value == row.value:
            ratio = f"{row.value / row.baseline:.2f}x"
        verdict = "" if row.ok is None else ("ok" if row.ok else "MISSED")
        lines.append(
            (
                f"{row.what}{f' ({row.unit})' if row.unit else ''}",
                _fmt(row.value, row.digits),
                _fmt(row.baseline, row.digits),
                ratio,
                row.target,
                verdict,
            )
        )
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    print(f"\n{title}")
    if note:
        print(note)
    print(f"measured on {code_version()}" + (f"; {audit.describe()}" if audit else ""))
    for i, line in enumerate([header, *lines]):
        cells = [
            line[0].ljust(widths[0]),
            *(str(c).rjust(w) for c, w in zip(line[1:5], widths[1:5], strict=True)),
        ]
        print("  " + "  ".join(cells) + f"  {line[5]}".rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths[:5]))
    met = all(row.ok is not False for row in rows)
    missed = [row.what for row in rows if row.ok is False]
    print("\nresult: " + ("every target met" if met else f"MISSED: {', '.join(missed)}"))
    return met


# The benchmarks act on one container again and again, on purpose: the limits that would (rightly) refuse that
# in production (cooldown, rate limit, flapping) are lifted in the policies they load.
LIFTED_LIMITS = {
    "cooldown_s": 0,
    "max_actions": {"count": 10_000, "window_s": 60},
    "flapping": {"count": 10_000, "window_s": 60},
}


def with_limits_lifted(policy_yaml: str) -> str:
    """A policy file's documents with their ``limits`` replaced by LIFTED_LIMITS (comments are lost)."""
    import yaml

    docs = [doc for doc in yaml.safe_load_all(policy_yaml) if doc]
    for doc in docs:
        doc["limits"] = LIFTED_LIMITS
    return yaml.safe_dump_all(docs, sort_keys=False)


def workdir(prefix: str) -> Path:
    """A scratch directory on the real disk (the durable store is measured with real fsyncs)."""
    return Path(tempfile.mkdtemp(prefix=f"remediator-bench-{prefix}-", dir="/var/tmp"))


def command_line() -> str:
    return " ".join([".venv/bin/python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def code_version() -> str:
    """The commit measured, and whether remediator/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "remediator"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}{' + uncommitted changes in remediator/' if dirty else ''}"


class CpuAudit:
    """How busy the machine was with processes that are not this benchmark's, over the run.

    The benchmarks share two cores with whatever else runs; a figure measured while something else took half
    of them is not comparable. This reads /proc: all CPU time spent, minus this process's and its
    descendants' (the daemons it started, reaped ones included)."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK")
        self._cpus = os.cpu_count() or 1
        self._start = (time.monotonic(), self._machine_busy(), self._own())

    @staticmethod
    def _machine_busy() -> int:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle

    @staticmethod
    def _own() -> int:
        children: dict[int, list[int]] = defaultdict(list)
        times: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                raw = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            children[int(fields[1])].append(int(name))
            times[int(name)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        total, todo = 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            total += times.get(pid, 0)
            todo += children.get(pid, [])
        return total

    def other_load(self) -> float:
        """Share of all CPUs used by other processes since construction (0..1)."""
        t0, busy0, own0 = self._start
        elapsed = time.monotonic() - t0
        other = (self._machine_busy() - busy0) - (self._own() - own0)
        return max(0.0, other / (elapsed * self._hz * self._cpus)) if elapsed > 0 else 0.0

    @classmethod
    def quiet_start(cls, threshold: float = 0.10, max_wait_s: float = 180) -> CpuAudit:
        """Wait (up to ``max_wait_s``) for a 3-second stretch in which other processes use under ``threshold``
        of the CPUs, then start auditing. A machine that never quiets down is measured anyway, and flagged."""
        deadline = time.monotonic() + max_wait_s
        while True:
            probe = cls()
            time.sleep(3)
            load = probe.other_load()
            if load < threshold or time.monotonic() > deadline:
                if load >= threshold:
                    print(f"the machine stayed busy ({load:.0%} of the CPUs); measuring anyway", flush=True)
                return cls()
            print(f"waiting for a quiet machine (other processes use {load:.0%} of the CPUs)", flush=True)

    def describe(self) -> str:
        load = self.other_load()
        text = f"other processes used {load:.0%} of the {self._cpus} CPUs meanwhile"
        return text + (" (a busy machine: figures are not comparable)" if load > 0.10 else "")
