"""The one client of the daemon's HTTP API, for the command line (status, pause, policies, approve...) and
``remediator drill``, which follows an incident through it; and the one JSON request both make (a drill also
posts its synthetic alert to Alertmanager with it).

Synchronous, on the standard library: the command line is a one-shot process with no event loop, and the drill
calls it in a thread. Every failure is an ApiError, which says what answered (its HTTP status and reason) or
that nothing did.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from remediator.errors import RemediatorError

TIMEOUT_S = 10.0


class ApiError(RemediatorError):
    """A call that did not succeed: ``status`` is the HTTP status of a refusal (the ``message`` is then the
    ``error`` of its JSON, else its text); None when no answer came (refused, timed out, not HTTP) or the answer
    was not what a call expects."""

    def __init__(self, url: str, status: int | None, message: str) -> None:
        self.url = url
        self.status = status
        self.message = message
        super().__init__(f"{url} answered {status}: {message}" if status is not None else f"{url}: {message}")


def checked_url(url: str, what: str = "URL") -> str:
    """``url`` when it is http:// or https:// (urllib would also open file:// and others), else RemediatorError."""
    if not url.startswith(("http://", "https://")):
        raise RemediatorError(f"{what} must be http:// or https://, not {url!r}")
    return url


def request_json(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    timeout_s: float = TIMEOUT_S,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """Send ``body`` (when given) as JSON, with the bearer ``token`` (when given); the answer's JSON, or None
    when the answer is empty. ApiError when the answer is not a 2xx, is not JSON, or does not come. ``tls``
    replaces the default HTTPS context (certificates checked against the system's CAs)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif method == "POST":
        data = b""
    request = urllib.request.Request(checked_url(url), data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=tls) as response:  # noqa: S310 (scheme checked)
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise ApiError(url, exc.code, _reason(exc.read())) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ApiError(url, None, f"cannot reach it: {exc}") from exc
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise ApiError(url, response.status, f"the answer is not JSON: {raw[:200]!r}") from exc


def _reason(raw: bytes) -> str:
    """The ``error`` the daemon puts in a refusal (after the ``status`` of a health endpoint's answer, when
    there is one); whatever else answered, its text."""
    text = raw.decode(errors="replace")
    try:
        answer = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(answer, dict):
        said = [str(answer[key]) for key in ("status", "error") if isinstance(answer.get(key), str)]
        if said:
            return ": ".join(said)
    return text.strip()[:500]


class ApiClient:
    """The running daemon's API at ``url``, called with its ``token`` (see server.auth.webhook_token)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = checked_url(url, "the daemon's URL").rstrip("/")
        self.token = token

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path)

    def post(self, path: str) -> dict[str, Any]:
        return self._call("POST", path)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        answer = request_json(method, f"{self.url}{path}", token=self.token)
        if not isinstance(answer, dict):
            raise ApiError(f"{self.url}{path}", None, f"the answer is not a JSON object: {answer!r:.200}")
        return answer
