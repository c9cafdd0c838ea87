"""The result of one step attempt, as a frozen value: the runner never lets a backend exception escape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal["ok", "temporary", "permanent"]
"""A timeout is temporary (the backend may answer next time); an unknown error is permanent (decision 8)."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt of an action came to, and how long it took."""

    kind: OutcomeKind
    detail: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.kind == "ok"
