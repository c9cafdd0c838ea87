"""A refusal: a guard's recorded "no", with the reason a human reads and the label a metric counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Reason = Literal[
    "paused",
    "dry_run",
    "shadow",
    "approval_denied",
    "healthy_floor",
    "flapping",
    "cooldown",
    "rate_limit",
    "budget",
    "breaker_open",
    "locked",
]


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"refused ({self.reason}): {self.detail}"
