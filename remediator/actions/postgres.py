"""PostgreSQL sessions: terminate those idle in transaction, cancel runaway queries, summarise pg_stat_activity.

A session left "idle in transaction" holds its locks and its pool slot until someone ends it, which is how a
connection pool runs dry; a query running for an hour does the same. These actions end exactly those
sessions, oldest first and at most ``max_sessions`` per run, and nothing else: never remediator's own
session, only the databases, users and applications the policy names, and each session is checked again
(same backend, same state) in the very statement that signals it.

The target names an instance of ``settings.postgres.targets``; an alert label never becomes a connection
string, and the policy's filters reach SQL only as bind parameters. The role needs no superuser: membership
in ``pg_signal_backend`` lets it signal every non-superuser session, and ``pg_read_all_stats`` lets the
diagnosis see other roles' queries. One short connection per run: a standing one would hold a slot of the
very pool that is exhausted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import asyncpg
from pydantic import Field

from remediator.actions.base import Params
from remediator.errors import ActionError, PermanentActionError, TemporaryActionError
from remediator.settings import PostgresSettings, PostgresTarget

T = TypeVar("T")

APPLICATION_NAME = "remediator"
"""The application_name of remediator's own connections; sessions carrying it are never signalled."""

# SQLSTATE classes worth a retry: connection exception, insufficient resources (too many connections),
# operator intervention (shutdown, cannot connect now, statement timeout), and transaction rollbacks.
_TEMPORARY_CLASSES = ("08", "53", "57", "40")


def _map_error(exc: BaseException, target: str) -> ActionError:
    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, TimeoutError):
        return TemporaryActionError(f"postgres {target} did not answer in time")
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        message = f"postgres {target} answered {sqlstate}: {exc}"
        if sqlstate == "53300":
            return TemporaryActionError(
                f"{message} (no connection slot left for remediator: on PostgreSQL 16+ grant it "
                "pg_use_reserved_connections)"
            )
        if sqlstate[:2] in _TEMPORARY_CLASSES:
            return TemporaryActionError(message)
        return PermanentActionError(message)
    if isinstance(exc, OSError):
        return TemporaryActionError(f"postgres {target} unreachable: {exc}")
    return PermanentActionError(f"unexpected postgres error on {target}: {type(exc).__name__}: {exc}")


class PostgresBackend:
    """The PostgreSQL instances of the settings, by name; one connection per action run."""

    name = "postgres"

    def __init__(self, settings: PostgresSettings) -> None:
        self._targets: Mapping[str, PostgresTarget] = dict(settings.targets)

    async def call(
        self, target: str, fn: Callable[[Any], Awaitable[T]], application_name: str = APPLICATION_NAME
    ) -> T:
        """Run ``fn(connection)`` on the instance named ``target``; map every failure to a typed ActionError.

        ``application_name`` is remediator's own (which its actions never touch) except for a drill's session,
        which must look like any other client's."""
        instance = self._targets.get(target)
        if instance is None:
            known = ", ".join(sorted(self._targets)) or "none"
            raise PermanentActionError(
                f"no PostgreSQL instance named {target} in REMEDIATOR_POSTGRES__TARGETS (configured: {known})"
            )
        timeout = instance.timeout_s
        try:
            connection = await asyncpg.connect(
                instance.dsn.get_secret_value(),
                timeout=timeout,
                command_timeout=timeout,
                server_settings={"application_name": application_name},
            )
        except Exception as exc:
            raise _map_error(exc, target) from exc
        try:
            return await fn(connection)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            mapped = _map_error(exc, target)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            try:
                await asyncio.wait_for(connection.close(), timeout)
            except Exception:
                connection.terminate()


class SessionFilter(Params):
    databases: tuple[str, ...] = ()
    """Only sessions connected to one of these databases (names). Empty: any database."""
    users: tuple[str, ...] = ()
    """Only sessions of one of these roles (names). Empty: any role."""
    applications: tuple[str, ...] = ()
    """Only sessions whose application_name is one of these (exact). Empty: any application."""
    max_sessions: int = Field(default=10, ge=1, le=1000)
    """Most sessions signalled per run (count), oldest first; the rest wait for the next attempt."""


class TerminateIdleParams(SessionFilter):
    idle_s: float = Field(ge=1, le=7 * 86_400)
    """Seconds a session must have been idle in transaction (since its last state change) to be terminated."""


class CancelQueriesParams(SessionFilter):
    running_s: float = Field(ge=1, le=7 * 86_400)
    """Seconds a query must have been running to be cancelled (the session stays connected)."""


class ActivityParams(Params):
    top: int = Field(default=5, ge=1, le=50)
    """Sessions listed per category (count): oldest idle in transaction, longest running."""
    query_chars: int = Field(default=200, ge=0, le=5000)
    """Characters of each listed session's query text to include (count); 0 leaves queries out."""


# Sessions remediator may signal ($1-$4 are the bind parameters of _filters): client backends other than its
# own, of the policy's databases, users and applications, and not a superuser's unless remediator's role is
# one (signalling those would fail anyway). Repeated literally in each statement: SQL is never assembled.
_IDLE_CANDIDATES = """
SELECT a.pid, a.backend_start, a.datname, a.usename, a.application_name,
       extract(epoch FROM clock_timestamp() - a.state_change)::float8 AS seconds
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
  AND a.application_name <> $1
  AND (cardinality($2::text[]) = 0 OR a.datname = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR a.usename = ANY($3::text[]))
  AND (cardinality($4::text[]) = 0 OR a.application_name = ANY($4::text[]))
  AND (NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
       OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user))
  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change < clock_timestamp() - make_interval(secs => $5)
ORDER BY a.state_change
LIMIT $6
"""

# Checked again in the statement that signals: the same backend, still idle in transaction for long enough.
_TERMINATE = """
SELECT pg_terminate_backend(a.pid)
FROM pg_stat_activity a
WHERE a.pid = $1 AND a.backend_start = $2
  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change < clock_timestamp() - make_interval(secs => $3)
"""

_QUERY_CANDIDATES = """
SELECT a.pid, a.backend_start, a.datname, a.usename, a.application_name, a.query_start,
       extract(epoch FROM clock_timestamp() - a.query_start)::float8 AS seconds
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
  AND a.application_name <> $1
  AND (cardinality($2::text[]) = 0 OR a.datname = ANY($2::text[]))
  AND (cardinality($3::text[]) = 0 OR a.usename = ANY($3::text[]))
  AND (cardinality($4::text[]) = 0 OR a.application_name = ANY($4::text[]))
  AND (NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
       OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user))
  AND a.state = 'active'
  AND a.query_start < clock_timestamp() - make_interval(secs => $5)
ORDER BY a.query_start
LIMIT $6
"""

# The same backend, still running the same query.
_CANCEL = """
SELECT pg_cancel_backend(a.pid)
FROM pg_stat_activity a
WHERE a.pid = $1 AND a.backend_start = $2 AND a.state = 'active' AND a.query_start = $3
"""


def _who(row: Mapping[str, Any]) -> str:
    return (
        f"pid={row['pid']} db={row['datname']} user={row['usename']} "
        f"app={row['application_name'] or '-'} for {row['seconds']:.1f}s"
    )


def _filters(params: SessionFilter) -> list[Any]:
    return [APPLICATION_NAME, list(params.databases), list(params.users), list(params.applications)]


def _describe(filters: SessionFilter) -> str:
    parts = [
        f"{label} in {', '.join(values)}"
        for label, values in (
            ("database", filters.databases),
            ("user", filters.users),
            ("application", filters.applications),
        )
        if values
    ]
    return f" ({'; '.join(parts)})" if parts else ""


# Sessions remediator's role cannot see: pg_stat_activity shows other roles' backend type, state, timestamps
# and query only to members of those roles or of pg_read_all_stats (the rest read NULL).
_HIDDEN = """
SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL AND pid <> pg_backend_pid()
"""


async def _hidden(connection: Any) -> str:
    hidden = int(await connection.fetchval(_HIDDEN))
    if not hidden:
        return ""
    return (
        f"; {hidden} session(s) of other roles are hidden from remediator's role, "
        "which needs pg_read_all_stats to see them"
    )


@dataclass
class _Signalled:
    done: list[str]
    gone: list[str]
    denied: list[str]


async def _signal_each(
    connection: Any, rows: list[Any], statement: str, args: Callable[[Any], list[Any]]
) -> _Signalled:
    """Signal each candidate with ``statement``, which checks it again first."""
    result = _Signalled([], [], [])
    for row in rows:
        try:
            signalled = await connection.fetchval(statement, *args(row))
        except asyncpg.InsufficientPrivilegeError as exc:
            result.denied.append(f"{_who(row)}: {exc}")
            continue
        (result.done if signalled is True else result.gone).append(_who(row))
    return result


def _report(verb: str, target: str, result: _Signalled, found: int) -> str:
    if result.denied and not result.done and not result.gone:
        # Every try was refused: the role lacks pg_signal_backend, and retrying will not give it.
        raise PermanentActionError(
            f"postgres {target}: not allowed to signal these sessions (grant remediator's role "
            f"pg_signal_backend): {'; '.join(result.denied)}"
        )
    lines = [f"{verb} {len(result.done)} of {found} session(s) on {target}"]
    lines += [f"  {verb} {who}" for who in result.done]
    lines += [f"  skipped {who}: it moved on or ended first" for who in result.gone]
    lines += [f"  refused {why}" for why in result.denied]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Sweep:
    """What terminate_idle and cancel_long_queries share: find the candidates, signal each one again only if
    it still qualifies, and report; finding none is a failure, so the ladder moves on at once instead of
    waiting out a verification window for a change that was never made."""

    candidates: str
    signal: str
    signal_args: Callable[[Any], list[Any]]
    verb: str
    nothing: str

    async def run(self, connection: Any, target: str, params: SessionFilter, threshold_s: float) -> str:
        rows = await connection.fetch(self.candidates, *_filters(params), threshold_s, params.max_sessions)
        if not rows:
            raise PermanentActionError(
                f"{self.nothing} on {target}{_describe(params)}{await _hidden(connection)}"
            )
        result = await _signal_each(connection, rows, self.signal, self.signal_args)
        return _report(self.verb, target, result, len(rows))


@dataclass(frozen=True)
class TerminateIdle:
    """``postgres.terminate_idle``: terminate sessions idle in transaction for longer than ``idle_s``."""

    backend_: PostgresBackend
    name: str = "postgres.terminate_idle"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "postgres"
    params_model: type[Params] = TerminateIdleParams

    async def run(self, target: str, params: Params, host: str = "") -> str:
        assert isinstance(params, TerminateIdleParams)
        sweep = _Sweep(
            candidates=_IDLE_CANDIDATES,
            signal=_TERMINATE,
            signal_args=lambda r: [r["pid"], r["backend_start"], params.idle_s],
            verb="terminated",
            nothing=f"nothing to terminate: no session idle in transaction for over {params.idle_s:g}s",
        )
        return await self.backend_.call(target, lambda c: sweep.run(c, target, params, params.idle_s))


@dataclass(frozen=True)
class CancelLongQueries:
    """``postgres.cancel_long_queries``: cancel queries running for longer than ``running_s``."""

    backend_: PostgresBackend
    name: str = "postgres.cancel_long_queries"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "postgres"
    params_model: type[Params] = CancelQueriesParams

    async def run(self, target: str, params: Params, host: str = "") -> str:
        assert isinstance(params, CancelQueriesParams)
        sweep = _Sweep(
            candidates=_QUERY_CANDIDATES,
            signal=_CANCEL,
            signal_args=lambda r: [r["pid"], r["backend_start"], r["query_start"]],
            verb="cancelled",
            nothing=f"nothing to cancel: no query running for over {params.running_s:g}s",
        )
        return await self.backend_.call(target, lambda c: sweep.run(c, target, params, params.running_s))


_ACTIVITY_STATES = """
SELECT coalesce(state, 'unknown') AS state, count(*) AS n,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1
ORDER BY 2 DESC, 1
"""

_OLDEST_IDLE = """
SELECT pid, datname, usename, application_name, state,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS seconds, left(query, $2) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND state IN ('idle in transaction', 'idle in transaction (aborted)')
ORDER BY state_change
LIMIT $1
"""

_LONGEST_RUNNING = """
SELECT pid, datname, usename, application_name, state, wait_event_type, wait_event,
       extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds, left(query, $2) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
ORDER BY query_start
LIMIT $1
"""


def _session_line(row: Mapping[str, Any], query_chars: int) -> str:
    line = f"  {_who(row)}"
    if row.get("wait_event_type"):
        line += f" waiting on {row['wait_event_type']}:{row['wait_event']}"
    if query_chars and row["query"]:
        line += f" query: {' '.join(str(row['query']).split())}"
    return line


@dataclass(frozen=True)
class Activity:
    """``postgres.activity``: sessions by state against max_connections, the oldest idle in transaction and
    the longest running queries, as evidence."""

    backend_: PostgresBackend
    name: str = "postgres.activity"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "postgres"
    params_model: type[Params] = ActivityParams

    async def run(self, target: str, params: Params, host: str = "") -> str:
        assert isinstance(params, ActivityParams)

        async def activity(connection: Any) -> str:
            states = await connection.fetch(_ACTIVITY_STATES)
            limit = await connection.fetchval("SELECT current_setting('max_connections')::int")
            total = sum(int(r["n"]) for r in states)
            waiting = sum(int(r["waiting"]) for r in states)
            counts = ", ".join(f"{r['state']}={r['n']}" for r in states)
            lines = [f"{target}: {total}/{limit} client connections ({counts}); {waiting} waiting on a lock"]
            oldest = await connection.fetch(_OLDEST_IDLE, params.top, params.query_chars)
            lines.append(f"oldest idle in transaction ({len(oldest)}):")
            lines += [_session_line(r, params.query_chars) for r in oldest]
            running = await connection.fetch(_LONGEST_RUNNING, params.top, params.query_chars)
            lines.append(f"longest running ({len(running)}):")
            lines += [_session_line(r, params.query_chars) for r in running]
            return "\n".join(lines)

        return await self.backend_.call(target, activity)
