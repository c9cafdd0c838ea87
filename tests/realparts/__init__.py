"""Real Docker, PostgreSQL, Alertmanager and Prometheus processes for tests, and a capture server.

remediator's promises are about what the real parts do (a restart really changes StartedAt, Alertmanager
really sends a version 4 body with a Bearer token, ...), so tests run against the real programs from
Debian's packages rather than fakes (see shared/TESTING.md). Every part here:

- lives in its own mkdtemp directory, which close() removes;
- listens only on 127.0.0.1 (or a unix socket in its directory), on a port picked free at run time;
- is stopped by its pid: TERM, then KILL when it does not go in time; never by name;
- has an idempotent close(), which also runs at interpreter exit for anything a test left open.

A missing program is a test failure naming the Debian package, never a skip: CI must not go green by
not testing. The CaptureServer stands in only for what cannot run here (Slack, PagerDuty, a webhook
sink). conftest.py wraps all of this in fixtures; tests import the types from here (`from realparts
import ...`, tests/ being on sys.path as pytest's rootdir-relative conftest directory).

One module per part: common.py (programs, ports, processes, leftovers), dockerd.py (DockerDaemon),
postgres.py (Postgres), prometheus.py (Alertmanager, Prometheus and their fixtures' factory types),
capture.py (CaptureServer), chromium.py (Chromium, a headless browser driven over the DevTools protocol). None of them imports remediator: the infrastructure must work while the code
under test is broken. The modules import each other relatively, so the package also loads by path
(bench/ does so).
"""

from .capture import CapturedRequest, CaptureServer
from .chromium import Chromium, Page
from .common import LOOPBACK, RealPartError, free_port, require, which
from .dockerd import DockerDaemon
from .postgres import Postgres
from .prometheus import Alertmanager, AlertmanagerFactory, Prometheus, PrometheusFactory
from .tls import TlsFiles, make_tls

__all__ = [
    "LOOPBACK",
    "Alertmanager",
    "AlertmanagerFactory",
    "CaptureServer",
    "CapturedRequest",
    "Chromium",
    "DockerDaemon",
    "Page",
    "Postgres",
    "Prometheus",
    "PrometheusFactory",
    "RealPartError",
    "TlsFiles",
    "free_port",
    "make_tls",
    "require",
    "which",
]
