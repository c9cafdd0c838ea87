"""A fleet: the Docker hosts remediator may act on, by name, each with its own backend.

A policy says which host an incident's target lives on (fixed, or read from an alert label and admitted by the
policy's host allow list); intake refuses a name that is not configured here, so a label can only ever select
one of these hosts, never open a connection anywhere new. Each host keeps its own client, thread pool and
health, so a slow or dead host neither starves nor trips the others (its breaker is ``backend:docker:NAME``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from remediator.actions.docker import DockerBackend, HostHealth
from remediator.errors import PermanentActionError
from remediator.settings import DockerSettings, shown_url

logger = logging.getLogger(__name__)


class DockerFleet:
    """Every configured Docker host's backend, by name."""

    def __init__(self, backends: Mapping[str, DockerBackend]) -> None:
        self._backends = dict(backends)

    @classmethod
    def from_settings(cls, settings: DockerSettings) -> DockerFleet:
        return cls(
            {
                name: DockerBackend.from_settings(name, host, settings)
                for name, host in settings.fleet().items()
            }
        )

    def on(self, host: str) -> DockerBackend:
        backend = self._backends.get(host)
        if backend is None:
            # Intake refuses such an incident before any ladder: reaching this is a policy or settings change
            # under a running incident (a reload), and the answer must still be "no", never another host.
            raise PermanentActionError(f"docker host {host!r} is not configured")
        return backend

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._backends)

    def __iter__(self) -> Iterator[tuple[str, DockerBackend]]:
        return iter(sorted(self._backends.items()))

    async def probe(self) -> dict[str, HostHealth]:
        """Every host asked its version at once; an unreachable one is logged at WARNING (the daemon still
        starts: its incidents are refused by its breaker and escalated, the other hosts go on)."""
        names = sorted(self._backends)
        found = await asyncio.gather(*(self._backends[name].probe() for name in names))
        for name, health in zip(names, found, strict=True):
            if health.reachable:
                logger.info("docker host %s: engine %s", name, health.engine_version)
            else:
                logger.warning("docker host %s is unreachable: %s", name, health.last_error)
        return dict(zip(names, found, strict=True))

    async def report(
        self, breaker_of: Callable[[str], str], fresh_s: float = 10.0, probe_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """Each host as ``/api/hosts`` shows it. A host not heard from within ``fresh_s`` is asked its version
        first (all at once, each for at most ``probe_s``: a dead host makes the answer late, never stuck)."""
        now = time.time()
        stale = [b for _, b in self if b.health.checked_at is None or now - b.health.checked_at > fresh_s]

        async def probe(backend: DockerBackend) -> None:
            try:
                await asyncio.wait_for(backend.probe(), probe_s)
            except TimeoutError:
                # The call goes on in the host's pool until its own timeout; what matters here is that the host
                # did not answer in time, which must not read as reachable.
                backend.health.reachable = False
                backend.health.last_error = f"no answer within {probe_s:g}s"

        await asyncio.gather(*(probe(b) for b in stale))
        return [
            {
                "name": name,
                "url": shown_url(backend.host) if backend.host else "(DOCKER_HOST or the default socket)",
                "tls": backend.tls is not None,
                "reachable": backend.health.reachable,
                "engine_version": backend.health.engine_version,
                "last_error": backend.health.last_error,
                "breaker": breaker_of(f"backend:docker:{name}"),
                "latency_ms": None
                if backend.health.latency_s is None
                else round(backend.health.latency_s * 1000, 1),
                "checked_at": backend.health.checked_at,
            }
            for name, backend in self
        ]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
