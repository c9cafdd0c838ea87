"""Who may call the daemon, and over what: the token (where it comes from, how a request proves it), the
check that refuses the rest (applied by ``server.edge``), and the TLS context of the listener.

``webhook_token`` is the one place the token is looked up: the daemon serves with it and the command line
calls the daemon with it, so the two can never disagree about REMEDIATOR_SERVER__TOKEN_FILE or the generated
``<state_dir>/token``.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import logging
import os
import secrets
import ssl

from aiohttp import web

from remediator.errors import ConfigError
from remediator.server.state import METRICS
from remediator.settings import Settings

logger = logging.getLogger(__name__)

PUBLIC = frozenset({"/metrics", "/healthz", "/readyz"})
APPROVAL_LINKS = "/approval/"
"""Approval links are public: each carries its own signature, checked by its route."""


@dataclasses.dataclass(frozen=True)
class Auth:
    """Who may call: a bearer token (or basic auth with the token as password), unless auth is disabled."""

    token: str | None
    basic_username: str | None = None
    disabled: bool = False
    _token: bytes = dataclasses.field(init=False, repr=False, compare=False)
    """The token's bytes, encoded once: every request is compared with them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_token", _raw(self.token or ""))

    def allows(self, header: str) -> bool:
        if self.disabled:
            return True
        if not self.token:
            return False
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        # Everything is compared as bytes: aiohttp hands over header bytes that are not UTF-8 as lone
        # surrogates, which neither a plain encode() nor compare_digest on str (ASCII only) accepts.
        token = self._token
        if scheme == "bearer":
            return hmac.compare_digest(_raw(credentials.strip()), token)
        if scheme == "basic":
            try:
                decoded = base64.b64decode(_raw(credentials.strip()), validate=True)
            except ValueError:  # binascii.Error is one
                return False
            user, _, password = decoded.partition(b":")
            user_ok = self.basic_username is None or hmac.compare_digest(user, _raw(self.basic_username))
            return hmac.compare_digest(password, token) and user_ok
        return False


def _raw(text: str) -> bytes:
    """The bytes a header value (or a configured secret) stands for, whatever they are."""
    return text.encode("utf-8", "surrogateescape")


AUTH = web.AppKey("auth", Auth)


def refusal(request: web.Request) -> web.Response | None:
    """The 401 for a request without valid credentials to a path that needs them; None lets it through."""
    path = request.path
    if path in PUBLIC or path.startswith(APPROVAL_LINKS):
        return None
    app = request.app
    if app[AUTH].allows(request.headers.get("Authorization", "")):
        return None
    # A misconfigured Alertmanager shows on the dashboard; a browser's favicon request (the approval page is
    # opened in one) or another stray path is not the webhook and must not look like one.
    if path == "/alerts":
        app[METRICS].webhook_rejected.labels("401").inc()
    return web.json_response(
        {"error": "missing or wrong credentials"}, status=401, headers={"WWW-Authenticate": "Bearer"}
    )


def webhook_token(settings: Settings, *, generate: bool = True) -> str | None:
    """The token: REMEDIATOR_SERVER__TOKEN, else the token file, else (unless auth is disabled) the one kept in
    ``<state_dir>/token``. The daemon (``generate``) makes that one the first time (mode 0600); a client of the
    daemon only reads it, and gets None when there is none."""
    server = settings.server
    if server.token is not None:
        return server.token.get_secret_value()
    if server.token_file is not None:
        try:
            return server.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {server.token_file}: {exc}") from exc
    if server.auth_disabled:
        return None
    path = settings.state_dir / "token"
    if path.exists():
        return path.read_text().strip()
    if not generate:
        return None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    logger.warning("no REMEDIATOR_SERVER__TOKEN set: generated a webhook token in %s", path)
    return token


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS when a certificate is configured; mutual TLS when a client CA is too."""
    server = settings.server
    if server.tls_cert is None:
        if server.tls_key is not None or server.tls_client_ca is not None:
            raise ConfigError("tls_key and tls_client_ca need tls_cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server.tls_cert, server.tls_key)
    if server.tls_client_ca is not None:
        context.load_verify_locations(server.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
