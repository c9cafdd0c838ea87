"""``remediator backtest``: what the policies would have done with past alerts, acting on nothing.

The history (webhook bodies from a file, the store's own inbox, or Prometheus's ``ALERTS`` series turned into
the notifications Alertmanager would have sent) is replayed through the daemon's own parts: the real intake
(matching, targets, hosts, episodes), runner (the ladder, its attempts and verification windows), gate
(flapping, cooldown, rate limit, budget, breakers), escalator and outbox (routing by priority, P3/P4 never
page), on a throwaway SQLite store. Only the edges are stand-ins: every action answers "would have run"
without calling anything, every notifier records without sending.

Time is virtual: the replay runs on an event loop whose clock is the history's (``VirtualLoop``). When nothing
is ready to run, the loop jumps to its next timer instead of waiting, so a week of history with 300 s
verification windows takes seconds, and the runner's own ``asyncio`` waits (verification windows, approval
timeouts, the healthy floor's hold) elapse in history's time, exactly as ``serve`` would spend them. Work
handed to a thread (the store's fsync) runs inline, so no real wait can ever let virtual time run ahead.

How the parts of a ladder that need a live system are read (docs/design.md, D44; docs/operations.md, Backtest):

- verification: recovered when the alert's own resolved arrives within the step's window (the history says
  whether it resolved, and when); HTTP and Prometheus checks of a ``verify`` are not evaluated;
- the healthy floor: with ``--prometheus``, its query is evaluated at the replayed time; without, it cannot be
  evaluated, is taken to hold, and the report says how many actions that concerns;
- every action and diagnosis succeeds (a must-pass check passes); nobody answers an approval request, so its
  timeout decides.

The package's modules, one part each: ``loop`` (the virtual clock), ``sources`` (a file of webhook bodies, the
store's inbox), ``prometheus`` (Prometheus's ALERTS as notifications), ``standins`` (the edges), ``replay``
(the daemon's parts driven through the history), ``summary`` (what the store says happened) and ``output``
(the report as people read it); ``times`` is how they read and write times.
"""

from __future__ import annotations

from remediator.backtest.loop import VirtualLoop
from remediator.backtest.output import render
from remediator.backtest.prometheus import (
    AlertmanagerTiming,
    alerts_samples,
    deliveries_from_alerts,
    episodes,
    fingerprint,
    interval_of,
    read_prometheus,
)
from remediator.backtest.replay import LEASE_S, OWNER, SETTLE_S, Replay, assemble, run
from remediator.backtest.sources import Delivery, read_inbox, read_jsonl, received_at
from remediator.backtest.standins import (
    HistoryProbe,
    StandInAction,
    StandInNotifier,
    stand_in_actions,
    stand_in_notifiers,
)
from remediator.backtest.summary import summarize
from remediator.backtest.times import parse_duration, parse_time

__all__ = [
    "LEASE_S",
    "OWNER",
    "SETTLE_S",
    "AlertmanagerTiming",
    "Delivery",
    "HistoryProbe",
    "Replay",
    "StandInAction",
    "StandInNotifier",
    "VirtualLoop",
    "alerts_samples",
    "assemble",
    "deliveries_from_alerts",
    "episodes",
    "fingerprint",
    "interval_of",
    "parse_duration",
    "parse_time",
    "read_inbox",
    "read_jsonl",
    "read_prometheus",
    "received_at",
    "render",
    "run",
    "stand_in_actions",
    "stand_in_notifiers",
    "summarize",
]
