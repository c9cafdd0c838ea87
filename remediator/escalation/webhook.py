"""Generic webhook notifier: POSTs the escalation JSON to a URL the team owns (a chat bridge, a ticket hook)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from remediator.errors import NotifyError


class WebhookNotifier:
    """POST ``payload`` as JSON; any 2xx is delivered, anything else is a NotifyError."""

    def __init__(self, name: str, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.name = name
        self.url = url
        self.headers = headers
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"Content-Type": "application/json", "Idempotency-Key": dedup_key, **self.headers}
        try:
            async with self._session.post(self.url, data=json.dumps(payload), headers=headers) as response:
                if response.status // 100 != 2:
                    body = (await response.text())[:200]
                    raise NotifyError(f"{self.name}: {self.url} answered {response.status}: {body}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(f"{self.name}: {self.url} unreachable: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
