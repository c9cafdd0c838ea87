"""A throwaway PostgreSQL cluster for tests: initdb, pg_ctl start on a free loopback port, trust auth.

PostgreSQL differs from the other parts enough to stand alone: initdb refuses to run as root, so the
cluster belongs to the postgres user; pg_ctl daemonizes the postmaster, so it is not our child and is
tracked by pid plus start time; and durability is switched off, the cluster being deleted after the run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .common import (
    LOOPBACK,
    Pid,
    RealPartError,
    child_env,
    fail,
    free_port,
    log_tail,
    port_clash,
    remove_tree,
    require,
    stop_pids,
    track,
    untrack,
)


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 at a free port, trust auth, user postgres."""

    def __init__(self, *, start_timeout: float = 60.0) -> None:
        self._closed = False
        self._postmaster: Pid | None = None
        self._initdb = require("initdb")
        self._pg_ctl = require("pg_ctl")
        # initdb refuses to run as root: as root the cluster belongs to the postgres user, in a directory
        # it owns under /tmp (a root-only TMPDIR would not let it in).
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                fail("no postgres user: apt-get install postgresql")
        base = "/tmp" if self._owner is not None else None
        self._dir = Path(tempfile.mkdtemp(prefix="remediator-pg-", dir=base))
        track(self)
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
        env = child_env({"HOME": str(self._dir), "LC_ALL": "C"} if owner else {"LC_ALL": "C"})
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
                self._postmaster = Pid.of(int(pid_line))
                return
            if not port_clash(self.log_path):
                break
        raise RealPartError(
            f"pg_ctl start failed:\n{started.stdout}{started.stderr}\nlog:\n{log_tail(self.log_path)}"
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
                    stop_pids([self._postmaster], signal.SIGQUIT, grace=5)
        finally:
            remove_tree(self._dir)
            untrack(self)
