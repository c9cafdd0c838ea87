"""Container actions through the Docker Engine API (the docker SDK), for plain Docker hosts.

The SDK is synchronous, so every call runs in a small bounded thread pool with a timeout; the event loop never
blocks on Docker. Docker's errors are mapped here, at the boundary, to Temporary/PermanentActionError.

A target is a container *name*, and it resolves to exactly the container with that name or to nothing. Docker's
own lookup (``GET /containers/{id}/json``, ``containers.get``) also accepts a full ID and any unique ID prefix,
so an allowed name such as ``db`` would, on a host without a ``db`` container, silently pick whichever other
container's ID starts with "db" and restart it, exec in it or read its logs. Remediator's targets come from an
alert label checked against an allow list of names, so an ID (full or prefix) is never what a policy meant:
``exact_container`` looks the name up exactly, and every later call uses the container's full ID, so the name is
resolved once and cannot resolve to another container between the lookup and the action.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import docker
import docker.constants
import docker.errors
import docker.tls
import requests.exceptions
from pydantic import Field

from remediator.actions.base import Params
from remediator.domain.fencing import call_deadline, call_guard
from remediator.errors import ActionError, LateCall, PermanentActionError, TemporaryActionError
from remediator.settings import DEFAULT_DOCKER_HOST, DockerHost, DockerSettings, DockerTLS, shown_url

T = TypeVar("T")


class RestartParams(Params):
    timeout_s: int = Field(default=10, ge=0, le=600)
    """Seconds Docker waits for the container to stop before it kills it."""


class ExecParams(Params):
    argv: tuple[str, ...] = Field(min_length=1, max_length=64)
    """The program and its arguments (strings), run as is without a shell: ``[nginx, -s, reload]``. Fixed in
    the policy; nothing from the alert is ever added to it."""
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")
    """User (name or uid, optionally ``:group``) to run it as. Unset: the container's user."""
    workdir: str | None = Field(default=None, pattern=r"^/")
    """Absolute working directory inside the container. Unset: the container's."""
    timeout_s: int = Field(default=30, ge=1, le=600)
    """Seconds the command may run before the attempt counts as a temporary failure."""


class LogsParams(Params):
    tail: int = Field(default=50, ge=1, le=5000)
    """Lines of the container's log to attach as evidence."""


def _map_error(exc: Exception, target: str) -> Exception:
    if isinstance(exc, ActionError):
        return exc
    if isinstance(exc, docker.errors.NotFound):
        explanation = str(exc.explanation or "")
        if not explanation or "no such container" in explanation.lower():
            return PermanentActionError(f"no such container: {target}")
        # An image, network or service that is missing: say which, not "no such container".
        return PermanentActionError(f"{target}: docker answered 404: {explanation}")
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        if "not a swarm manager" in str(exc.explanation):
            # Docker says 503, but this node stays a worker (or outside a swarm) until someone changes it.
            return PermanentActionError(f"this Docker node is not a swarm manager: {exc.explanation}")
        if "OCI runtime create failed" in str(exc.explanation):
            # Docker says 500, but a command or mount that cannot start will not start on a retry either.
            return PermanentActionError(f"{target} cannot start: {exc.explanation}")
        if status >= 500 or status == 409:
            return TemporaryActionError(f"docker answered {status}: {exc.explanation}")
        return PermanentActionError(f"docker answered {status}: {exc.explanation}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException | OSError):
        return TemporaryActionError(f"docker unreachable: {exc}")
    return PermanentActionError(f"unexpected docker error: {type(exc).__name__}: {exc}")


# What Docker accepts as a container name (and, for the hex ones, what looks like an ID or an ID prefix).
_DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def container_named(client: Any, name: str) -> dict[str, Any] | None:
    """The listing entry (``Id``, ``Names``, ``Labels``, ...) of the container named exactly ``name``, or None.

    Never an ID or an ID prefix: the list API's ``name`` filter only looks at names. That filter is a regular
    expression over every name a container has (legacy link aliases such as ``/web/db`` included), so it is
    anchored and escaped to narrow the listing, and the exact name is then checked here: correctness never
    depends on how the daemon reads the pattern."""
    found = client.api.containers(all=True, filters={"name": f"^/{re.escape(name)}$"})
    exact = [c for c in found if f"/{name}" in (c.get("Names") or [])]
    if len(exact) > 1:  # Docker keeps names unique; never guess between two
        ids = ", ".join(str(c["Id"])[:12] for c in exact)
        raise PermanentActionError(f"{len(exact)} containers are named {name} ({ids})")
    return exact[0] if exact else None


def _loose_match(client: Any, target: str) -> str:
    """What Docker's own lookup would have picked for ``target``, to explain a refusal; "" when nothing."""
    # The SDK puts the value in the URL path with "/" unescaped: only a plain name may go there.
    if _DOCKER_NAME.fullmatch(target) is None:
        return ""
    try:
        other = client.api.inspect_container(target)
    except Exception:
        return ""  # nothing, or an ambiguous prefix: the refusal is reason enough
    how = "by its full ID" if other.get("Id") == target else "by ID prefix"
    other_name = str(other.get("Name", "")).lstrip("/")
    if other_name == target:
        return ""  # created under this name a moment ago: the next attempt will find it
    return (
        f" (docker would match container {str(other.get('Id', ''))[:12]} named '{other_name}' {how}; "
        "remediator only acts on the container with exactly this name)"
    )


def exact_container(client: Any, target: str) -> Any:
    """The container named exactly ``target`` (a docker-py Container, fetched by its full ID), or a
    PermanentActionError saying so, and which other container Docker's looser lookup would have taken.

    Every call made through the returned object (restart, logs, exec_run, reload) names the full ID, so the
    name is resolved once: a container renamed or replaced afterwards cannot be acted on instead."""
    entry = container_named(client, target)
    if entry is None:
        raise PermanentActionError(f"no such container: {target}{_loose_match(client, target)}")
    container = client.containers.get(str(entry["Id"]))  # a full ID matches itself before any name or prefix
    if container.name != target:
        # Renamed between the listing and the inspection: the next attempt resolves the name afresh.
        raise TemporaryActionError(
            f"container {target} was renamed to {container.name} while being looked up"
        )
    return container


_thread_deadline = threading.local()


def before_mutation() -> None:
    """In a pool thread, right before a request that changes something: raise LateCall when the deadline the
    runner set for this call has passed (the thread waited, or the process was frozen), so the runner confirms
    its lease again before anything is sent."""
    abandoned: threading.Event | None = getattr(_thread_deadline, "abandoned", None)
    if abandoned is not None and abandoned.is_set():
        # The caller stopped waiting (its timeout): the retry it makes must be the only one that acts.
        raise LateCall("the caller gave up waiting for this call; not sent")
    deadline: float | None = getattr(_thread_deadline, "value", None)
    if deadline is not None and time.monotonic() > deadline:
        raise LateCall(
            f"the lease-safe moment to send this call passed {time.monotonic() - deadline:.1f}s ago"
        )


class DockerHosts(Protocol):
    """Where a Docker action finds the backend of the host its incident names: a DockerFleet, or one
    DockerBackend for a single host."""

    def on(self, host: str) -> DockerBackend: ...


@dataclass
class HostHealth:
    """What the last call to one Docker host showed: the answer to "is web-1 reachable?" (``/api/hosts``)."""

    reachable: bool | None = None
    """None until a call or the start-up probe has been made."""
    engine_version: str = ""
    last_error: str = ""
    latency_s: float | None = None
    """How long the last call took (seconds)."""
    checked_at: float | None = None
    """Wall-clock time of the last call."""


class DockerBackend:
    """One Docker Engine: a lazily created client and the thread pool its calls run in.

    Each host of a fleet has its own backend, so its own pool: the blocking calls of a slow or dead host
    queue on that host's threads and never on another's."""

    name = "docker"

    def __init__(
        self,
        host: str | None,
        timeout_s: float,
        threads: int,
        *,
        host_name: str = DEFAULT_DOCKER_HOST,
        tls: DockerTLS | None = None,
    ) -> None:
        self.host = host
        self.host_name = host_name
        self.timeout_s = timeout_s
        self.tls = tls
        self.health = HostHealth()
        self._probing: asyncio.Future[HostHealth] | None = None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"docker-{host_name}")
        self._slots = asyncio.Semaphore(threads)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, name: str, host: DockerHost | None, settings: DockerSettings) -> DockerBackend:
        """The backend of one configured host (``None``: the SDK's own lookup, DOCKER_HOST or the socket)."""
        if host is None:
            return cls(None, settings.timeout_s, settings.threads, host_name=name)
        return cls(host.url, host.timeout_s, host.threads, host_name=name, tls=host.tls)

    def on(self, host: str) -> DockerBackend:
        """This backend when ``host`` names it: a lone backend is a fleet of one host."""
        if host != self.host_name:
            raise PermanentActionError(f"docker host {host!r} is not configured")
        return self

    def _get_client(self) -> Any:
        # Created on first use, in a pool thread: a daemon that is down at start must not stop remediator.
        with self._lock:
            if self._client is None:
                if self.host:
                    tls: Any = False
                    if self.tls is not None:
                        tls = docker.tls.TLSConfig(
                            client_cert=(str(self.tls.cert), str(self.tls.key)),
                            ca_cert=str(self.tls.ca),
                            verify=str(self.tls.ca) if self.tls.verify else False,
                        )
                    client = docker.DockerClient(
                        base_url=self.host,
                        timeout=math.ceil(self.timeout_s),  # the SDK wants whole seconds; never 0
                        tls=tls,
                        use_ssh_client=self.host.startswith("ssh://"),
                        # Negotiated below, once the session is set up: the SDK would ask at construction.
                        version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                    )
                    # A configured host is reached directly and checked against its own CA: requests would
                    # otherwise send its calls through HTTP(S)_PROXY/ALL_PROXY, read .netrc, and let
                    # REQUESTS_CA_BUNDLE replace the configured CA.
                    client.api.trust_env = False
                    api: Any = client.api
                    try:
                        api._version = str(api.version(api_version=False)["ApiVersion"])
                    except BaseException:
                        client.close()
                        raise
                    self._client = client
                else:
                    self._client = docker.from_env(timeout=math.ceil(self.timeout_s))
            return self._client

    def _redacted(self, error: Exception) -> Exception:
        """``error`` without the URL's userinfo, should the SDK have echoed the URL (the settings refuse a
        password in it; this keeps any other userinfo out of steps, escalations and logs too)."""
        if not self.host or self.host not in str(error) or shown_url(self.host) == self.host:
            return error
        return type(error)(str(error).replace(self.host, shown_url(self.host)))

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def probe(self) -> HostHealth:
        """Ask the engine its version (at start, and for ``remediator hosts``); never raises. One probe per host
        at a time, which every caller shares: a hung host must not have its threads, which its remediations
        need, filled with probes. A caller that stops waiting (its own timeout) leaves the probe running."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._ask_version())
        return await asyncio.shield(self._probing)

    async def _ask_version(self) -> HostHealth:
        try:
            version = await self.call("", lambda client: client.version())
            self.health.engine_version = str(version.get("Version", ""))
        except ActionError:
            pass  # recorded in self.health by call()
        return self.health

    async def call(self, target: str, fn: Callable[[Any], T], extra_timeout_s: float = 0) -> T:
        """Run ``fn(client)`` in the pool; map every failure to a typed ActionError. A call that reaches its
        thread after the runner's ``call_deadline`` (queued, or the process frozen past its lease) is not sent:
        LateCall makes the runner confirm its lease again first (docs/safety.md, F3)."""

        abandoned = threading.Event()

        def work(deadline: float | None) -> T:
            _thread_deadline.value = deadline
            _thread_deadline.abandoned = abandoned
            try:
                before_mutation()
                return fn(self._get_client())
            except LateCall:
                raise
            except Exception as exc:
                mapped = self._redacted(_map_error(exc, target))
                if isinstance(mapped, TemporaryActionError):
                    self._drop_client()  # reconnect next time: the daemon may have come back elsewhere
                if mapped is exc:
                    raise
                raise mapped from exc

        loop = asyncio.get_running_loop()
        try:
            # A free thread first, then the deadline: a call that waited for one behind a burst confirms its
            # lease again rather than being sent late or dropped.
            async with self._slots:
                deadline = call_deadline.get()
                guard = call_guard.get()
                if deadline is not None and guard is not None and time.monotonic() > deadline:
                    deadline = await guard()
                started = time.monotonic()
                try:
                    result = await asyncio.wait_for(
                        loop.run_in_executor(self._pool, work, deadline), self.timeout_s + extra_timeout_s
                    )
                except BaseException as exc:
                    abandoned.set()  # timed out or cancelled: a thread still running it sends nothing more
                    self._observe(started, exc)
                    raise
                self._observe(started, None)
                return result
        except TimeoutError as exc:
            raise TemporaryActionError(
                f"docker call on {target or self.host_name} took over {self.timeout_s + extra_timeout_s:.0f}s"
            ) from exc

    def _observe(self, started: float, error: BaseException | None) -> None:
        """Keep the host's health current: a temporary error says the host did not answer; a permanent one
        (no such container) is an answer."""
        if isinstance(error, LateCall):
            return  # not sent: says nothing about the host
        self.health.latency_s = time.monotonic() - started
        self.health.checked_at = time.time()
        if error is None or isinstance(error, PermanentActionError):
            self.health.reachable = True
            self.health.last_error = "" if error is None else self.health.last_error
        elif isinstance(error, TemporaryActionError | TimeoutError):
            self.health.reachable = False
            self.health.last_error = str(error) or f"no answer within {self.timeout_s:g}s"

    def close(self) -> None:
        if self._probing is not None and not self._probing.done():
            self._probing.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._drop_client()


@dataclass(frozen=True)
class ContainerRestart:
    """``container.restart``: stop (gracefully, then kill) and start one container."""

    backend_: DockerHosts
    name: str = "container.restart"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = RestartParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, RestartParams)

        def restart(client: Any) -> str:
            container = exact_container(client, target)
            before_mutation()
            container.restart(timeout=params.timeout_s)
            container.reload()
            state = container.attrs["State"]
            if state.get("Status") != "running":
                # Restarting again will not help a container that dies at start: hand it to a human.
                raise PermanentActionError(
                    f"{target} is {state.get('Status')} right after the restart (exit code {state.get('ExitCode')})"
                )
            return f"restarted {target}; running since {state.get('StartedAt')}"

        return await self.backend_.on(host).call(target, restart, extra_timeout_s=params.timeout_s)


@dataclass(frozen=True)
class ContainerLogs:
    """``container.logs``: the container's state, restart count and last log lines, as evidence."""

    backend_: DockerHosts
    name: str = "container.logs"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "docker"
    params_model: type[Params] = LogsParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, LogsParams)

        def logs(client: Any) -> str:
            container = exact_container(client, target)
            state = container.attrs["State"]
            text = container.logs(tail=params.tail, timestamps=True).decode("utf-8", "replace")
            head = (
                f"state={state.get('Status')} exit_code={state.get('ExitCode')} "
                f"restart_count={container.attrs.get('RestartCount', 0)} started_at={state.get('StartedAt')}"
            )
            return f"{head}\n{text}".rstrip()

        return await self.backend_.on(host).call(target, logs)


# Enough of a command's output to see why it failed, small enough for an incident timeline.
_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class ContainerExec:
    """``container.exec``: run a fixed argv from the policy in a running container (``nginx -s reload``).

    The argv goes to Docker's exec API as a list, never through a shell, and is never built from labels.
    A non-zero exit status is a permanent failure (the same command will fail the same way), with the
    output's tail as the reason.
    """

    backend_: DockerHosts
    name: str = "container.exec"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = ExecParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, ExecParams)
        shown = " ".join(params.argv)

        def execute(client: Any) -> str:
            container = exact_container(client, target)
            status = container.attrs["State"].get("Status")
            if status != "running":
                # Docker would answer 409, which reads as "try again"; a stopped container will not exec.
                raise PermanentActionError(f"{target} is {status}: cannot run `{shown}` in it")
            before_mutation()
            result = container.exec_run(
                list(params.argv), user=params.user or "", workdir=params.workdir, demux=False
            )
            output = (result.output or b"").decode("utf-8", "replace").strip()[-_OUTPUT_CHARS:]
            if result.exit_code != 0:
                raise PermanentActionError(f"`{shown}` in {target} exited {result.exit_code}: {output}")
            return f"ran `{shown}` in {target} (exit 0)" + (f"\n{output}" if output else "")

        return await self.backend_.on(host).call(target, execute, extra_timeout_s=params.timeout_s)
