"""The pure guards: limits and the circuit breaker, on an injected time."""

from __future__ import annotations

from remediator.guards import limits
from remediator.guards.breaker import Breaker, BreakerConfig

CONFIG = BreakerConfig(failures=3, window_s=60, open_s=30)


def test_cooldown_counts_from_the_last_action_of_an_earlier_incident() -> None:
    assert limits.cooldown(None, 1000, 300, "db") is None
    refusal = limits.cooldown(900, 1000, 300, "db")
    assert refusal is not None and refusal.reason == "cooldown" and "200s left" in refusal.detail
    assert limits.cooldown(700, 1000, 300, "db") is None


def test_rate_limit_budget_and_flapping_refuse_at_the_count() -> None:
    assert limits.rate_limit(2, 3, 3600, "db") is None
    assert limits.rate_limit(3, 3, 3600, "db").reason == "rate_limit"  # type: ignore[union-attr]
    assert limits.budget(19, 20, 3600) is None
    assert limits.budget(20, 20, 3600).reason == "budget"  # type: ignore[union-attr]
    assert limits.flapping(2, 3, 3600, "db") is None
    assert limits.flapping(3, 3, 3600, "db").reason == "flapping"  # type: ignore[union-attr]


def test_a_breaker_opens_after_k_failures_within_the_window() -> None:
    b = Breaker()
    b = b.record(False, 0, CONFIG).record(False, 10, CONFIG)
    assert b.status == "closed" and b.admit(11, CONFIG)[0]
    b = b.record(False, 20, CONFIG)
    assert b.status == "open" and b.opened_at == 20
    assert b.admit(49, CONFIG) == (False, b)


def test_failures_outside_the_window_do_not_count() -> None:
    b = Breaker().record(False, 0, CONFIG).record(False, 10, CONFIG).record(False, 65, CONFIG)
    assert b.status == "closed" and b.failures == (10, 65)


def test_half_open_lets_one_probe_through_and_its_result_decides() -> None:
    b = Breaker(status="open", failures=(0, 1, 2), opened_at=2)
    allowed, probing = b.admit(32, CONFIG)
    assert allowed and probing.status == "half_open"
    assert probing.admit(33, CONFIG)[0] is False  # a second caller waits for the probe
    assert probing.record(True, 34, CONFIG) == Breaker()
    reopened = probing.record(False, 34, CONFIG)
    assert reopened.status == "open" and reopened.opened_at == 34
    assert reopened.admit(50, CONFIG)[0] is False


def test_a_probe_that_never_reports_is_replaced_after_open_s() -> None:
    probing = Breaker(status="half_open", opened_at=0, probing_since=40)
    assert probing.admit(69, CONFIG)[0] is False
    allowed, again = probing.admit(70, CONFIG)
    assert allowed and again.probing_since == 70


def test_a_success_closes_and_forgets_failures() -> None:
    b = Breaker().record(False, 0, CONFIG).record(False, 1, CONFIG)
    assert b.record(True, 2, CONFIG) == Breaker()
