"""Certificates made with openssl for a test: a CA, a server certificate for 127.0.0.1 and a client certificate,
as a Docker daemon's ``--tlsverify`` and a client need them (a fleet's ``tcp://`` host with client certificates).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import require


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA that signed a server certificate (SAN IP:127.0.0.1) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=remediator-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}-key.pem",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}-cert.pem",
            cwd=d,
        )
    for key in d.glob("*-key.pem"):
        key.chmod(0o600)
    return TlsFiles(
        d / "ca.pem", d / "server-cert.pem", d / "server-key.pem", d / "client-cert.pem", d / "client-key.pem"
    )
