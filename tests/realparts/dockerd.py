"""A private dockerd for tests: its own data-root, exec-root, socket and containerd namespaces.

Docker is the part with the most ways to leave something behind (its containerd, shims that outlive a
killed daemon, overlay and bind mounts under its directory), so starting, restarting and tearing it down
has a module of its own. The only image is a rootfs holding a static busybox, imported without a registry.
(Named dockerd.py, not docker.py, so that `import docker` here can only mean the Docker SDK.)
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import struct
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from .common import (
    Pid,
    RealPartError,
    descendants,
    fail,
    mkdtemp,
    pids_mentioning,
    popen,
    remove_tree,
    require,
    stop_pids,
    terminate,
    track,
    untrack,
    wait_until,
)
from .tls import TlsFiles


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

    def __init__(
        self, *, ready_timeout: float = 30.0, tls: TlsFiles | None = None, tcp_port: int = 0
    ) -> None:
        """``tls`` and ``tcp_port``: also listen on ``tcp://127.0.0.1:tcp_port``, requiring client certificates
        signed by ``tls.ca`` (``--tlsverify``); ``tcp_url`` is then that address."""
        self._closed = False
        self._tls = tls
        self.tcp_url = f"tcp://127.0.0.1:{tcp_port}" if tls is not None else ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._ready_timeout = ready_timeout
        if os.geteuid() != 0:
            fail("a private dockerd needs root (CI and the developer machines run tests as root)")
        self._dockerd = require("dockerd")
        require("containerd")
        require("runc")
        busybox = require("busybox")
        if not _is_static_elf(busybox):
            fail(f"{busybox} is not a static binary: apt-get install busybox-static")
        self._dir = mkdtemp("remediator-dockerd-")
        track(self)
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
        if self._tls is not None:
            argv += [
                f"--host={self.tcp_url}",
                "--tlsverify",
                f"--tlscacert={self._tls.ca}",
                f"--tlscert={self._tls.server_cert}",
                f"--tlskey={self._tls.server_key}",
            ]
        for attempt in (1, 2):
            self._proc = popen(argv, self.log_path)
            try:
                wait_until(
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
            terminate(self._proc, grace=10.0)
            self._proc = None
        # dockerd's own containerd must be gone too, or the next start races it for the socket and times out
        # (seen on a loaded machine); the shims keep the containers' processes and are left alone.
        marker = f"{self._dir}/exec/containerd/containerd.toml"
        stop_pids([p for pid in pids_mentioning(marker) if (p := Pid.of(pid)) is not None], grace=10.0)

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
            shims = sorted(set(pids_mentioning(str(self._dir)) + pids_mentioning(self._namespace)))
            leftovers = [p for p in map(Pid.of, descendants(shims) + shims) if p is not None]
            if leftovers:
                stop_pids(leftovers, signal.SIGKILL)
            remove_tree(self._dir)
            untrack(self)
