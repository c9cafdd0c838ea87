"""Fencing tokens: what a ladder task proves to the store with every write, so a replica that lost a lease
(a long pause, a frozen VM) can neither act nor write after another replica took the incident over.

Every lease grant (an incident opened, or claimed after its holder stopped renewing) increments the incident's
``lease_epoch``. A ladder runs in its own asyncio task with ``current_fence`` set to the (incident, owner,
epoch) it was granted; the store checks that token in the same transaction as every write concerning that
incident, and raises LeaseLost when it is stale. A context variable rather than a parameter: every write a
ladder makes (its steps, the gate's audit, the escalator's outbox entries) passes through it, including the
ones added later, without each call site having to remember it (docs/safety.md, invariant F1).

``call_deadline`` is the monotonic time before which a backend call must have *started*: the runner sets it
from the lease it just confirmed, and a backend that runs calls in threads checks it before sending, so a call
whose thread was frozen past the lease is dropped instead of sent late.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Fence:
    """The lease an incident's ladder holds: written with every row it writes for that incident."""

    incident_id: int
    owner: str
    epoch: int


current_fence: ContextVar[Fence | None] = ContextVar("remediator_fence", default=None)
"""Set by the runner for the lifetime of one ladder task; None elsewhere (intake, API, deliveries)."""

call_deadline: ContextVar[float | None] = ContextVar("remediator_call_deadline", default=None)
"""``time.monotonic()`` after which the backend call about to be made must not be sent any more."""

call_guard: ContextVar[Callable[[], Awaitable[float]] | None] = ContextVar(
    "remediator_call_guard", default=None
)
"""Confirms the lease again and returns a new deadline: for a backend whose call waited for a free thread
past ``call_deadline`` (a burst), so a queued call is confirmed rather than dropped."""
