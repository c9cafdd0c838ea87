"""Limits read from history: cooldown, rate limit per target, global budget, flapping. Pure functions."""

from __future__ import annotations

from remediator.guards.refusal import Refusal


def cooldown(last_action_at: float | None, now: float, cooldown_s: float, target: str) -> Refusal | None:
    """Refuse when an earlier incident acted on this target less than ``cooldown_s`` ago."""
    if last_action_at is None or now - last_action_at >= cooldown_s:
        return None
    left = cooldown_s - (now - last_action_at)
    return Refusal(
        "cooldown",
        f"{target} was acted on {now - last_action_at:.0f}s ago; cooldown {cooldown_s:g}s ({left:.0f}s left)",
    )


def rate_limit(actions_in_window: int, count: int, window_s: float, target: str) -> Refusal | None:
    """Refuse the action that would exceed ``count`` actions on one target per ``window_s``."""
    if actions_in_window < count:
        return None
    return Refusal(
        "rate_limit", f"{target} already had {actions_in_window} actions in {window_s:g}s (limit {count})"
    )


def budget(actions_in_window: int, count: int, window_s: float) -> Refusal | None:
    """Refuse past the global budget: at most ``count`` actions over all policies per ``window_s``."""
    if actions_in_window < count:
        return None
    return Refusal(
        "budget", f"global budget spent: {actions_in_window} actions in {window_s:g}s (budget {count})"
    )


def flapping(incidents_in_window: int, count: int, window_s: float, target: str) -> Refusal | None:
    """Refuse when this target's alert opened ``count`` or more incidents within ``window_s``: it keeps coming
    back, so another restart is a loop, not a fix."""
    if incidents_in_window < count:
        return None
    return Refusal(
        "flapping",
        f"{target} fired and resolved {incidents_in_window} times in {window_s:g}s (threshold {count})",
    )
