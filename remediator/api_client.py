"""The one client of the daemon's HTTP API, for the command line (status, pause, policies, approve...) and
``remediator drill``, which follows an incident through it; and the one JSON request both make (a drill also
posts its synthetic alert to Alertmanager with it).

Synchronous, on the standard library: the command line is a one-shot process with no event loop, and the drill
calls it in a thread. Every failure is an ApiError, which says what answered (its HTTP status and reason) or
that nothing did.

``daemon_url`` and ``daemon_tls`` find the daemon the settings describe (where ``serve`` listens, over HTTPS
when it serves it); the token is server.auth.webhook_token's, which the daemon uses too.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from remediator.errors import RemediatorError
from remediator.settings import Settings

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


WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104 (read, not bound)
"""A daemon listening on every address is called on the loopback."""


def daemon_url(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """The base URL of the daemon ``settings`` describe (``host``, ``port``: instead of the settings'): where it
    listens (a wildcard address becomes the loopback), https when it serves HTTPS."""
    server = settings.server
    host = host if host is not None else server.host
    host = WILDCARDS.get(host, host)
    port = port if port is not None else server.port
    if port == 0:
        raise RemediatorError(
            "REMEDIATOR_SERVER__PORT is 0 (the daemon picks a free port at start): give --port or --url"
        )
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and literal.version == 6:
        host = f"[{host}]"
    return f"{'https' if server.tls_cert is not None else 'http'}://{host}:{port}"


def daemon_tls(settings: Settings, *, verify: bool = True, pinned: bool = False) -> ssl.SSLContext:
    """How to call the daemon ``settings`` describe over HTTPS. ``pinned`` (the URL came from the settings, so
    it names this machine, rarely the name in the certificate): only the daemon's own certificate is trusted,
    whatever the name. Otherwise the system's CAs and the daemon's certificate are, for the URL's name.
    ``verify=False`` checks nothing (a readiness probe, which sends no secret). Under mutual TLS the daemon's own
    certificate is presented as the client's: the client CA must have signed it too."""
    server = settings.server
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if pinned else ssl.create_default_context()
        context.check_hostname = not pinned
        if server.tls_cert is not None:
            try:
                context.load_verify_locations(server.tls_cert)
            except (OSError, ssl.SSLError) as exc:
                raise RemediatorError(
                    f"cannot load the daemon's certificate {server.tls_cert}: {exc}"
                ) from exc
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the certificate itself, not only its CA
    if server.tls_client_ca is not None and server.tls_cert is not None:
        try:
            context.load_cert_chain(server.tls_cert, server.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise RemediatorError(f"cannot load {server.tls_cert} as the client certificate: {exc}") from exc
    return context


class ApiClient:
    """The running daemon's API at ``url``, called with its ``token`` (see server.auth.webhook_token), over the
    ``tls`` context when it is https."""

    def __init__(self, url: str, token: str | None, tls: ssl.SSLContext | None = None) -> None:
        self.url = checked_url(url, "the daemon's URL").rstrip("/")
        self.token = token
        self.tls = tls

    @classmethod
    def for_daemon(cls, settings: Settings, token: str | None, url: str | None = None) -> ApiClient:
        """The daemon at ``url``, else the one ``settings`` describe (its certificate pinned)."""
        base = url or daemon_url(settings)
        tls = None
        if base.startswith("https://"):
            tls = daemon_tls(settings, pinned=url is None)
        return cls(base, token, tls)

    def get(self, path: str, **query: str | int | None) -> dict[str, Any]:
        """GET ``path`` with the ``query`` parameters that are not None."""
        given = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", f"{path}?{urllib.parse.urlencode(given)}" if given else path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``path``, with ``body`` as JSON when given."""
        return self._call("POST", path, body)

    def delete(self, path: str, **query: str | int | None) -> dict[str, Any]:
        """DELETE ``path`` with the ``query`` parameters that are not None."""
        given = {k: v for k, v in query.items() if v is not None}
        return self._call("DELETE", f"{path}?{urllib.parse.urlencode(given)}" if given else path)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = request_json(method, f"{self.url}{path}", body, token=self.token, tls=self.tls)
        if not isinstance(answer, dict):
            raise ApiError(f"{self.url}{path}", None, f"the answer is not a JSON object: {answer!r:.200}")
        return answer
