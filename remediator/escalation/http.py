"""One HTTP client per notifier, with the error mapping every notifier shares.

Every failure is a NotifyError, which the outbox retries until delivered: a timeout, a refused connection,
429 and 5xx are what retrying is for; any other 4xx means the request itself is wrong (a revoked webhook, a bad
routing key) and is logged at ERROR on every attempt, because only a person fixing the settings can help.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from remediator.errors import NotifyError

logger = logging.getLogger(__name__)


class HttpClient:
    """A lazily created aiohttp session; ``display`` names the endpoint in errors without leaking secrets."""

    def __init__(self, notifier: str, timeout_s: float, headers: dict[str, str] | None = None) -> None:
        self.notifier = notifier
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        display: str | None = None,
        headers: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> tuple[int, str]:
        """Send ``body`` as JSON; returns (status, text) for a 2xx or a status in ``ok_statuses``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        where = display or url
        all_headers = {**self.headers, **(headers or {})}
        data = None
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
            data = json.dumps(body)
        try:
            async with self._session.request(method, url, data=data, headers=all_headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifyError(f"{self.notifier}: {where} unreachable: {exc!r}") from exc
        if status // 100 == 2 or status in ok_statuses:
            return status, text
        message = f"{self.notifier}: {where} answered {status}: {text[:300]}"
        if 400 <= status < 500 and status not in (408, 429):
            logger.error("escalation refused, check the settings of notifier %s: %s", self.notifier, message)
        raise NotifyError(message)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
