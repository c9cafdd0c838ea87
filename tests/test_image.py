"""The image: the real Dockerfile built on a private Docker daemon, run, probed by its own HEALTHCHECK, and given
one alert end to end; and what it promises outside Docker (the lock, the store's file modes, the warning about
approval links no one else can open).

`python:3.11-slim` cannot be pulled here (no registry), so a stand-in is made with debootstrap: Debian bookworm
minbase with python3, python3-venv and python3-pip, with `python`, `python3`, `pip` and `pip3` in
/usr/local/bin as the real image has them (its Python lives there), imported under that tag. The root file
system is cached in ~/.cache/remediator-test/, keyed by the recipe, so only the first run pays for
debootstrap (about a minute). pip in the build reaches the package index through the build argument
PIP_INDEX_URL, as a build behind a private index would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import REPO, TOKEN
from packaging.requirements import Requirement
from realparts import DockerDaemon, require

from remediator.app import unroutable_public_url
from remediator.store.sqlite import SqliteStore

LOCK = REPO / "requirements.lock"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
RECIPE = 1
"""Bump when the stand-in's making changes (below) in a way its cache key would not see."""
CACHE = Path.home() / ".cache" / "remediator-test"
BASE_TAG = "python:3.11-slim"
IMAGE = "remediator-test/remediator:latest"
# What the real python:3.11-slim sets (docker inspect python:3.11-slim).
BASE_CHANGES = [
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]


def locked() -> dict[str, str]:
    """requirements.lock as {normalized name: version}."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            assert version, f"requirements.lock: {line!r} is not name==version"
            pins[normalized(name)] = version
    return pins


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------------------
# Without Docker


def dependencies(name: str, extras: frozenset[str] = frozenset()) -> dict[str, str]:
    """{normalized name: installed version} of everything ``name`` (with ``extras``) needs, transitively."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(name, extra) for extra in extras | {""}]
    while todo:
        current, extra = todo.pop()
        if (normalized(current), extra) in seen:
            continue
        seen.add((normalized(current), extra))
        dist = metadata.distribution(current)
        found[normalized(current)] = dist.version
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(requirement.name, e) for e in requirement.extras | {""}]
    return found


def test_the_tested_venv_has_exactly_the_locked_versions() -> None:
    """The venv CI tests in (scripts/dev installs it with requirements.lock as constraints) holds the versions
    the image installs: a dependency added to pyproject.toml without `scripts/dev lock`, or a version the
    lock does not name, fails here. (A tool someone installed by hand into their venv is not looked at.)"""
    pins = locked()
    needed = dependencies("remediator", frozenset({"dev"}))
    needed.pop("remediator")
    differ = {n: (v, pins.get(n)) for n, v in needed.items() if pins.get(n) != v}
    assert differ == {}, f"(installed, locked) differ: {differ}; run scripts/dev lock"
    assert {"setuptools", "wheel"} <= set(pins), "the image's build backend is pinned too"


async def test_the_sqlite_store_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "remediator.sqlite3"
    old_umask = os.umask(0o022)
    try:
        store = SqliteStore(path)
        await store.open()
        await store.inbox_put('{"version": "4"}', time.time())  # the WAL and its index now exist
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {
            f.name: "0o600" for f in files
        }
        await store.close()
        # A store an older version left world-readable is tightened when opened.
        path.chmod(0o644)
        store = SqliteStore(path)
        await store.open()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        await store.close()
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize(
    ("public_url", "host", "warned"),
    [
        (None, "0.0.0.0", "links in escalations read http://0.0.0.0:9095"),
        (None, "::", "links in escalations read http://0.0.0.0:9095"),
        ("http://localhost:9095", "0.0.0.0", "names a loopback or wildcard address"),
        ("http://127.0.0.5:9095", "10.1.2.3", "names a loopback or wildcard address"),
        ("http://0.0.0.0:9095", "0.0.0.0", "names a loopback or wildcard address"),
        ("http://[::1]:9095", "0.0.0.0", "names a loopback or wildcard address"),
        (None, "127.0.0.1", None),  # only this machine reaches it: its links are for people on it
        (None, "localhost", None),
        ("http://127.0.0.1:9095", "127.0.0.1", None),
        (None, "10.1.2.3", None),  # the links name the address it listens on
        ("https://remediator.example.com", "0.0.0.0", None),
    ],
)
def test_approval_links_no_one_else_can_open_are_warned_about(
    public_url: str | None, host: str, warned: str | None
) -> None:
    found = unroutable_public_url(public_url, host, "http://0.0.0.0:9095")
    if warned is None:
        assert found is None
    else:
        assert found is not None and warned in found


# ---------------------------------------------------------------------------------------------------------
# The stand-in base image


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (deb822 .sources or sources.list), else deb.debian.org."""
    sources = Path("/etc/apt")
    texts = [p.read_text() for p in sorted(sources.glob("sources.list.d/*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
    lists = [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]
    for path in lists:
        if path.is_file():
            for found in re.finditer(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", path.read_text(), re.M):
                if "security" not in found.group(1):
                    return found.group(1)
    return "http://deb.debian.org/debian"


def base_rootfs() -> Path:
    """A tarball of the stand-in's root file system: from the cache, or made with debootstrap."""
    key = hashlib.sha256(f"{RECIPE} {SUITE} minbase {','.join(PACKAGES)}".encode()).hexdigest()[:16]
    tarball = CACHE / f"python-3.11-slim-standin-{key}.tar"
    if tarball.exists():
        return tarball
    debootstrap = require("debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="remediator-rootfs-", dir=CACHE))
    root = work / "root"
    try:
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                debian_mirror(),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"debootstrap exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        # python:3.11-slim's Python is /usr/local/bin/python3 and pip may install into it; the Dockerfile
        # relies on both, so the stand-in has them there too.
        local = root / "usr" / "local" / "bin"
        local.mkdir(parents=True, exist_ok=True)
        for name, target in (
            ("python", "python3"),
            ("python3", "python3"),
            ("pip", "pip3"),
            ("pip3", "pip3"),
        ):
            (local / name).symlink_to(f"/usr/bin/{target}")
        with contextlib.suppress(FileNotFoundError):
            (root / "usr" / "lib" / "python3.11" / "EXTERNALLY-MANAGED").unlink()
        # What an image never carries: apt's caches and lists, documentation, device nodes (Docker makes /dev).
        for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "dev"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        partial = work / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], check=True)
        os.replace(partial, tarball)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    return tarball


def package_index() -> dict[str, str]:
    """The build arguments that point pip in the build at this machine's package index (PyPI here): what this
    machine's pip is configured with (its environment, then pip.conf), else PyPI."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    configured = dict(re.findall(r"^\S*\.(index-url|extra-index-url|trusted-host)='(.*)'$", listed, re.M))
    args = {}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        key = name.removeprefix("PIP_").lower().replace("_", "-")
        value = os.environ.get(name) or configured.get(key, "")
        # file:// indexes on this machine's disk are not in the build's reach.
        value = " ".join(v for v in value.split() if not v.startswith("file:"))
        if value:
            args[name] = value
    args.setdefault("PIP_INDEX_URL", "https://pypi.org/simple")
    # This machine's egress re-signs TLS with a CA of its own, which the stand-in's certificates (and pip's,
    # in the real base image) do not hold: the index and PyPI's file host are trusted as they are, which is
    # what PIP_TRUSTED_HOST is for (a private index with a certificate of its own does the same).
    if "PIP_TRUSTED_HOST" not in args:
        hosts = {
            urlsplit(url).hostname
            for url in (args["PIP_INDEX_URL"], *args.get("PIP_EXTRA_INDEX_URL", "").split())
        }
        args["PIP_TRUSTED_HOST"] = " ".join(sorted(h for h in hosts | {"files.pythonhosted.org"} if h))
    return args


# ---------------------------------------------------------------------------------------------------------
# The image, built and run


@dataclass
class Built:
    daemon: DockerDaemon
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    seconds: dict[str, float] = {}
    started = time.monotonic()
    tarball = base_rootfs()
    seconds["base"] = time.monotonic() - started
    daemon = DockerDaemon()
    try:
        started = time.monotonic()
        with tarball.open("rb") as data:
            repository, tag = BASE_TAG.split(":")
            daemon.client.api.import_image_from_data(
                data, repository=repository, tag=tag, changes=BASE_CHANGES
            )
        seconds["import"] = time.monotonic() - started
        started = time.monotonic()
        log: list[str] = []
        try:
            for chunk in daemon.client.api.build(
                path=str(REPO),
                tag=IMAGE,
                buildargs=package_index(),
                network_mode="host",  # the private daemon has no bridge; pip needs the index
                rm=True,
                forcerm=True,
                decode=True,
            ):
                log.append(str(chunk.get("stream") or chunk.get("error") or ""))
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
        except Exception as exc:
            pytest.fail(f"docker build failed: {exc}\n{''.join(log)[-6000:]}", pytrace=False)
        seconds["build"] = time.monotonic() - started
        yield Built(daemon, seconds)
    finally:
        daemon.close()


def exec_python(daemon: DockerDaemon, container: str, code: str) -> str:
    """Run Python in the container (the image's venv); its standard output. Fails the test on an error."""
    result = daemon.client.api.exec_create(container, ["python", "-c", code], stdout=True, stderr=True)
    output = daemon.client.api.exec_start(result["Id"]).decode()
    status = daemon.client.api.exec_inspect(result["Id"])["ExitCode"]
    assert status == 0, f"python in {container} exited {status}: {output}"
    return str(output)


_HTTP = """
import json, os, sys, urllib.request as u
opener = u.build_opener(u.ProxyHandler({}))
def call(method, path, body=None):
    request = u.Request("http://127.0.0.1:%s%s" % (os.environ["REMEDIATOR_SERVER__PORT"], path),
                        data=body, method=method,
                        headers={"Authorization": "Bearer %s" % os.environ["REMEDIATOR_SERVER__TOKEN"],
                                 "Content-Type": "application/json"})
    with opener.open(request, timeout=10) as answer:
        return json.loads(answer.read())
"""


def wait_healthy(daemon: DockerDaemon, container: str, timeout: float = 90.0) -> dict[str, Any]:
    """The container's health once Docker marks it healthy (fails the test if it goes unhealthy or exits)."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = daemon.client.api.inspect_container(container)["State"]
        health = state.get("Health") or {}
        if health.get("Status") == "healthy":
            return dict(health)
        if not state["Running"] or health.get("Status") == "unhealthy":
            break
        time.sleep(0.5)
    logs = daemon.client.api.logs(container).decode(errors="replace")
    pytest.fail(f"{container} is not healthy: {json.dumps(state)[:3000]}\n{logs[-4000:]}", pytrace=False)


def run_remediator(daemon: DockerDaemon, name: str, env: dict[str, str], **kwargs: Any) -> None:
    for leftover in daemon.client.containers.list(all=True, filters={"name": f"^/{name}$"}):
        leftover.remove(force=True)
    daemon.client.containers.run(
        IMAGE,
        name=name,
        detach=True,
        network_mode="none",
        environment={"REMEDIATOR_SERVER__TOKEN": TOKEN, **env},
        # The image's HEALTHCHECK command, polled faster than its 30 s so the test need not wait.
        healthcheck={"interval": 500_000_000, "timeout": 5_000_000_000, "retries": 3},
        **kwargs,
    )


@pytest.mark.realparts
@pytest.mark.timeout(900)
def test_the_image_goes_healthy_and_restarts_a_container_for_an_alert(built: Built) -> None:
    daemon = built.daemon
    daemon.run_container("sms-db")
    before = daemon.started_at("sms-db")
    sock = daemon.socket_path
    run_remediator(
        daemon,
        "remediator",
        # The policies' Prometheus checks find nothing here (no network): verification never succeeds, which
        # is fine, the test looks at the restart. The daemon acts through the private daemon's socket.
        {"REMEDIATOR_DOCKER__HOST": "unix:///var/run/docker.sock", "REMEDIATOR_SERVER__PORT": "9095"},
        volumes={str(sock): {"bind": "/var/run/docker.sock", "mode": "rw"}},
        group_add=[str(sock.stat().st_gid)],
    )
    health = wait_healthy(daemon, "remediator")
    assert "ok: http://127.0.0.1:9095/readyz ready" in health["Log"][-1]["Output"], health

    body = (REPO / "tests" / "fixtures" / "alertmanager_v4_firing.json").read_bytes()
    posted = exec_python(
        daemon,
        "remediator",
        _HTTP + f"print(json.dumps(call('POST', '/alerts', {body!r})))",
    )
    assert json.loads(posted)["status"] == "accepted", posted
    code = _HTTP + (
        "import time\n"
        "for _ in range(120):\n"
        "    found = call('GET', '/api/incidents')\n"
        "    incidents = found['incidents'] if isinstance(found, dict) else found\n"
        "    if incidents:\n"
        "        one = call('GET', '/api/incidents/%d' % incidents[0]['id'])\n"
        "        if any(s['name'] == 'container.restart' and s['status'] != 'started' for s in one['steps']):\n"
        "            break\n"
        "    time.sleep(0.5)\n"
        "print(json.dumps(one))\n"
    )
    incident = json.loads(exec_python(daemon, "remediator", code))
    assert incident["policy"] == "database-down" and incident["target"] == "sms-db", incident
    steps = [(s["name"], s["status"]) for s in incident["steps"]]
    assert steps[:2] == [("container.logs", "ok"), ("container.restart", "ok")], steps
    assert daemon.started_at("sms-db") != before, "sms-db was not restarted"

    # The store in the volume is the daemon user's alone.
    modes = exec_python(
        daemon,
        "remediator",
        "import os, glob\nfor f in sorted(glob.glob('/var/lib/remediator/*')):"
        " print(os.path.basename(f), oct(os.stat(f).st_mode & 0o777), os.stat(f).st_uid)",
    )
    files = dict((line.split()[0], line.split()[1:]) for line in modes.splitlines())
    for name in ("remediator.sqlite3", "remediator.sqlite3-wal", "remediator.sqlite3-shm", "token"):
        if name in files:
            assert files[name] == ["0o600", "10001"], (name, files)
    assert "remediator.sqlite3" in files, files

    logs = daemon.client.api.logs("remediator").decode(errors="replace")
    assert "REMEDIATOR_SERVER__PUBLIC_URL is unset, so approval links in escalations read" in logs
    assert re.search(r"listening on 0\.0\.0\.0:9095", logs), logs[-2000:]


@pytest.mark.realparts
@pytest.mark.timeout(900)  # whichever test runs first makes the image (debootstrap, build)
def test_another_port_and_another_command_still_listen_everywhere_and_go_healthy(built: Built) -> None:
    daemon = built.daemon
    # The port from the environment, as docs/operations.md says: the HEALTHCHECK reads the same setting.
    # A CMD of its own keeps the listen address, which the image sets in ENV.
    run_remediator(
        daemon,
        "remediator-8080",
        {
            "REMEDIATOR_SERVER__PORT": "8080",
            "REMEDIATOR_SERVER__PUBLIC_URL": "https://remediator.example.com",
            "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        },
        command=["serve", "--log-format", "text"],
    )
    health = wait_healthy(daemon, "remediator-8080")
    assert "ok: http://127.0.0.1:8080/readyz ready" in health["Log"][-1]["Output"], health
    logs = daemon.client.api.logs("remediator-8080").decode(errors="replace")
    assert re.search(r"listening on 0\.0\.0\.0:8080", logs), logs[-2000:]
    assert "PUBLIC_URL" not in logs, logs[-2000:]


@pytest.mark.realparts
@pytest.mark.timeout(900)
def test_the_image_holds_the_locked_versions_and_no_pip(built: Built) -> None:
    daemon = built.daemon
    name = "remediator-versions"
    run_remediator(daemon, name, {"REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock"})
    try:
        listed = exec_python(
            daemon,
            name,
            "import json, sys, importlib.metadata as m\n"
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        )
    finally:
        daemon.client.api.remove_container(name, force=True)
    installed = {normalized(n): v for n, v in json.loads(listed).items()}
    pins = locked()
    assert installed.pop("remediator") == metadata.version("remediator")
    assert "pip" not in installed and "setuptools" not in installed, installed
    assert {n: v for n, v in installed.items() if pins.get(n) != v} == {}, "versions other than the lock's"
    print(f"image test timings (s): {built.seconds}", file=sys.stderr)
