"""Optional webhook hardening: HMAC signatures with replay protection, and mutual TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import TOKEN, alert, notification

from remediator.signing import sign

SECRET = "hmac-secret-for-tests"


@pytest.fixture
def daemon(start_app: Callable[..., Any]) -> Callable[..., Any]:
    def start(**env: str) -> Any:
        return start_app(REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock", **env)

    return start


def signed_headers(body: bytes, timestamp: float | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time() if timestamp is None else timestamp))
    return {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "X-Remediator-Timestamp": ts,
        "X-Remediator-Signature": sign(secret, ts, body),
    }


async def test_signed_requests_are_checked_and_never_replayed(daemon: Callable[..., Any]) -> None:
    app = await daemon(REMEDIATOR_SERVER__HMAC_SECRET=SECRET)
    url = f"http://127.0.0.1:{app.port}/alerts"
    body = json.dumps(notification(alert(alertname="X"))).encode()
    async with aiohttp.ClientSession() as http:

        async def post(headers: dict[str, str]) -> tuple[int, str]:
            async with http.post(url, data=body, headers=headers) as r:
                return r.status, (await r.json()).get("error", "")

        good = signed_headers(body)
        assert await post(good) == (200, "")
        assert await post(good) == (401, "replayed request (signature already used)")
        assert (await post(signed_headers(body, secret="wrong")))[1] == "bad signature"
        assert "replay window" in (await post(signed_headers(body, timestamp=time.time() - 3600)))[1]
        # A NaN timestamp compares False with everything: it must not pass as fresh (and valid for ever).
        nan = {**good, "X-Remediator-Timestamp": "nan", "X-Remediator-Signature": sign(SECRET, "nan", body)}
        assert "replay window" in (await post(nan))[1]
        unsigned = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        assert "missing X-Remediator-Timestamp" in (await post(unsigned))[1]
        tampered = signed_headers(body)
        async with http.post(url, data=body.replace(b'"X"', b'"Y"'), headers=tampered) as r:
            assert r.status == 401
        no_token = {k: v for k, v in signed_headers(body).items() if k != "Authorization"}
        assert (await post(no_token))[0] == 401  # a signature is on top of the token, not instead of it


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with the openssl command line."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            f"{name}.pem",
            *extra,
        )
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


async def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, daemon: Callable[..., Any]) -> None:
    certs = make_certs(tmp_path)
    app = await daemon(
        REMEDIATOR_SERVER__TLS_CERT=str(certs["server.pem"]),
        REMEDIATOR_SERVER__TLS_KEY=str(certs["server.key"]),
        REMEDIATOR_SERVER__TLS_CLIENT_CA=str(certs["ca.pem"]),
    )
    url = f"https://127.0.0.1:{app.port}/alerts"
    body = json.dumps(notification(alert(alertname="X")))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    with_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    with_cert.load_cert_chain(certs["client.pem"], certs["client.key"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers, ssl=with_cert) as r,
    ):
        assert r.status == 200

    without_cert = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.post(url, data=body, headers=headers, ssl=without_cert) as r:
                await r.read()
