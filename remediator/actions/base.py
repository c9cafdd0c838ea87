"""The Action protocol: what the step runner calls, whatever the backend.

An action takes a target already admitted by the policy's allow list and parameters already validated against
its ``params_model``. It returns a short human-readable result (or evidence, for a diagnose action) and raises
only TemporaryActionError or PermanentActionError.
"""

from __future__ import annotations

from typing import Literal, Protocol

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

    async def run(self, target: str, params: Params) -> str: ...
