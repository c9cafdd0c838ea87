"""``remediator store stats``: what the store holds (rows per table, size on disk). It opens the store itself,
unlike the commands that ask the daemon, so it refuses to run where there is none rather than create one.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from remediator.cli.arguments import Subparsers, command_parser, output_arg
from remediator.cli.context import load_settings
from remediator.cli.output import print_json, table
from remediator.errors import RemediatorError
from remediator.settings import Settings
from remediator.store.factory import build_store


def store_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "store",
        "what the store holds: rows per table and its size on disk",
        "  remediator store stats\n  REMEDIATOR_STORE__URL=postgresql://... remediator store stats -o json",
    )
    p.add_argument("action", nargs="?", choices=["stats"], default="stats")
    output_arg(p)
    p.set_defaults(func=cmd_store)


async def _store_stats(settings: Settings) -> dict[str, Any]:
    store = build_store(settings)
    await store.open()
    try:
        return {"tables": await store.table_rows(), "size_bytes": await store.size_bytes()}
    finally:
        await store.close()


def cmd_store(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if settings.store.url is None and not settings.store_path.exists():
        # Opening it would create an empty one here: say where none was found instead.
        raise RemediatorError(
            f"no store at {settings.store_path} (REMEDIATOR_STORE__PATH, or REMEDIATOR_STATE_DIR): run this "
            "with the daemon's settings"
        )
    stats = asyncio.run(_store_stats(settings))
    if args.output == "json":
        print_json(stats)
        return 0
    print(table(["TABLE", "ROWS"], stats["tables"].items()))
    print(f"size on disk: {stats['size_bytes']} bytes ({stats['size_bytes'] / 2**20:.1f} MiB)")
    return 0
