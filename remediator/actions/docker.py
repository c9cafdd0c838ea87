"""Container actions through the Docker Engine API (the docker SDK), for plain Docker hosts.

The SDK is synchronous, so every call runs in a small bounded thread pool with a timeout; the event loop never
blocks on Docker. Docker's errors are mapped here, at the boundary, to Temporary/PermanentActionError.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import docker
import docker.errors
import requests.exceptions
from pydantic import Field

from remediator.actions.base import Params
from remediator.errors import ActionError, PermanentActionError, TemporaryActionError

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


class DockerBackend:
    """One Docker Engine: a lazily created client and the thread pool its calls run in."""

    name = "docker"

    def __init__(self, host: str | None, timeout_s: float, threads: int) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        # Created on first use, in a pool thread: a daemon that is down at start must not stop remediator.
        with self._lock:
            if self._client is None:
                if self.host:
                    self._client = docker.DockerClient(base_url=self.host, timeout=int(self.timeout_s))
                else:
                    self._client = docker.from_env(timeout=int(self.timeout_s))
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def call(self, target: str, fn: Callable[[Any], T], extra_timeout_s: float = 0) -> T:
        """Run ``fn(client)`` in the pool; map every failure to a typed ActionError."""

        def work() -> T:
            try:
                return fn(self._get_client())
            except Exception as exc:
                mapped = _map_error(exc, target)
                if isinstance(mapped, TemporaryActionError):
                    self._drop_client()  # reconnect next time: the daemon may have come back elsewhere
                if mapped is exc:
                    raise
                raise mapped from exc

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, work), self.timeout_s + extra_timeout_s
            )
        except TimeoutError as exc:
            raise TemporaryActionError(
                f"docker call on {target} took over {self.timeout_s + extra_timeout_s:.0f}s"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._drop_client()


@dataclass(frozen=True)
class ContainerRestart:
    """``container.restart``: stop (gracefully, then kill) and start one container."""

    backend_: DockerBackend
    name: str = "container.restart"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = RestartParams

    async def run(self, target: str, params: Params) -> str:
        assert isinstance(params, RestartParams)

        def restart(client: Any) -> str:
            container = client.containers.get(target)
            container.restart(timeout=params.timeout_s)
            container.reload()
            state = container.attrs["State"]
            if state.get("Status") != "running":
                # Restarting again will not help a container that dies at start: hand it to a human.
                raise PermanentActionError(
                    f"{target} is {state.get('Status')} right after the restart (exit code {state.get('ExitCode')})"
                )
            return f"restarted {target}; running since {state.get('StartedAt')}"

        return await self.backend_.call(target, restart, extra_timeout_s=params.timeout_s)


@dataclass(frozen=True)
class ContainerLogs:
    """``container.logs``: the container's state, restart count and last log lines, as evidence."""

    backend_: DockerBackend
    name: str = "container.logs"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "docker"
    params_model: type[Params] = LogsParams

    async def run(self, target: str, params: Params) -> str:
        assert isinstance(params, LogsParams)

        def logs(client: Any) -> str:
            container = client.containers.get(target)
            state = container.attrs["State"]
            text = container.logs(tail=params.tail, timestamps=True).decode("utf-8", "replace")
            head = (
                f"state={state.get('Status')} exit_code={state.get('ExitCode')} "
                f"restart_count={container.attrs.get('RestartCount', 0)} started_at={state.get('StartedAt')}"
            )
            return f"{head}\n{text}".rstrip()

        return await self.backend_.call(target, logs)


# Enough of a command's output to see why it failed, small enough for an incident timeline.
_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class ContainerExec:
    """``container.exec``: run a fixed argv from the policy in a running container (``nginx -s reload``).

    The argv goes to Docker's exec API as a list, never through a shell, and is never built from labels.
    A non-zero exit status is a permanent failure (the same command will fail the same way), with the
    output's tail as the reason.
    """

    backend_: DockerBackend
    name: str = "container.exec"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = ExecParams

    async def run(self, target: str, params: Params) -> str:
        assert isinstance(params, ExecParams)
        shown = " ".join(params.argv)

        def execute(client: Any) -> str:
            container = client.containers.get(target)
            status = container.attrs["State"].get("Status")
            if status != "running":
                # Docker would answer 409, which reads as "try again"; a stopped container will not exec.
                raise PermanentActionError(f"{target} is {status}: cannot run `{shown}` in it")
            result = container.exec_run(
                list(params.argv), user=params.user or "", workdir=params.workdir, demux=False
            )
            output = (result.output or b"").decode("utf-8", "replace").strip()[-_OUTPUT_CHARS:]
            if result.exit_code != 0:
                raise PermanentActionError(f"`{shown}` in {target} exited {result.exit_code}: {output}")
            return f"ran `{shown}` in {target} (exit 0)" + (f"\n{output}" if output else "")

        return await self.backend_.call(target, execute, extra_timeout_s=params.timeout_s)
