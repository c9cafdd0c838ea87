"""What the long-running benchmarks (flat_cost.py, soak.py, pg_scale.py) share beyond common.py: sampling a
process from /proc, a paced open-loop load generator that builds its requests as it goes (a 30-minute run
cannot hold its requests in memory), and reading the daemon's JSON log.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import common


def realparts() -> ModuleType:
    """tests/realparts (common.py loads it by path, once)."""
    return common.realparts()


# ---------------------------------------------------------------------------------------------------------
# /proc


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> tuple[int, int]:
    """(all open file descriptors, those that are not sockets: files, pipes, eventfds) of ``pid``."""
    total = files = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        total += 1
        files += not target.startswith("socket:")
    return total, files


def dir_bytes(path: Path) -> int:
    """Bytes of the files directly in ``path`` (the SQLite store, its WAL and shared memory)."""
    total = 0
    for entry in os.scandir(path):
        if entry.is_file():
            total += entry.stat().st_size
    return total


# ---------------------------------------------------------------------------------------------------------
# Paced load


IDLE_S = 5.0
"""Seconds a keep-alive connection of paced_load may stay idle and still be reused."""


@dataclass
class PacedResult:
    sent: int = 0
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (second since start when answered, latency) of every answer; slices are computed from it
    answered: list[tuple[float, float]] = field(default_factory=list)


async def paced_load(
    port: int,
    next_request: Callable[[float], bytes],
    rate: float,
    duration_s: float,
    max_connections: int = 64,
    on_tick: Callable[[float], None] | None = None,
) -> PacedResult:
    """Open loop at ``rate`` requests/s for ``duration_s``: request i is due at i/rate s and is built when it is
    due (``next_request(seconds since start)``); latency counts from when it was due. Idle keep-alive
    connections are reused, at most ``max_connections`` are open."""
    out = PacedResult()
    # (connection, when it was last answered): one idle for IDLE_S is closed here rather than reused, since the
    # server closes a connection that sends no request head within its header timeout (10 s by default), and
    # a request written on such a connection would be lost (Alertmanager would retry it; this counts it).
    idle: list[tuple[common.Connection, float]] = [
        (await common.Connection.open(port), time.monotonic()) for _ in range(4)
    ]
    slots = asyncio.Semaphore(max_connections)
    pending: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def take() -> common.Connection:
        while idle:
            conn, since = idle.pop()
            if time.monotonic() - since < IDLE_S:
                return conn
            await conn.close()
        return await common.Connection.open(port)

    async def one(request: bytes, due: float) -> None:
        async with slots:
            conn = await take()
            try:
                status = await conn.send(request)
            except (OSError, asyncio.IncompleteReadError) as exc:
                out.errors.append(repr(exc))
                await conn.close()
                return
            now = time.perf_counter()
            out.latencies_s.append(now - due)
            out.answered.append((now - started, now - due))
            out.statuses[status] = out.statuses.get(status, 0) + 1
            if status == 200:
                out.ok += 1
            idle.append((conn, time.monotonic()))

    i = 0
    while True:
        due = started + i / rate
        if due - started >= duration_s:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request = next_request(due - started)
        task = asyncio.create_task(one(request, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        out.sent += 1
        i += 1
        if on_tick is not None and i % int(rate) == 0:
            on_tick(due - started)
    if pending:
        await asyncio.gather(*pending)
    for conn, _ in idle:
        await conn.close()
    return out


# ---------------------------------------------------------------------------------------------------------
# The daemon's log


def log_problems(log: Path, offset: int = 0) -> tuple[list[str], list[str]]:
    """(errors, warnings) among the daemon's JSON log lines from byte ``offset`` on: ERROR/CRITICAL lines and
    tracebacks; WARNING lines. A line that is not JSON (a crash's stderr) counts as an error."""
    errors: list[str] = []
    warnings: list[str] = []
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                errors.append(line[:300])
                continue
            level = str(record.get("level", "")).upper()
            text = f"{level} {record.get('logger', '')}: {record.get('msg', '')}"
            if record.get("exc"):
                text += f" | {str(record['exc']).splitlines()[-1]}"
            if level in ("ERROR", "CRITICAL"):
                errors.append(text[:300])
            elif level == "WARNING":
                warnings.append(text[:300])
    return errors, warnings
