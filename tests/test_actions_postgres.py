"""postgres.terminate_idle, postgres.cancel_long_queries and postgres.activity on a throwaway PostgreSQL.

remediator connects as a role that has only pg_signal_backend and pg_read_all_stats, as docs/policies.md says to
set it up; the application's sessions belong to another, ordinary role.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from realparts import Postgres, free_port

from remediator.actions.postgres import (
    Activity,
    ActivityParams,
    CancelLongQueries,
    CancelQueriesParams,
    PostgresBackend,
    TerminateIdle,
    TerminateIdleParams,
)
from remediator.errors import PermanentActionError, TemporaryActionError
from remediator.settings import PostgresSettings

pytestmark = pytest.mark.realparts

# remediator's role as docs/policies.md says; one that cannot signal; one that cannot see other roles' sessions.
OPS, WEAK, BLIND = "rem_ops", "rem_weak", "rem_blind"
APP = "rem_app"


def dsn_as(postgres: Postgres, role: str, database: str = "postgres") -> str:
    return f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}"


@pytest.fixture(scope="module")
def roles(postgres: Postgres) -> Iterator[None]:
    async def create() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            for statement in (
                f"CREATE ROLE {OPS} LOGIN IN ROLE pg_signal_backend, pg_read_all_stats",
                f"CREATE ROLE {WEAK} LOGIN IN ROLE pg_read_all_stats",
                f"CREATE ROLE {BLIND} LOGIN IN ROLE pg_signal_backend",
                f"CREATE ROLE {APP} LOGIN",
            ):
                with contextlib.suppress(asyncpg.DuplicateObjectError):
                    await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(create())
    yield


@pytest.fixture
def backend(postgres: Postgres, roles: None) -> PostgresBackend:
    return PostgresBackend(
        PostgresSettings.model_validate(
            {
                "targets": {
                    "orders-db": {"dsn": dsn_as(postgres, OPS), "timeout_s": 10},
                    "weak-db": {"dsn": dsn_as(postgres, WEAK)},
                    "blind-db": {"dsn": dsn_as(postgres, BLIND)},
                    "gone-db": {
                        "dsn": f"postgresql://{OPS}@127.0.0.1:{free_port()}/postgres",
                        "timeout_s": 2,
                    },
                    "nodb": {"dsn": dsn_as(postgres, OPS, "no_such_database")},
                }
            }
        )
    )


class Sessions:
    """Client sessions held open by a test, closed at its end."""

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres
        self.held: list[Any] = []

    async def open(self, app_name: str, role: str = APP, *, in_transaction: bool = True) -> Any:
        conn = await asyncpg.connect(
            dsn_as(self.postgres, role), server_settings={"application_name": app_name}
        )
        self.held.append(conn)
        if in_transaction:
            await conn.execute("BEGIN")
            await conn.fetchval("SELECT 1")
        return conn

    async def close(self) -> None:
        for conn in self.held:
            conn.terminate()


@pytest_asyncio.fixture
async def sessions(postgres: Postgres, roles: None) -> AsyncIterator[Sessions]:
    held = Sessions(postgres)
    try:
        yield held
    finally:
        await held.close()


async def activity_of(postgres: Postgres, pids: list[int]) -> dict[int, tuple[str, float]]:
    """pid -> (state, seconds since its last state change) of the sessions still there."""
    conn = await asyncpg.connect(postgres.dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, state, extract(epoch FROM clock_timestamp() - state_change)::float8 AS s "
            "FROM pg_stat_activity WHERE pid = ANY($1::int[])",
            pids,
        )
    finally:
        await conn.close()
    return {r["pid"]: (r["state"], r["s"]) for r in rows}


async def wait_until(postgres: Postgres, pids: list[int], check: Any, what: str) -> None:
    """Poll pg_stat_activity until check(activity) holds: waits for a state, asserts nothing about time."""
    for _ in range(200):
        if check(await activity_of(postgres, pids)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited 10 s for {what}: {await activity_of(postgres, pids)}")


async def test_terminates_sessions_idle_in_transaction_and_nothing_else(
    postgres: Postgres, backend: PostgresBackend, sessions: Sessions
) -> None:
    old = [await sessions.open("worker") for _ in range(3)]
    # Also idle in transaction for long enough, but outside the policy's filters or remediator's own.
    other_app = await sessions.open("reporting")
    superuser = await sessions.open("worker", role="postgres")
    own = await sessions.open("remediator")
    old_pids = [c.get_server_pid() for c in old]
    kept_old = [c.get_server_pid() for c in (other_app, superuser, own)]
    await wait_until(
        postgres,
        old_pids + kept_old,
        lambda act: all(state == "idle in transaction" and s > 1.0 for state, s in act.values()),
        "the sessions to be idle in transaction for over 1 s",
    )
    fresh_idle = await sessions.open("worker", in_transaction=False)
    fresh_in_transaction = await sessions.open("worker")
    kept = [*kept_old, fresh_idle.get_server_pid(), fresh_in_transaction.get_server_pid()]

    detail = await TerminateIdle(backend).run(
        "orders-db",
        TerminateIdleParams(
            idle_s=1, databases=("postgres",), users=(APP, "postgres"), applications=("worker",)
        ),
    )

    lines = detail.splitlines()
    assert lines[0] == "terminated 3 of 3 session(s) on orders-db"
    assert sorted(int(line.split("pid=")[1].split()[0]) for line in lines[1:]) == sorted(old_pids)
    assert all(f"user={APP} app=worker for " in line for line in lines[1:])
    await wait_until(postgres, old_pids, lambda act: not act, "the terminated sessions to end")
    for conn in old:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await conn.fetchval("SELECT 1")
    assert set(await activity_of(postgres, kept)) == set(kept)
    assert await fresh_in_transaction.fetchval("SELECT 2") == 2

    # Nothing left to do is a failure that moves the ladder on, not a success that waits for recovery.
    with pytest.raises(PermanentActionError, match="nothing to terminate: no session idle in transaction"):
        await TerminateIdle(backend).run("orders-db", TerminateIdleParams(idle_s=1, applications=("worker",)))


async def test_terminates_at_most_max_sessions_oldest_first_and_needs_pg_signal_backend(
    postgres: Postgres, backend: PostgresBackend, sessions: Sessions
) -> None:
    held = [await sessions.open("capped") for _ in range(4)]
    pids = [c.get_server_pid() for c in held]
    await wait_until(
        postgres,
        pids,
        lambda act: all(state == "idle in transaction" and s > 1.0 for state, s in act.values()),
        "the sessions to be idle in transaction for over 1 s",
    )
    params = TerminateIdleParams(idle_s=1, applications=("capped",), max_sessions=3)

    # A role without pg_signal_backend may not signal another role's sessions: permanent, with the remedy.
    with pytest.raises(PermanentActionError, match="grant remediator's role pg_signal_backend"):
        await TerminateIdle(backend).run("weak-db", params)
    # Without pg_read_all_stats it cannot even see that they are idle in transaction, and says so.
    with pytest.raises(
        PermanentActionError, match="hidden from remediator's role, which needs pg_read_all_stats"
    ):
        await TerminateIdle(backend).run("blind-db", params)
    assert set(await activity_of(postgres, pids)) == set(pids)

    detail = await TerminateIdle(backend).run("orders-db", params)
    assert detail.startswith("terminated 3 of 3 session(s) on orders-db")
    await wait_until(postgres, pids[:3], lambda act: not act, "the three oldest sessions to end")
    assert set(await activity_of(postgres, pids)) == {pids[3]}


async def test_cancels_long_queries_and_keeps_the_session(
    postgres: Postgres, backend: PostgresBackend, sessions: Sessions
) -> None:
    slow = await sessions.open("slow-report", in_transaction=False)
    pid = slow.get_server_pid()
    query = asyncio.create_task(slow.fetchval("SELECT pg_sleep(60)"))
    try:
        await wait_until(
            postgres,
            [pid],
            lambda act: act.get(pid, ("", 0.0))[0] == "active" and act[pid][1] > 1.0,
            "the query to run for over 1 s",
        )
        detail = await CancelLongQueries(backend).run(
            "orders-db", CancelQueriesParams(running_s=1, applications=("slow-report",))
        )
        assert detail.startswith("cancelled 1 of 1 session(s) on orders-db\n  cancelled pid=")
        with pytest.raises(asyncpg.QueryCanceledError):
            await query
    finally:
        query.cancel()
        with contextlib.suppress(BaseException):
            await query
    assert await slow.fetchval("SELECT 3") == 3
    with pytest.raises(PermanentActionError, match="nothing to cancel"):
        await CancelLongQueries(backend).run(
            "orders-db", CancelQueriesParams(running_s=1, applications=("slow-report",))
        )


async def test_activity_summarises_states_and_the_sessions_that_hold_the_pool(
    postgres: Postgres, backend: PostgresBackend, sessions: Sessions
) -> None:
    idle = await sessions.open("diag-idle")
    await idle.fetchval("SELECT 'the idle one'")
    busy = await sessions.open("diag-busy", in_transaction=False)
    busy_pid = busy.get_server_pid()
    query = asyncio.create_task(busy.fetchval("SELECT pg_sleep(60)"))
    try:
        await wait_until(
            postgres,
            [busy_pid],
            lambda act: next(iter(act.values()), ("",))[0] == "active",
            "the query to run",
        )
        detail = await Activity(backend).run("orders-db", ActivityParams(top=50, query_chars=40))
    finally:
        query.cancel()
        busy.terminate()
        with contextlib.suppress(BaseException):
            await query
    first = detail.splitlines()[0]
    assert first.startswith("orders-db: ") and " client connections (" in first
    assert "idle in transaction=" in first and "active=" in first
    assert f"pid={idle.get_server_pid()} db=postgres user={APP} app=diag-idle for " in detail
    # pg_read_all_stats is what lets remediator's role read another role's query text.
    assert "query: SELECT 'the idle one'" in detail
    assert f"pid={busy_pid} db=postgres user={APP} app=diag-busy" in detail
    assert "query: SELECT pg_sleep(60)" in detail


async def test_backend_errors_are_mapped(backend: PostgresBackend) -> None:
    params = TerminateIdleParams(idle_s=60)
    # A label names an instance; it never becomes a connection string.
    with pytest.raises(PermanentActionError, match="no PostgreSQL instance named postgresql in"):
        await TerminateIdle(backend).run("postgresql", params)
    with pytest.raises(TemporaryActionError, match="postgres gone-db unreachable"):
        await TerminateIdle(backend).run("gone-db", params)
    with pytest.raises(PermanentActionError, match="postgres nodb answered 3D000"):
        await TerminateIdle(backend).run("nodb", params)


def test_filters_are_policy_parameters_not_sql() -> None:
    with pytest.raises(ValueError, match="idle_s"):
        TerminateIdleParams.model_validate({})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        TerminateIdleParams.model_validate({"idle_s": 60, "where": "true"})
    with pytest.raises(ValueError, match="max_sessions"):
        TerminateIdleParams(idle_s=60, max_sessions=0)
