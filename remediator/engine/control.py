"""What people switch: the kill switch (pause all automation) and each policy's mode (enforce, or shadow: run
the ladder without acting). Kept in the store, so every replica and the next start see the same switches,
and each change is an audit record with who made it.
"""

from __future__ import annotations

import logging
from typing import Literal

from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.store.base import Store

logger = logging.getLogger(__name__)

PAUSED_KEY = "paused"
Mode = Literal["enforce", "shadow"]


class Control:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def paused(self) -> bool:
        return await self.store.control_get(PAUSED_KEY) == "1"

    async def set_paused(self, paused: bool, by: str) -> None:
        now = self.clock()
        await self.store.control_set(PAUSED_KEY, "1" if paused else "0", now)
        await self.store.audit(None, "paused" if paused else "resumed", {"by": by}, now)
        logger.warning("automation %s by %s", "PAUSED" if paused else "resumed", by)

    async def mode(self, policy: Policy) -> str:
        """``enforce`` or ``shadow``: the policy file's mode, unless promoted (or demoted) since."""
        return await self.store.control_get(f"policy_mode:{policy.name}") or policy.mode

    async def set_mode(self, policy: str, mode: Mode, by: str) -> None:
        now = self.clock()
        await self.store.control_set(f"policy_mode:{policy}", mode, now)
        await self.store.audit(None, "policy_mode", {"policy": policy, "mode": mode, "by": by}, now)
        logger.warning("policy %s is now %s (by %s)", policy, mode, by)
