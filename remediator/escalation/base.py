"""The Notifier protocol: deliver one escalation, or raise NotifyError so the outbox retries it."""

from __future__ import annotations

from typing import Any, Protocol


class Notifier(Protocol):
    """One named destination for escalations."""

    @property
    def name(self) -> str: ...

    async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
        """Deliver once; raise NotifyError on any failure. Receivers drop repeats by ``dedup_key``."""
        ...

    async def close(self) -> None: ...
