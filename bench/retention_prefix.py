"""Retention's cost on SQLite's inbox and unattached audit records, found by id (D45), against the same
deletions found through an index on their time (the design before D45), on tables of 1,000,000 rows.

The inbox and the audit table have no index on their time any more (each cost every alert a B-tree insert);
retention finds where their old rows end by looking ids up (`old_prefix_end`, O(log n)). This prints, for a
cut-off before all rows, in the middle and after all rows: the time to find the prefix's end and to select one
batch of 500 deletable rows, beside the same batch selected through a time index, in the same run.
Target: a batch stays under 5 ms whatever the cut (flat: it must not grow with the table).

    .venv/bin/python bench/retention_prefix.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
from common import Row

from remediator.store.sqlite.retention import _STATEMENTS, old_prefix_end

BATCH = 500


def _fill(db: sqlite3.Connection, rows: int) -> None:
    db.execute(
        "CREATE TABLE inbox (id INTEGER PRIMARY KEY, received_at REAL NOT NULL, body TEXT NOT NULL, processed_at REAL)"
    )
    db.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, incident_id INTEGER, kind TEXT NOT NULL,"
        " detail TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX audit_incident ON audit(incident_id)")
    body = "x" * 700  # about what Alertmanager sends for one alert
    db.executemany(
        "INSERT INTO inbox VALUES (?, ?, ?, ?)", ((i, float(i), body, float(i)) for i in range(1, rows + 1))
    )
    # Two of three audit records belong to an incident; the rest are unattached (no policy took the alert).
    db.executemany(
        "INSERT INTO audit VALUES (?, ?, ?, 'unmatched', '{}')",
        ((i, float(i), i if i % 3 else None) for i in range(1, rows + 1)),
    )
    db.commit()


def _by_id(db: sqlite3.Connection, table: str, column: str, cut: float) -> float:
    started = time.perf_counter()
    below = old_prefix_end(db, table, column, cut)
    select = _STATEMENTS[table][0].replace(f"DELETE FROM {table} WHERE id IN", "SELECT count(*) FROM (") + ")"
    db.execute(select, {"cut": cut, "n": BATCH, "below": below}).fetchone()
    return (time.perf_counter() - started) * 1e3


def _by_index(db: sqlite3.Connection, table: str, cut: float) -> float:
    started = time.perf_counter()
    if table == "inbox":
        select = (
            "SELECT count(*) FROM (SELECT id FROM inbox INDEXED BY inbox_time WHERE received_at < :cut"
            " AND processed_at IS NOT NULL AND processed_at < :cut LIMIT :n)"
        )
    else:
        select = "SELECT count(*) FROM (SELECT id FROM audit INDEXED BY audit_time WHERE incident_id IS NULL AND at < :cut LIMIT :n)"
    db.execute(select, {"cut": cut, "n": BATCH}).fetchone()
    return (time.perf_counter() - started) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        db = sqlite3.connect(Path(scratch) / "retention.sqlite3")
        db.execute("PRAGMA journal_mode=WAL")
        _fill(db, args.rows)
        # The baseline's indexes (the design before D45), used only by its statements.
        db.execute("CREATE INDEX inbox_time ON inbox(received_at)")
        db.execute("CREATE INDEX audit_time ON audit(at) WHERE incident_id IS NULL")
        rows: list[Row] = []
        for cut, where in (
            (0.0, "before every row"),
            (args.rows / 2, "in the middle"),
            (args.rows + 1.0, "after every row"),
        ):
            for table, column in (("inbox", "received_at"), ("audit", "at")):
                mine = statistics.median(_by_id(db, table, column, cut) for _ in range(21))
                base = statistics.median(_by_index(db, table, cut) for _ in range(21))
                rows.append(Row(f"{table}: a batch, cut {where}", mine, base, "ms", "< 5", mine < 5, 3))
        db.close()
    note = f"{args.rows:,} rows per table, batches of {BATCH}, medians of 21. {common.command_line()}"
    met = common.print_table("retention: the old prefix found by id", rows, "time index", note, audit)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
