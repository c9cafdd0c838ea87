"""How the commands print: tables aligned under a header, JSON for ``-o json``, times in UTC. One place, so that
every listing looks alike and a script can rely on the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """A header line (unless None), then one line per row, each column as wide as its widest cell; an empty
    cell shows ``-``, a cell's line breaks become spaces."""
    lines = [["-" if c is None or c == "" else " ".join(str(c).split()) for c in row] for row in rows]
    if headers is not None:
        lines.insert(0, list(headers))
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
