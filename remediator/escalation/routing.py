"""Routing by priority: P1..P4 read from one alert label, and the notifiers each priority goes to.

The rules (documented in docs/escalation.md):

- The priority is ``priorities[value of severity_label]`` (case-insensitive); a value that is already
  ``P1``..``P4`` is taken as it is; anything else, or no label, is ``unknown`` (P2 by default).
- An escalation goes to the policy step's notifier and to every notifier of ``routes[priority]``, each once,
  in that order.
- P3 and P4 never page: notifiers that page (PagerDuty) are skipped for them, wherever they are named; the
  skip is recorded in the incident's timeline. Alertmanager and chat notifiers still get them, with the
  priority in the message (the ``priority`` label on the Alertmanager alert), so their own routing decides.
"""

from __future__ import annotations

import re

from remediator.settings import QUIET_PRIORITIES, Priority, RoutingSettings

_PRIORITY = re.compile(r"^[pP]([1-4])$")


def priority_of(labels: dict[str, str], routing: RoutingSettings) -> Priority:
    value = labels.get(routing.severity_label, "").strip()
    found = routing.priorities.get(value.lower())
    if found is not None:
        return found
    named = _PRIORITY.fullmatch(value)
    if named is not None:
        return f"P{named.group(1)}"  # type: ignore[return-value]
    return routing.unknown


def recipients(step_notifier: str, priority: Priority, routing: RoutingSettings) -> list[str]:
    """The step's notifier first, then the route's, without repeats."""
    names = [step_notifier, *routing.routes.get(priority, [])]
    return list(dict.fromkeys(names))


def quiet(priority: str) -> bool:
    """True for the priorities that never page."""
    return priority in QUIET_PRIORITIES
