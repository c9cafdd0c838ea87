"""HMAC signatures: optional ones on the webhook, with replay protection, and the ones in approval links.

For senders that can sign (a relay in front of Alertmanager, a CI job): the signature covers the timestamp
and the body, a request outside the replay window is refused, and a signature is accepted once.

An approval link carries a signature of one incident's one approval request, so whoever got the escalation can
answer it with a click and no token, and the link is worthless once that request is answered or expired.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Remediator-Timestamp"
SIGNATURE_HEADER = "X-Remediator-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def approval_signature(key: str, incident_id: int, requested_at: float) -> str:
    message = f"remediator-approval:{incident_id}:{requested_at!r}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def approval_link_valid(key: str | None, incident_id: int, requested_at: float, signature: str) -> bool:
    if not key or not signature:
        return False
    expected = approval_signature(key, incident_id, requested_at)
    return hmac.compare_digest(signature.encode(), expected.encode())


class SignatureChecker:
    """Checks signatures and remembers the ones it accepted for the replay window."""

    def __init__(self, secret: str, window_s: float) -> None:
        self.secret = secret
        self.window_s = window_s
        self._seen: dict[str, float] = {}

    def refusal(self, timestamp: str | None, signature: str | None, body: bytes, now: float) -> str | None:
        """None when the request is authentic and fresh; otherwise why it is refused."""
        if not timestamp or not signature:
            return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
        try:
            sent_at = float(timestamp)
        except ValueError:
            return f"{TIMESTAMP_HEADER} is not a number"
        # not (<=) rather than >: a NaN timestamp compares False both ways and must not pass as fresh.
        if not abs(now - sent_at) <= self.window_s:
            return f"signed request is outside the {self.window_s:g}s replay window"
        if not hmac.compare_digest(signature.encode(), sign(self.secret, timestamp, body).encode()):
            return "bad signature"
        self._seen = {s: t for s, t in self._seen.items() if now - t <= self.window_s}
        if signature in self._seen:
            return "replayed request (signature already used)"
        self._seen[signature] = now
        return None
