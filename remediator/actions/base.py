"""The Action protocol: what the step runner calls, whatever the backend.

An action takes a target already admitted by the policy's allow list and parameters already validated against
its ``params_model``. It returns a short human-readable result (or evidence, for a diagnose action) and raises
only TemporaryActionError or PermanentActionError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base of every action's parameters: a typo in a policy's ``with:`` is refused at load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(Protocol):
    """One named action of one backend."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> Literal["act", "diagnose"]: ...
    @property
    def backend(self) -> str: ...
    @property
    def params_model(self) -> type[Params]: ...

    async def run(self, target: str, params: Params, host: str = ...) -> str:
        """Act on ``target``; a Docker action on the Docker host named ``host`` (the incident's), which
        other backends ignore."""
        ...


@dataclass(frozen=True)
class ProbeResult:
    """One evaluation of a verification check."""

    healthy: bool | None
    """True: the check holds. False: it does not. None: it could not be evaluated (endpoint down, no
    series), which the runner never reads as recovered."""
    detail: str


class Probe(Protocol):
    """A verification check by kind (``http``, ``prometheus``); ``spec`` is the policy's check model."""

    async def check(self, spec: Any) -> ProbeResult: ...
