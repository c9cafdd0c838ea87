"""Log setup: human-readable text by default, one JSON object per line for log pipelines; repeated lines are
rate-limited.

Why the limit: a fault that repeats (a full disk, a database that is down, asyncio's "socket.accept() out of
system resource" when descriptors run out) logged the same line hundreds of thousands of times a minute
(170 MiB in 60 s, issue 12), filling the disk the store needs and burying the line that says what happened.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

FIELDS = ("incident", "policy", "target", "host")
"""Passed as ``extra=`` (``Incident.log_fields``): what a line is about, so a log pipeline can filter on it."""


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """One line for a person: time, level, logger, message, then the fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # a traceback stays below the fields
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{first} [{shown}]{newline}{rest}"


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets the first ``burst`` records of one kind through per ``interval_s``, drops the rest, and reports them
    as one "suppressed K more lines like this" record once the interval is over.

    A kind is (logger, level, first line of the message template): the template, not the formatted message,
    so "cannot reach %s" with a thousand different hosts is one kind. The report is written through ``sink``
    (the handler) when the next record of any kind arrives after the interval, or on ``flush()``.
    """

    SUMMARY = "repeat_summary"
    """Attribute set on the report records, which pass unfiltered."""

    def __init__(
        self,
        burst: int = 10,
        interval_s: float = 60.0,
        max_kinds: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        sink: Callable[[logging.LogRecord], object] | None = None,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self.clock = clock
        self.sink = sink
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._lock = threading.Lock()  # records come from the loop and from the store's and Docker's threads
        self._next_sweep = 0.0

    @staticmethod
    def kind(record: logging.LogRecord) -> tuple[str, int, str]:
        template = str(record.msg)
        return record.name, record.levelno, template.split("\n", 1)[0][:200]

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.SUMMARY, False):
            return True
        key = self.kind(record)
        with self._lock:
            now = self.clock()
            reports = self._sweep(now) if now >= self._next_sweep else []
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval_s:
                if window is not None and window.suppressed:
                    reports.append((key, window))
                window = self._windows[key] = _Window(now)
                if len(self._windows) > self.max_kinds:
                    # Bounded memory whatever varies in the templates: the oldest kind goes, with its report.
                    oldest = next(iter(self._windows))
                    reports.append((oldest, self._windows.pop(oldest)))
            if window.passed < self.burst:
                window.passed += 1
                allowed = True
            else:
                window.suppressed += 1
                allowed = False
        self._report(reports)
        return allowed

    def flush(self) -> None:
        """Report every count not yet reported (at shutdown)."""
        with self._lock:
            reports = list(self._windows.items())
            self._windows.clear()
        self._report(reports)

    def _sweep(self, now: float) -> list[tuple[tuple[str, int, str], _Window]]:
        # Intervals that ended while their kind went quiet: reported now rather than never.
        self._next_sweep = now + min(1.0, self.interval_s)
        ended = [(k, w) for k, w in self._windows.items() if now - w.start >= self.interval_s]
        for key, _ in ended:
            del self._windows[key]
        return ended

    def _report(self, reports: list[tuple[tuple[str, int, str], _Window]]) -> None:
        if self.sink is None:
            return
        for (name, level, template), window in reports:
            if not window.suppressed:
                continue
            record = logging.LogRecord(
                name,
                level,
                __file__,
                0,
                "suppressed %d more lines like this within %g s: %s",
                (window.suppressed, self.interval_s, template),
                None,
            )
            setattr(record, self.SUMMARY, True)
            self.sink(record)


def setup(fmt: str, level: str) -> RepeatFilter:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # On the handler, not a logger: it sees every record that reaches stderr, asyncio's and aiohttp's too.
    repeats = RepeatFilter(sink=handler.handle)
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return repeats


def flush() -> None:
    """Write the pending "suppressed" reports of the handlers ``setup`` installed."""
    for handler in logging.getLogger().handlers:
        for installed in handler.filters:
            if isinstance(installed, RepeatFilter):
                installed.flush()
