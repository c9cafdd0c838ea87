"""The composition root: builds every part from Settings, runs the named tasks, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import resource
import signal
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from remediator import logs
from remediator.actions.base import Action, Probe
from remediator.actions.catalogue import SPECS, build_actions, build_probes
from remediator.actions.fleet import DockerFleet
from remediator.domain.clock import Clock, system_clock
from remediator.domain.policies import Policy, policy_set_version
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.engine.leases import LeaseKeeper
from remediator.engine.maintenance import Maintenance
from remediator.engine.outbox import Outbox
from remediator.engine.retention import Retention
from remediator.engine.runner import RetryPolicy, Runner
from remediator.errors import ConfigError, PolicyError, RemediatorError, StoreError
from remediator.escalation.base import Notifier
from remediator.escalation.catalogue import build_notifiers
from remediator.escalation.log import LogNotifier
from remediator.metrics import Metrics
from remediator.policy.loader import load_dir
from remediator.policy.matching import hosts_out_of_reach
from remediator.server import Auth, HttpServer, build_app, tls_context, webhook_token
from remediator.settings import Settings
from remediator.signing import SignatureChecker
from remediator.store.factory import build_store

logger = logging.getLogger("remediator")


def load_policies(settings: Settings) -> list[Policy]:
    """The policies of ``settings.policies_dir``, validated with every action's parameters (PolicyError if not)."""
    return load_dir(settings.policies_dir, SPECS)


def unknown_notifiers(policies: list[Policy], settings: Settings) -> list[str]:
    """``policy: notifier`` for each escalate step whose notifier is not configured (it falls back to the log)."""
    known = {*settings.escalation.notifier_names(), "log"}
    return [
        f"{p.name}: {s.name}"
        for p in policies
        for s in p.steps
        if s.kind == "escalate" and s.name not in known
    ]


def maintenance_notice_problem(settings: Settings) -> str | None:
    """Why REMEDIATOR_MAINTENANCE__NOTIFY cannot be used, or None: it must name a webhook or Slack notifier (or
    ``log``), since a notice that an incident is held must never page anyone."""
    name = settings.maintenance.notify
    escalation = settings.escalation
    if name is None or name == "log" or name in escalation.targets or name in escalation.slack:
        return None
    for kind, group in (
        ("a PagerDuty", escalation.pagerduty),
        ("an Alertmanager", escalation.alertmanager),
        ("a Grafana", escalation.grafana),
    ):
        if name in group:
            return (
                f"REMEDIATOR_MAINTENANCE__NOTIFY: {name!r} is {kind} notifier; a maintenance notice must not page:"
                " name a webhook (ESCALATION__TARGETS) or Slack (ESCALATION__SLACK) notifier, or log"
            )
    return (
        f"REMEDIATOR_MAINTENANCE__NOTIFY: no notifier named {name!r} (ESCALATION__TARGETS, __SLACK, or log)"
    )


def uses_prometheus(policy: Policy) -> bool:
    """Whether a policy's healthy floor or a verification queries Prometheus."""
    verifies = any(s.verify is not None and s.verify.prometheus is not None for s in policy.steps)
    return verifies or policy.healthy_floor is not None


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one and return the soft limit in force.

    Distributions start services with a soft limit of 1,024 and a much higher hard one; a daemon that holds
    client connections, store files and Docker and notifier sockets needs the room (issue 12)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one on Linux (nr_open caps it): then a generous fixed value.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    logger.info(
        "open-files limit %d (hard %s)", soft, "unlimited" if hard == resource.RLIM_INFINITY else hard
    )
    return soft


def open_files_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (addresses compared against; nothing binds here)


def _loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def unroutable_public_url(public_url: str | None, host: str, link_base: str) -> str | None:
    """Why the approval links in escalations (built on ``link_base``) would not reach this daemon from another
    machine, or None: PUBLIC_URL unset while serve listens on a wildcard address (the links would read
    ``http://0.0.0.0:9095``), or naming a loopback or wildcard address while serve listens beyond the loopback.
    A daemon that listens on the loopback only is for people on its own machine: no warning."""
    host = host.strip("[]").lower()
    if _loopback(host):
        return None
    if public_url is None:
        if host in _WILDCARDS:
            return (
                f"REMEDIATOR_SERVER__PUBLIC_URL is unset, so approval links in escalations read {link_base}"
            )
        return None
    named = (urlsplit(public_url).hostname or "").lower()
    if named in _WILDCARDS or _loopback(named):
        return f"REMEDIATOR_SERVER__PUBLIC_URL {public_url} names a loopback or wildcard address"
    return None


async def start_http(app: web.Application, settings: Settings) -> HttpServer:
    """The webhook and API listener, with its connections and read times bounded by ``settings.server``."""
    server = settings.server
    http = HttpServer(
        app,
        server.host,
        server.port,
        tls_context(settings),
        server.max_connections,
        server.header_timeout_s,
        open_files_limit(),
    )
    await http.start()
    return http


class App:
    """Everything one daemon runs; ``start`` and ``stop`` are the whole lifecycle."""

    def __init__(
        self, settings: Settings, clock: Clock = system_clock, retry: RetryPolicy | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = Metrics(CollectorRegistry())
        self.store = build_store(settings)
        self.fleet = DockerFleet.from_settings(settings.docker)
        if settings.docker.hosts and settings.docker.host:
            logger.warning("REMEDIATOR_DOCKER__HOST is ignored: REMEDIATOR_DOCKER__HOSTS names the hosts")
        self.actions: dict[str, Action] = build_actions(self.fleet, settings)
        self.notifiers: dict[str, Notifier] = build_notifiers(settings.escalation)
        self.gate = Gate(self.store, settings.guards, self.metrics, clock)
        outbox = Outbox(
            self.store,
            self.notifiers,
            LogNotifier(),
            self.gate.circuits,
            self.metrics,
            clock,
            settings.escalation.attempts,
            settings.escalation.backoff_max_s,
            owner=settings.replica_id,
            lease_s=settings.store.lease_s,
        )
        self.escalator = Escalator(self.store, outbox, self.metrics, clock)
        self.probes: dict[str, Probe] = build_probes(settings)
        self.runner = Runner(
            self.store,
            self.actions,
            self.probes,
            self.gate,
            self.escalator,
            self.metrics,
            clock,
            retry,
            lease_s=settings.store.lease_s,
            call_timeout_s=settings.docker.timeout_s,
            host_timeouts={name: backend.timeout_s for name, backend in self.fleet},
        )
        self.policies: list[Policy] = []
        self._reloading = asyncio.Lock()
        self.intake: Intake | None = None
        self._web: HttpServer | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self.maintenance: Maintenance | None = None
        self._probe: asyncio.Task[Any] | None = None
        self.leases: LeaseKeeper | None = None
        self._ready = False
        self._stopped = False
        self.dead = asyncio.Event()
        """Set when a root task ended on its own (``died`` says which and why)."""
        self.died = ""
        self.port = 0

    def _checked(self, policies: list[Policy]) -> list[Policy]:
        """``policies`` if this daemon can run them (ConfigError otherwise), warning of what falls back."""
        needing = [p.name for p in policies if uses_prometheus(p)]
        if needing and "prometheus" not in self.probes:
            raise ConfigError(
                f"policies {', '.join(needing)} query Prometheus: set REMEDIATOR_PROMETHEUS__URL"
            )
        missing = unknown_notifiers(policies, self.settings)
        if missing:
            # One line for all: a fresh install (no escalation target yet) must not open with a wall of warnings.
            logger.warning(
                "escalation targets not configured, these escalations go to the log (REMEDIATOR_ESCALATION__*): %s",
                ", ".join(missing),
            )
        for problem in hosts_out_of_reach(policies, self.fleet.names):
            logger.warning("%s: its alerts will be refused and escalated (REMEDIATOR_DOCKER__HOSTS)", problem)
        return policies

    def _in_force(self, policies: list[Policy]) -> dict[str, Any]:
        """Make ``policies`` the set new alerts are matched against, and say so in the metrics."""
        self.policies[:] = policies  # the same list the API reads
        version = policy_set_version(policies)
        self.metrics.policies_loaded.set(len(policies))
        self.metrics.policies_version.clear()
        self.metrics.policies_version.labels(version).set(1)
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(self.clock())
        return {"policies": len(policies), "version": version}

    async def reload(self, by: str) -> dict[str, Any]:
        """Load ``policies_dir`` again (SIGHUP, POST /-/reload, ``remediator reload``); one reload at a time.

        A broken set (PolicyError, ConfigError) is refused and the policies in force stay. An incident whose
        ladder runs keeps the policy object it started with; a removed policy's running ladders finish their
        current step and escalate. New alerts use the new set at once."""
        async with self._reloading:
            try:
                # In a thread: parsing is bounded, but not free, and the loop answers webhooks meanwhile.
                loaded = self._checked(await asyncio.to_thread(load_policies, self.settings))
                if not loaded:
                    raise PolicyError(
                        str(self.settings.policies_dir), None, "no policies: refusing to run none"
                    )
            except (PolicyError, ConfigError) as exc:
                self.metrics.reload_successful.set(0)
                logger.error(
                    "policy reload by %s refused; the %d policies in force stay: %s",
                    by,
                    len(self.policies),
                    exc,
                )
                raise
            before = {p.name: p.version for p in self.policies}
            after = {p.name: p.version for p in loaded}
            removed = set(before) - set(after)
            changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
            in_force = self._in_force(loaded)
            if self.intake is not None:
                self.intake.set_policies(loaded)
            if self.leases is not None:
                self.leases.policies = {p.name: p for p in loaded}
            orphaned = self.runner.policies_removed(removed, f"reloaded by {by}")
            detail = {
                "by": by,
                **in_force,
                "added": sorted(set(after) - set(before)),
                "removed": sorted(removed),
                "changed": changed,
                "incidents_to_escalate": orphaned,
            }
            await self.store.audit(None, "policies_reloaded", detail, self.clock())
            logger.info("policies reloaded by %s: %s", by, detail)
            return in_force

    async def start(self) -> None:
        """Start up in an order safety depends on: what the last run left in the inbox is queued, the leases are
        resumed and the maintenance windows applied before any root task runs, and the listener opens last."""
        problem = maintenance_notice_problem(self.settings)
        if problem is not None:
            raise ConfigError(problem)
        self._in_force(self._checked(load_policies(self.settings)))
        await self.store.open()
        await self.gate.load()
        intake, leases, maintenance = self._workers()
        await intake.recover()
        # Resume the ladders and deliveries this replica held before a restart, and what nobody holds.
        await leases.tick()
        # Windows that began or ended while no replica ran.
        await maintenance.apply()
        self._run_root_tasks(intake, leases, maintenance)
        await self._listen(intake, maintenance)

    def _workers(self) -> tuple[Intake, LeaseKeeper, Maintenance]:
        """Intake, the lease keeper and the maintenance pass, built (nothing runs yet) and kept on the app."""
        settings = self.settings
        self.intake = Intake(
            self.store,
            self.policies,
            self.runner,
            self.escalator,
            self.metrics,
            self.clock,
            owner=settings.replica_id,
            lease_s=settings.store.lease_s,
            docker_hosts=self.fleet.names,
        )
        self.leases = LeaseKeeper(
            self.store,
            self.runner,
            self.escalator,
            {p.name: p for p in self.policies},
            settings.replica_id,
            settings.store.lease_s,
            self.clock,
        )
        self.maintenance = Maintenance(
            self.store,
            self.runner,
            self.escalator,
            self.metrics,
            self.clock,
            lambda: self.policies,
            self.fleet.names,
            settings.replica_id,
            settings.store.lease_s,
            settings.maintenance.max_s,
            settings.maintenance.tick_s,
            settings.maintenance.notify,
        )
        self.intake.maintenance_notify = settings.maintenance.notify
        return self.intake, self.leases, self.maintenance

    def _run_root_tasks(self, intake: Intake, leases: LeaseKeeper, maintenance: Maintenance) -> None:
        """The tasks that loop until ``stop``, supervised; the Docker hosts' probe besides."""
        settings = self.settings
        self._worker = self._supervised(intake.run(), "intake")
        self._sweeper = self._supervised(intake.sweep(), "inbox-sweep")
        self._keeper = self._supervised(leases.run(), "leases")
        self._maintenance = self._supervised(maintenance.run(), "maintenance")
        retention = Retention(
            self.store, settings.retention, settings.guards, lambda: self.policies, self.metrics, self.clock
        )
        self._retention = self._supervised(retention.run(), "retention")
        # Each Docker host asked once, in the background: an unreachable one is a WARNING, never a reason not
        # to start (its own breaker refuses its incidents; the other hosts go on).
        self._probe = asyncio.create_task(self.fleet.probe(), name="docker-probe")

    async def _listen(self, intake: Intake, maintenance: Maintenance) -> None:
        """Open the HTTP listener, then say the daemon is ready."""
        settings = self.settings
        server = settings.server
        token = webhook_token(settings)
        auth = Auth(token, server.basic_username, server.auth_disabled)
        self.escalator.link_key = token
        signatures = None
        if server.hmac_secret is not None:
            signatures = SignatureChecker(server.hmac_secret.get_secret_value(), server.replay_window_s)
        app = build_app(
            self.store,
            intake,
            self.gate,
            self.policies,
            self.metrics,
            auth,
            server.max_body_bytes,
            self.clock,
            lambda: self._ready,
            signatures,
            token,
            body_timeout_s=server.body_timeout_s,
            replica=settings.replica_id,
            reload=self.reload,
            hosts=self._hosts,
            maintenance=maintenance,
        )
        self._web = await start_http(app, settings)
        self.port = self._web.port
        scheme = "https" if server.tls_cert is not None else "http"
        self.escalator.public_url = server.public_url or f"{scheme}://{server.host}:{self.port}"
        unroutable = unroutable_public_url(server.public_url, server.host, self.escalator.public_url)
        if unroutable is not None:
            logger.warning(
                "%s: no one on another machine can open them; set it to the URL people reach remediator at"
                " (https://remediator.example.com)",
                unroutable,
            )
        self._ready = True
        logger.info(
            "remediator listening on %s:%d with %d policies from %s",
            server.host,
            self.port,
            len(self.policies),
            settings.policies_dir,
        )

    async def _hosts(self) -> list[dict[str, Any]]:
        """``GET /api/hosts``: each Docker host, reachable or not, with its breaker."""
        return await self.fleet.report(lambda name: self.gate.circuits.get(name).status)

    def _supervised(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A root task: these loop until cancelled at stop. One that ends otherwise (a bug that escaped its own
        handling) leaves the daemon unable to take or act on alerts: it is not ready any more, and ``died``
        tells ``serve`` to stop, so that its supervisor (systemd, Docker, Kubernetes) starts it again."""
        task = asyncio.create_task(work, name=name)

        def ended(done: asyncio.Task[None]) -> None:
            if self._stopped or done.cancelled():
                return
            error = done.exception()
            logger.critical("root task %s ended (%r): stopping; remediator must be restarted", name, error)
            self._ready = False
            self.died = f"{name} ended: {error!r}"
            self.dead.set()

        task.add_done_callback(ended)
        return task

    async def stop(self) -> None:
        """Stop taking alerts, let running steps finish within the grace period, then close everything.
        A second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        if self._web is not None:
            await self._web.cleanup()
        grace = self.settings.server.shutdown_grace_s
        if self.intake is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.intake.join(), grace)
        for task in (self._worker, self._sweeper, self._retention, self._maintenance, self._probe):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.leases is not None:
            # Keep renewing what is held while it drains (a drain may outlast a lease), but take nothing new.
            self.leases.claiming = False
        held = self.runner.incident_ids()
        await self.runner.drain(grace)
        if self.leases is not None:
            try:
                await self.store.release_leases(self.settings.replica_id, held)
            except StoreError as exc:
                # Harmless: unreleased leases expire and another replica (or the next start) claims them.
                logger.warning("could not release the leases of %d incidents: %s", len(held), exc)
        await self.escalator.drain(grace)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        for notifier in self.notifiers.values():
            await notifier.close()
        self.fleet.close()
        await self.store.close()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    raise_open_files_limit()
    app = App(settings)
    await app.start()
    # Everything built so far lives as long as the process: keep it out of the collector's full passes, which
    # otherwise took ~40 ms under load (a p99 spike in the webhook's answers).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        # A refused reload is logged and counted by reload(); the daemon goes on with the policies in force.
        task = asyncio.create_task(app.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(_reload_done)

    def _reload_done(done: asyncio.Task[Any]) -> None:
        reloads.discard(done)
        if not done.cancelled():
            done.exception()  # retrieved: reload() logged it already

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(app.dead.wait())]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    logger.info("stopping: draining running steps (grace %.0fs)", settings.server.shutdown_grace_s)
    await app.stop()
    logs.flush()
    if app.died:
        raise RemediatorError(f"stopped because a root task ended: {app.died}")
