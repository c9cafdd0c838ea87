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
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import datetime as dt
import functools
import glob
import io
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import docker
import docker.errors
import pytest
from aiohttp import web
from docker.models.containers import Container
from multidict import CIMultiDict, CIMultiDictProxy

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
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        _fail(
            f"{binary} is not installed: apt-get install {package} "
            "(scripts/dev test installs every package the tests need)"
        )
    return found


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def _require_loopback(url: str) -> None:
    # Tests may only ever talk to this machine; catch a stray address before any process sends to it.
    host = urllib.parse.urlsplit(url).hostname or ""
    if not (host == "localhost" or host == "::1" or host.startswith("127.")):
        raise ValueError(f"refusing a non-loopback address in a test: {url}")


def _mkdtemp(prefix: str) -> Path:
    # Unix socket paths are limited to 107 bytes, and a long TMPDIR plus docker's nested
    # exec-root/containerd/containerd.sock can pass that; /tmp keeps them short.
    base = tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base if len(base) <= 40 else "/tmp"))


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env.update(extra or {})
    return env


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(no log: {exc})"
    return data[-limit:].decode("utf-8", "replace")


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with _http.open(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _popen(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the log descriptor; ours is closed at once so nothing leaks.
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else _child_env(),
            close_fds=True,
        )


def _terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
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


def _wait_until(
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
            raise RealPartError(
                f"{what} exited with {proc.returncode} while starting; log:\n{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise RealPartError(f"{what} not ready after {timeout:.0f} s; log:\n{_log_tail(log)}")
        time.sleep(0.1)


def _port_clash(log: Path) -> bool:
    text = _log_tail(log, 20000).lower()
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
class _Pid:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> _Pid | None:
        st = _stat(pid)
        return cls(pid, st.start) if st else None

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st.start == self.start and st.state not in ("Z", "X")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)


def _stop_pids(pids: Sequence[_Pid], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
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


def _pids_mentioning(marker: str) -> list[int]:
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


def _descendants(roots: Iterable[int]) -> list[int]:
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


def _remove_tree(root: Path) -> None:
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


def _track(part: _Closable) -> None:
    _live[id(part)] = part


def _untrack(part: _Closable) -> None:
    _live.pop(id(part), None)


@atexit.register
def _close_leftovers() -> None:
    for part in reversed(list(_live.values())):
        with contextlib.suppress(Exception):
            part.close()


# ---------------------------------------------------------------------------------------------------------
# Docker


def _is_static_elf(path: str) -> bool:
    # A dynamically linked busybox (Debian's `busybox`, not `busybox-static`) cannot run in a rootfs
    # that has no libc, and the container would fail with a confusing "no such file or directory".
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return head[:4] == b"\x7fELF"  # 32-bit: not worth parsing here, let docker tell.
        order = "<" if head[5] == 1 else ">"
        (phoff,) = struct.unpack_from(order + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _unix_http_ok(sock_path: Path, path: str = "/_ping", timeout: float = 2.0) -> bool:
    # Raw HTTP over the socket, so polling does not go through the SDK's retries and version probing.
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return False
    status_line = data.split(b"\r\n", 1)[0]
    return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line + b" "


class DockerDaemon:
    """A private dockerd with its own data-root, exec-root and socket; never a system Docker."""

    image = "remediator-test/busybox:latest"
    sleep_command = ("/bin/busybox", "sleep", "100000")

    def __init__(self, *, ready_timeout: float = 30.0) -> None:
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._ready_timeout = ready_timeout
        if os.geteuid() != 0:
            _fail("a private dockerd needs root (CI and the developer machines run tests as root)")
        self._dockerd = require("dockerd")
        require("containerd")
        require("runc")
        busybox = require("busybox")
        if not _is_static_elf(busybox):
            _fail(f"{busybox} is not a static binary: apt-get install busybox-static")
        self._dir = _mkdtemp("remediator-dockerd-")
        _track(self)
        self.host = f"unix://{self._dir}/docker.sock"
        # Own containerd namespaces: if a system containerd is running, dockerd 20.10 attaches to it
        # instead of starting its own, and two daemons sharing namespace "moby" would see each other.
        self._namespace = f"remediator-test-{secrets.token_hex(6)}"
        try:
            (self._dir / "daemon.json").write_text("{}\n")  # keeps /etc/docker/daemon.json out of it
            self.start_daemon()
            self._import_image(busybox)
        except BaseException:
            self.close()
            raise

    @property
    def client(self) -> docker.DockerClient:
        """SDK client for the daemon; a new one after each start_daemon() (old connections are dead)."""
        if self._client is None:
            raise RealPartError("the docker daemon is stopped")
        return self._client

    @property
    def socket_path(self) -> Path:
        return self._dir / "docker.sock"

    @property
    def log_path(self) -> Path:
        return self._dir / "dockerd.log"

    def ping(self) -> bool:
        """Whether the daemon answers right now."""
        return _unix_http_ok(self.socket_path)

    def start_daemon(self) -> None:
        """Start (or start again) dockerd on the same socket and data-root; containers there survive."""
        if self._closed:
            raise RealPartError("this DockerDaemon is closed")
        if self._proc is not None and self._proc.poll() is None:
            return
        d = self._dir
        argv = [
            self._dockerd,
            f"--data-root={d}/data",
            f"--exec-root={d}/exec",
            f"--pidfile={d}/pid",
            f"--host={self.host}",
            f"--config-file={d}/daemon.json",
            f"--containerd-namespace={self._namespace}",
            f"--containerd-plugins-namespace={self._namespace}-plugins",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        for attempt in (1, 2):
            self._proc = _popen(argv, self.log_path)
            try:
                _wait_until(
                    self.ping, what="dockerd", timeout=self._ready_timeout, log=self.log_path, proc=self._proc
                )
                break
            except RealPartError:
                # One retry: on a loaded 2-core machine containerd can miss dockerd's first dial timeout.
                if attempt == 2:
                    raise
                self.stop_daemon()
        self._client = docker.DockerClient(base_url=self.host, timeout=60)

    def stop_daemon(self) -> None:
        """Stop dockerd by its pid (TERM, KILL after 10 s); it stops its containers on the way out."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self._proc is not None:
            _terminate(self._proc, grace=10.0)
            self._proc = None
        # dockerd's own containerd must be gone too, or the next start races it for the socket and times out
        # (seen on a loaded machine); the shims keep the containers' processes and are left alone.
        marker = f"{self._dir}/exec/containerd/containerd.toml"
        _stop_pids([p for pid in _pids_mentioning(marker) if (p := _Pid.of(pid)) is not None], grace=10.0)

    def _import_image(self, busybox: str) -> None:
        # No registry is reachable: the image is a rootfs holding only a static busybox.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            bindir = tarfile.TarInfo("bin")
            bindir.type = tarfile.DIRTYPE
            bindir.mode = 0o755
            tar.addfile(bindir)
            tar.add(busybox, arcname="bin/busybox")
            sh = tarfile.TarInfo("bin/sh")
            sh.type = tarfile.SYMTYPE
            sh.linkname = "busybox"
            tar.addfile(sh)
        repository, tag = self.image.rsplit(":", 1)
        self.client.api.import_image_from_data(buf.getvalue(), repository=repository, tag=tag)

    def run_container(self, name: str, labels: Mapping[str, str] | None = None, **kwargs: Any) -> Container:
        """Run a busybox container that sleeps; a leftover container of the same name is replaced,
        so tests sharing the session daemon may reuse names. Extra kwargs go to containers.run
        (e.g. restart_policy={"Name": "unless-stopped"}); ``command`` replaces the sleep."""
        # By exact name: containers.get() also takes an ID prefix, and would remove another test's container.
        for leftover in self.client.containers.list(all=True, filters={"name": f"^/{name}$"}):
            with contextlib.suppress(docker.errors.NotFound):
                leftover.remove(force=True)
        options: dict[str, Any] = {
            "name": name,
            "labels": dict(labels or {}),
            "detach": True,
            "init": True,  # docker-init handles SIGTERM, so a restart takes ~0.2 s, not the 10 s timeout
            "network_mode": "none",
        }
        command = kwargs.pop("command", list(self.sleep_command))
        options.update(kwargs)
        container: Container = self.client.containers.run(self.image, command, **options)
        return container

    def started_at(self, name: str) -> str:
        state: dict[str, Any] = self.client.api.inspect_container(name)["State"]
        return str(state["StartedAt"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._client is not None and self._proc is not None and self._proc.poll() is None:
                # Removing containers first makes dockerd's own shutdown quick and leaves no shims.
                with contextlib.suppress(Exception):
                    for container in self._client.containers.list(all=True):
                        with contextlib.suppress(Exception):
                            container.remove(force=True)
        finally:
            self.stop_daemon()
            # After a KILL, containerd shims (and the containers under them) outlive dockerd: find them by
            # this daemon's own directory or namespace in their command line, and kill them by pid.
            shims = sorted(set(_pids_mentioning(str(self._dir)) + _pids_mentioning(self._namespace)))
            leftovers = [p for p in map(_Pid.of, _descendants(shims) + shims) if p is not None]
            if leftovers:
                _stop_pids(leftovers, signal.SIGKILL)
            _remove_tree(self._dir)
            _untrack(self)


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 at a free port, trust auth, user postgres."""

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self._closed = False
        self._postmaster: _Pid | None = None
        self._initdb = require("initdb")
        self._pg_ctl = require("pg_ctl")
        # initdb refuses to run as root: as root the cluster belongs to the postgres user, in a directory
        # it owns under /tmp (a root-only TMPDIR would not let it in).
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                _fail("no postgres user: apt-get install postgresql")
        base = "/tmp" if self._owner is not None else None
        self._dir = Path(tempfile.mkdtemp(prefix="remediator-pg-", dir=base))
        _track(self)
        self.port = 0
        self.dsn = ""
        try:
            if self._owner is not None:
                os.chown(self._dir, self._owner.pw_uid, self._owner.pw_gid)
            self._start(start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def data_dir(self) -> Path:
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        return self._dir / "postgres.log"

    def _run(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        owner = self._owner
        env = _child_env({"HOME": str(self._dir), "LC_ALL": "C"} if owner else {"LC_ALL": "C"})
        return subprocess.run(
            list(argv),
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
            cwd=self._dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _start(self, start_timeout: float) -> None:
        init = self._run(
            [
                self._initdb,
                *("-D", str(self.data_dir)),
                *("-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--no-locale", "--no-sync"),
            ],
            timeout=120,
        )
        if init.returncode != 0:
            raise RealPartError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        for _attempt in range(3):
            port = free_port()
            # Durability is pointless for a cluster that is deleted after the run; skipping it is faster.
            options = (
                f"-k {shlex.quote(str(self._dir))} -p {port} -c listen_addresses={LOOPBACK}"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            argv = [self._pg_ctl, "-D", str(self.data_dir), "-o", options, "-l", str(self.log_path)]
            started = self._run(
                [*argv, "-w", "-t", str(int(start_timeout)), "start"], timeout=start_timeout + 30
            )
            if started.returncode == 0:
                self.port = port
                self.dsn = f"postgresql://postgres@{LOOPBACK}:{port}/postgres"
                pid_line = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
                self._postmaster = _Pid.of(int(pid_line))
                return
            if not _port_clash(self.log_path):
                break
        raise RealPartError(
            f"pg_ctl start failed:\n{started.stdout}{started.stderr}\nlog:\n{_log_tail(self.log_path)}"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._postmaster is not None and self._postmaster.alive():
                with contextlib.suppress(Exception):
                    self._run([self._pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"], 30)
                # pg_ctl may have failed or timed out; the recorded pid is the last word.
                if self._postmaster.alive():
                    _stop_pids([self._postmaster], signal.SIGQUIT, grace=5)
        finally:
            _remove_tree(self._dir)
            _untrack(self)


# ---------------------------------------------------------------------------------------------------------
# Alertmanager and Prometheus


class _HttpProcess:
    """A Go server started with a listen address flag, ready when GET /-/ready answers 200."""

    _what = ""
    _binary = ""

    def __init__(self, prefix: str) -> None:
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._exe = require(self._binary)
        self._dir = _mkdtemp(prefix)
        _track(self)
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
            self._proc = _popen(self._argv(f"{LOOPBACK}:{port}"), self.log_path)
            url = f"http://{LOOPBACK}:{port}"
            try:
                _wait_until(
                    functools.partial(_http_ok, f"{url}/-/ready"),
                    what=self._what,
                    timeout=start_timeout,
                    log=self.log_path,
                    proc=self._proc,
                )
            except RealPartError:
                _terminate(self._proc)
                self._proc = None
                if _port_clash(self.log_path):
                    continue  # free_port() raced with another process; try another port
                raise
            self.port, self.url = port, url
            return
        raise RealPartError(f"{self._what} found no free port; log:\n{_log_tail(self.log_path)}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc is not None:
                _terminate(self._proc, grace=10.0)
                self._proc = None
        finally:
            _remove_tree(self._dir)
            _untrack(self)


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
            with _http.open(request, timeout=10) as resp:
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
    ) -> None:
        super().__init__("remediator-prom-")
        self._extra_args = list(extra_args)
        try:
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
# A capture server for receivers that cannot run here


@dataclass(frozen=True)
class CapturedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]  # case-insensitive: headers["authorization"] works
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    status: int  # what the capture server answered


class CaptureServer:
    """Records every request it gets and answers 200, or a chosen status for the next N requests.

    Stands in only for receivers that cannot run here (Slack, PagerDuty, a webhook sink); tests check
    the recorded requests against the documented format.
    """

    def __init__(self) -> None:
        self.requests: list[CapturedRequest] = []
        self.url = ""
        self._fail_remaining = 0
        self._fail_status = 503
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def fail_first(self, n: int, status: int = 503) -> None:
        """Answer `status` to the next n requests (all of them still recorded), then 200 again."""
        self._fail_remaining = n
        self._fail_status = status

    async def wait_for(self, n: int, timeout: float = 10) -> list[CapturedRequest]:
        """Wait until at least n requests have arrived; returns the first n."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.requests) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = [f"{r.method} {r.path} -> {r.status}" for r in self.requests]
            raise AssertionError(f"waited {timeout} s for {n} requests, got {len(got)}: {got}") from None
        return self.requests[:n]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        status = 200
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            status = self._fail_status
        self.requests.append(
            CapturedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                json=parsed,
                status=status,
            )
        )
        self._arrived.set()
        return web.json_response({"ok": status == 200}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Binding port 0 ourselves avoids the race between picking a free port and listening on it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


# ---------------------------------------------------------------------------------------------------------
# Types of the factory fixtures in conftest.py, for annotating tests.


class AlertmanagerFactory(Protocol):
    def __call__(self, webhook_url: str, token: str, **kwargs: Any) -> Alertmanager: ...


class PrometheusFactory(Protocol):
    def __call__(self, config: str, **kwargs: Any) -> Prometheus: ...
