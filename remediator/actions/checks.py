"""``container.check``: a fixed read-only command run in a container as a diagnosis (``nginx -t``).

The runbooks' "check the config before you reload": as a ``diagnose`` step with ``must_pass: true`` it gates the
steps after it. The argv goes to Docker's exec API as a list, never through a shell, and is never built from
labels. Exit 0 passes, with the output's tail as evidence; any other exit, or a container that is not running,
is a permanent failure carrying that output. It runs in shadow mode too, like every diagnosis, so the command
must not change anything: that is the policy author's promise (``nginx -t``, ``redis-cli ping``,
``pg_isready``), and docs/policies.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from remediator.actions.base import Params
from remediator.actions.docker import DockerHosts, before_mutation, exact_container
from remediator.errors import PermanentActionError

_OUTPUT_CHARS = 2000


class CheckParams(Params):
    argv: tuple[str, ...] = Field(min_length=1, max_length=64)
    """The read-only program and its arguments, run as is without a shell: ``[nginx, -t]``."""
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")
    """User (name or uid, optionally ``:group``) to run it as. Unset: the container's user."""
    timeout_s: int = Field(default=30, ge=1, le=600)
    """Seconds the command may run before the check counts as a temporary failure."""


@dataclass(frozen=True)
class ContainerCheck:
    """``container.check``: run a fixed read-only command; exit 0 passes, anything else fails."""

    backend_: DockerHosts
    name: str = "container.check"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "docker"
    params_model: type[Params] = CheckParams

    async def run(self, target: str, params: Params, host: str = "default") -> str:
        assert isinstance(params, CheckParams)
        shown = " ".join(params.argv)

        def check(client: Any) -> str:
            container = exact_container(client, target)
            status = container.attrs["State"].get("Status")
            if status != "running":
                raise PermanentActionError(f"{target} is {status}: cannot run `{shown}` in it")
            before_mutation()  # an exec instance is created on the daemon: fenced like any other request
            result = container.exec_run(list(params.argv), user=params.user or "", demux=False)
            output = (result.output or b"").decode("utf-8", "replace").strip()[-_OUTPUT_CHARS:]
            if result.exit_code != 0:
                raise PermanentActionError(f"`{shown}` in {target} exited {result.exit_code}: {output}")
            return f"`{shown}` in {target} passed (exit 0)" + (f"\n{output}" if output else "")

        return await self.backend_.on(host).call(target, check, extra_timeout_s=params.timeout_s)
