"""``http.request``: call a service's own admin hook (flush a cache, drain a queue, reload a config).

Many services already know how to heal themselves and expose it as an HTTP endpoint; the runbook step is
"POST /admin/reload". The URL, method, headers and body are fixed in the policy: the alert's target value is
never put into the URL. Redirects are not followed, so a request goes exactly where the policy says, and a
proxy from the environment is never used.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from pydantic import Field

from remediator.actions.base import Params
from remediator.errors import PermanentActionError, TemporaryActionError

# Statuses that say "not now" rather than "never": worth the runner's retry.
_RETRYABLE = frozenset({408, 425, 429})

# Enough of an answer to see what the service said, small enough for an incident timeline.
_BODY_CHARS = 500


class HttpRequestParams(Params):
    url: str = Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2000)
    """The endpoint (``http://`` or ``https://``), fixed in the policy."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    """HTTP method."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers (name: value), e.g. an Authorization header the hook requires."""
    body: dict[str, Any] | list[Any] | None = None
    """JSON body sent with the request (an object or a list). Unset: no body."""
    expect_status: tuple[int, ...] = ()
    """Statuses that count as success (codes). Empty: any 2xx."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Seconds the whole request may take before the attempt counts as a temporary failure."""


def shown_url(url: str) -> str:
    """The URL without its query and credentials, which may hold secrets, for the incident timeline."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class HttpRequest:
    """``http.request``: one request to a fixed URL; 5xx, 408, 429 and timeouts are temporary, 4xx permanent."""

    name: str = "http.request"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "http"
    params_model: type[Params] = HttpRequestParams

    async def run(self, target: str, params: Params, host: str = "") -> str:
        assert isinstance(params, HttpRequestParams)
        where = f"{params.method} {shown_url(params.url)}"
        timeout = aiohttp.ClientTimeout(total=params.timeout_s)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                session.request(
                    params.method,
                    params.url,
                    headers=params.headers,
                    json=params.body,
                    allow_redirects=False,
                ) as response,
            ):
                status = response.status
                text = (await response.content.read(_BODY_CHARS)).decode("utf-8", "replace").strip()
        except TimeoutError as exc:
            raise TemporaryActionError(f"{where} took over {params.timeout_s:g}s") from exc
        except aiohttp.InvalidURL as exc:
            raise PermanentActionError(f"{where}: not a usable URL: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TemporaryActionError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        answer = f"{where} answered {status}" + (f": {text}" if text else "")
        ok = status in params.expect_status if params.expect_status else 200 <= status < 300
        if ok:
            return answer
        if status >= 500 or status in _RETRYABLE:
            raise TemporaryActionError(answer)
        expected = ", ".join(map(str, params.expect_status)) or "2xx"
        raise PermanentActionError(f"{answer} (expected {expected})")
