"""What every real part shares: programs, ports, child processes, leftovers and the exit-time close.

Each part (dockerd.py, postgres.py, prometheus.py) is a start/stop story of its own; what they have in
common lives here once: finding a program and naming the Debian package when it is missing, a free
loopback port, a child's environment without proxy variables, starting a child with its output in a log
and stopping it by its pid (TERM, then KILL), waiting until it answers, and cleaning up what a part
leaves behind: processes it did not fork itself (tracked by pid plus start time, so a recycled pid is
never signalled), mounts a killed dockerd left, and its temporary directory. It also keeps the one
registry of live parts that an atexit hook closes when a run is interrupted between setup and teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import pytest

LOOPBACK = "127.0.0.1"

# Which Debian package brings each program, so a failure tells the reader what to install.
APT_PACKAGES: Mapping[str, str] = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "runc": "runc",
    "docker-compose": "docker-compose",
    "busybox": "busybox-static",
    "initdb": "postgresql",
    "pg_ctl": "postgresql",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "prometheus": "prometheus",
    "promtool": "prometheus",
}

# dockerd and friends live in sbin, which a non-root PATH often lacks.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

# Proxy settings from the environment must never route test traffic off this machine.
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")

# urllib honours *_proxy variables by default; an empty ProxyHandler keeps requests on loopback.
http_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RealPartError(RuntimeError):
    """A real part did not start or answer; the message carries the tail of its log."""


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _pg_bindir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        # /usr/lib/postgresql/15/bin -> (15,); numeric so that 9.6 sorts below 15.
        parts = Path(path).parent.name.split(".")
        return tuple(int(p) for p in parts if p.isdigit())

    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    usable = [d for d in dirs if os.access(os.path.join(d, "initdb"), os.X_OK)]
    return Path(usable[-1]) if usable else None


def which(binary: str) -> str | None:
    """Absolute path of a program, looking in sbin and PostgreSQL's versioned bin dir too."""
    if binary in ("initdb", "pg_ctl", "postgres"):
        bindir = _pg_bindir()
        candidate = bindir / binary if bindir else None
        return str(candidate) if candidate and os.access(candidate, os.X_OK) else None
    if binary == "busybox":
        # The image is built from this exact file, so it has to be the one from busybox-static.
        return "/bin/busybox" if os.access("/bin/busybox", os.X_OK) else None
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    return shutil.which(binary, path=path)


def require(binary: str) -> str:
    """Path of a needed program; a missing one fails the test with the package to install."""
    found = which(binary)
    if found is None:
        package = APT_PACKAGES.get(binary, binary)
        fail(
            f"{binary} is not installed: apt-get install {package} "
            "(scripts/dev test installs every package the tests need)"
        )
    return found


def fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def mkdtemp(prefix: str) -> Path:
    # Unix socket paths are limited to 107 bytes, and a long TMPDIR plus docker's nested
    # exec-root/containerd/containerd.sock can pass that; /tmp keeps them short.
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base if len(base) <= 40 else "/tmp"))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


def log_tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(no log: {exc})"
    return data[-limit:].decode("utf-8", "replace")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with http_opener.open(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def popen(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the log descriptor; ours is closed at once so nothing leaks.
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else child_env(),
            close_fds=True,
        )


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """TERM a child we started, KILL it after `grace` seconds, and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log: Path,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise RealPartError(f"{what} exited with {proc.returncode} while starting; log:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RealPartError(f"{what} not ready after {timeout:.0f} s; log:\n{log_tail(log)}")
        time.sleep(0.1)


def port_clash(log: Path) -> bool:
    text = log_tail(log, 20000).lower()
    return "address already in use" in text or "could not bind" in text


# ---------------------------------------------------------------------------------------------------------
# Processes we did not fork ourselves (a daemonized postmaster, containerd shims) are tracked by pid plus
# start time, so a recycled pid is never signalled by mistake.


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    start: int


def _stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return _Stat(state=fields[0], ppid=int(fields[1]), start=int(fields[19]))


@dataclass(frozen=True)
class Pid:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Pid | None:
        st = _stat(pid)
        return cls(pid, st.start) if st else None

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st.start == self.start and st.state not in ("Z", "X")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)


def stop_pids(pids: Sequence[Pid], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    for p in pids:
        p.signal(sig)
    deadline = time.monotonic() + grace
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    if sig != signal.SIGKILL:
        for p in pids:
            p.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def pids_mentioning(marker: str) -> list[int]:
    """Pids whose command line contains `marker`, a path unique to one part (never a program name)."""
    needle = marker.encode()
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(pid)
    return found


def descendants(roots: Iterable[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st.ppid, []).append(pid)
    out: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        # Field 5 is the mount point, with spaces and the like written as octal escapes.
        point = line.split(" ")[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _unmount_under(root: Path) -> None:
    """Detach whatever a killed dockerd left mounted (overlays, its data-root bind, netns files)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    for _ in range(3):
        points = _mounts_under(root)
        if not points:
            return
        # Deepest first: an overlay inside the data-root bind mount has to go before the bind itself.
        for point in sorted(points, key=len, reverse=True):
            libc.umount2(point.encode(), mnt_detach)


def remove_tree(root: Path) -> None:
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        # Something got mounted or recreated meanwhile; one more pass, and then it is reported.
        _unmount_under(root)
        shutil.rmtree(root)


# ---------------------------------------------------------------------------------------------------------
# Anything still open at interpreter exit (a test run interrupted between setup and teardown) is closed.


class _Closable(Protocol):
    def close(self) -> None: ...


_live: dict[int, _Closable] = {}


def track(part: _Closable) -> None:
    _live[id(part)] = part


def untrack(part: _Closable) -> None:
    _live.pop(id(part), None)


@atexit.register
def _close_leftovers() -> None:
    for part in reversed(list(_live.values())):
        with contextlib.suppress(Exception):
            part.close()
