"""Real Alertmanager and Prometheus for tests, and the types of the conftest fixtures that start them.

Both are Go servers started the same way (a config file in their own directory, a listen address flag,
ready when GET /-/ready answers 200, another port when the free one was taken meanwhile), so they share
one base class. Alertmanager routes every alert to one webhook receiver, which is how tests see the real
version 4 body with a Bearer token; it only ever sends to loopback.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .common import (
    LOOPBACK,
    RealPartError,
    free_port,
    http_ok,
    http_opener,
    log_tail,
    mkdtemp,
    popen,
    port_clash,
    remove_tree,
    require,
    terminate,
    track,
    untrack,
    wait_until,
)


def _require_loopback(url: str) -> None:
    # Tests may only ever talk to this machine; catch a stray address before any process sends to it.
    host = urllib.parse.urlsplit(url).hostname or ""
    if not (host == "localhost" or host == "::1" or host.startswith("127.")):
        raise ValueError(f"refusing a non-loopback address in a test: {url}")


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _HttpProcess:
    """A Go server started with a listen address flag, ready when GET /-/ready answers 200."""

    _what = ""
    _binary = ""

    def __init__(self, prefix: str) -> None:
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._exe = require(self._binary)
        self._dir = mkdtemp(prefix)
        track(self)
        self.port = 0
        self.url = ""

    @property
    def log_path(self) -> Path:
        return self._dir / f"{self._binary}.log"

    def _argv(self, listen: str) -> list[str]:
        raise NotImplementedError

    def _start(self, start_timeout: float) -> None:
        for _attempt in range(3):
            port = free_port()
            self._proc = popen(self._argv(f"{LOOPBACK}:{port}"), self.log_path)
            url = f"http://{LOOPBACK}:{port}"
            try:
                wait_until(
                    functools.partial(http_ok, f"{url}/-/ready"),
                    what=self._what,
                    timeout=start_timeout,
                    log=self.log_path,
                    proc=self._proc,
                )
            except RealPartError:
                terminate(self._proc)
                self._proc = None
                if port_clash(self.log_path):
                    continue  # free_port() raced with another process; try another port
                raise
            self.port, self.url = port, url
            return
        raise RealPartError(f"{self._what} found no free port; log:\n{log_tail(self.log_path)}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc is not None:
                terminate(self._proc, grace=10.0)
                self._proc = None
        finally:
            remove_tree(self._dir)
            untrack(self)


class Alertmanager(_HttpProcess):
    """prometheus-alertmanager routing every alert to one webhook receiver, clustering off."""

    _what = "alertmanager"
    _binary = "prometheus-alertmanager"

    def __init__(
        self,
        webhook_url: str,
        token: str,
        *,
        group_by: Sequence[str] = ("alertname", "container"),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        _require_loopback(webhook_url)
        super().__init__("remediator-am-")
        self.webhook_url = webhook_url
        self._extra_args = list(extra_args)
        config = {
            "route": {
                "receiver": "rem",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [
                {
                    "name": "rem",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {"authorization": {"credentials": token}},
                        }
                    ],
                }
            ],
        }
        try:
            # JSON is valid YAML, and json.dumps quotes any token safely.
            (self._dir / "alertmanager.yml").write_text(json.dumps(config, indent=2) + "\n")
            self._start(start_timeout)
        except BaseException:
            self.close()
            raise

    def _argv(self, listen: str) -> list[str]:
        return [
            self._exe,
            f"--config.file={self._dir}/alertmanager.yml",
            f"--storage.path={self._dir}/data",
            f"--web.listen-address={listen}",
            "--cluster.listen-address=",  # empty: no gossip port, no peers, no settle wait
            *self._extra_args,
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST alerts to /api/v2/alerts, as Prometheus does (labels, annotations, startsAt, endsAt,
        generatorURL); the dicts are sent as given."""
        body = json.dumps([dict(a) for a in alerts]).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with http_opener.open(request, timeout=10) as resp:
                if resp.status != 200:
                    raise RealPartError(f"alertmanager answered {resp.status} to {body!r}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RealPartError(f"alertmanager answered {exc.code} to {body!r}: {detail}") from exc

    def fire(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> None:
        self.post_alerts([{"labels": dict(labels), "annotations": dict(annotations or {})}])

    def resolve(self, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> None:
        """Re-post the alert with endsAt = now; Alertmanager then sends a resolved notification."""
        alert = {"labels": dict(labels), "annotations": dict(annotations or {}), "endsAt": _utc_now()}
        self.post_alerts([alert])


class Prometheus(_HttpProcess):
    """prometheus with the given config; rule files are written beside it, so relative names work."""

    _what = "prometheus"
    _binary = "prometheus"

    def __init__(
        self,
        config: str,
        *,
        rule_files: Sequence[tuple[str, str]] = (),
        extra_args: Sequence[str] = (),
        start_timeout: float = 60.0,
        backfill: str = "",
    ) -> None:
        """``backfill``: OpenMetrics text (ending with ``# EOF``) written into the TSDB as history with
        ``promtool tsdb create-blocks-from openmetrics`` before the server starts."""
        super().__init__("remediator-prom-")
        self._extra_args = list(extra_args)
        try:
            if backfill:
                source = self._dir / "backfill.om"
                source.write_text(backfill)
                subprocess.run(
                    [
                        require("promtool"),
                        "tsdb",
                        "create-blocks-from",
                        "openmetrics",
                        str(source),
                        str(self._dir / "tsdb"),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            for name, text in rule_files:
                (self._dir / name).write_text(text)
            if rule_files and "rule_files" not in config:
                config += "\nrule_files:\n" + "".join(f"  - {json.dumps(name)}\n" for name, _ in rule_files)
            (self._dir / "prometheus.yml").write_text(config)
            self._start(start_timeout)
        except BaseException:
            self.close()
            raise

    def _argv(self, listen: str) -> list[str]:
        return [
            self._exe,
            f"--config.file={self._dir}/prometheus.yml",
            f"--storage.tsdb.path={self._dir}/tsdb",
            f"--web.listen-address={listen}",
            *self._extra_args,
        ]


# ---------------------------------------------------------------------------------------------------------
# Types of the factory fixtures in conftest.py, for annotating tests.


class AlertmanagerFactory(Protocol):
    def __call__(self, webhook_url: str, token: str, **kwargs: Any) -> Alertmanager: ...


class PrometheusFactory(Protocol):
    def __call__(self, config: str, **kwargs: Any) -> Prometheus: ...
