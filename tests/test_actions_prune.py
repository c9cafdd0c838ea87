"""docker.prune on real parts: a private dockerd whose data-root is a small tmpfs, filled with stopped
containers and unused images, next to a running container, a container labelled remediator.keep, and a
stopped container that owns a named volume with data.

- The action itself: what each stage removes, what it never removes, the per-run cap, the minimum ages,
  the volume opt-in, and a host name that is not this Docker's.
- The whole chain (the issue's proof): a real Prometheus scrapes the tmpfs' free space under node_exporter's
  metric names, the shipped DiskSpaceLow rule fires, Alertmanager posts, the daemon runs the shipped
  disk-space-low policy, prune reclaims the space, the volume and its data survive, the verification query
  sees the free space back, and the incident resolves.

The free-space metrics come from a small exporter served by this test (statvfs of the tmpfs, with
node_exporter's names and a `node_uname_info` carrying the machine's hostname, which is what node_exporter
reports): node_exporter itself would report the tmpfs under its real mount path, not /var/lib/docker.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml
from aiohttp import web
from drill_rig import serve
from helpers import REPO, TOKEN, settings_env
from realparts import Alertmanager, DockerDaemon, Prometheus, free_port

from remediator.actions.docker import DockerBackend
from remediator.actions.prune import DockerPrune, PruneParams, VolumeOptIn
from remediator.errors import PermanentActionError

MiB = 1 << 20
HOST = socket.gethostname()
KEEP = "remediator.keep"


class SmallDiskDockerd(DockerDaemon):
    """A private dockerd whose data-root is a tmpfs of ``size_mib`` (../shared/TESTING.md, "A full disk")."""

    size_mib = 96

    def start_daemon(self) -> None:
        data = self._dir / "data"
        if not os.path.ismount(data):
            data.mkdir(exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs", str(data)], check=True
            )
        super().start_daemon()

    @property
    def data_root(self) -> Path:
        return self._dir / "data"

    def free(self) -> tuple[int, int]:
        """(available bytes, size in bytes) of the data-root's filesystem, as node_exporter reads them."""
        st = os.statvfs(self.data_root)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


@pytest.fixture(scope="module")
def small_dockerd() -> Iterator[SmallDiskDockerd]:
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (scripts/dev test runs as root)", pytrace=False)
    daemon = SmallDiskDockerd()
    try:
        yield daemon
    finally:
        daemon.close()  # remove_tree unmounts what is mounted under its directory, the tmpfs included


def _layer(name: str, size: int) -> bytes:
    """A tar holding busybox's /bin/sh link and ``size`` bytes under a unique name: a layer of its own."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"junk-{name}")
        info.size = size
        tar.addfile(info, io.BytesIO(name.encode().ljust(size, b"\0")))
    return buf.getvalue()


def _stopped(daemon: DockerDaemon, name: str, mib: int, **kwargs: Any) -> None:
    """A container that wrote ``mib`` MiB into its writable layer and exited."""
    script = f"/bin/busybox dd if=/dev/zero of=/junk bs=1048576 count={mib} 2>/dev/null"
    daemon.run_container(name, command=["/bin/sh", "-c", script], init=False, **kwargs).wait(timeout=60)


def populate(daemon: SmallDiskDockerd, *, fillers: int = 3, mib: int = 6) -> None:
    """Fresh objects on the daemon: ``fillers`` stopped containers and unused images of ``mib`` MiB each, a
    dangling image, a running container, a kept container, and old-db owning the volume db-data."""
    client = daemon.client
    for i in range(fillers):
        _stopped(daemon, f"filler-{i}", mib)
        client.api.import_image_from_data(_layer(f"img-{i}-{time.time_ns()}", mib * MiB), "filler", str(i))
    # Imported twice under one tag: the first becomes dangling.
    for n in range(2):
        client.api.import_image_from_data(_layer(f"dangling-{n}-{time.time_ns()}", 2 * MiB), "filler", "dup")
    _stopped(daemon, "kept", 2, labels={KEEP: "true"})
    if not client.volumes.list(filters={"name": "db-data"}):
        client.volumes.create("db-data")
    script = "echo precious > /data/marker && /bin/busybox dd if=/dev/zero of=/data/blob bs=1048576 count=4"
    daemon.run_container(
        "old-db", command=["/bin/sh", "-c", script], init=False, volumes={"db-data": {"bind": "/data"}}
    ).wait(timeout=60)
    if not client.containers.list(filters={"name": "^/live$"}):
        daemon.run_container("live")
    time.sleep(1.1)  # Docker's `until` counts whole seconds: everything is now over a second old


def names(daemon: DockerDaemon) -> set[str]:
    return {c.name for c in daemon.client.containers.list(all=True)}


def tags(daemon: DockerDaemon) -> set[str]:
    return {t for image in daemon.client.images.list() for t in image.tags}


def dangling(daemon: DockerDaemon) -> int:
    return len(daemon.client.images.list(filters={"dangling": True}))


def volume_data(daemon: DockerDaemon) -> bytes:
    out: bytes = daemon.client.containers.run(
        daemon.image,
        ["/bin/busybox", "cat", "/data/marker"],
        volumes={"db-data": {"bind": "/data", "mode": "ro"}},
        network_mode="none",
        remove=True,
    )
    return out


async def prune(daemon: DockerDaemon, target: str = HOST, **params: Any) -> str:
    backend = DockerBackend(daemon.host, 60, 2)
    try:
        return await DockerPrune(backend).run(target, PruneParams(**params))
    finally:
        backend.close()


def test_the_daemon_names_itself_after_the_host(small_dockerd: SmallDiskDockerd) -> None:
    # What the policy relies on: node_exporter's nodename (the hostname) is the name Docker reports.
    assert small_dockerd.client.info()["Name"] == HOST


async def test_another_host_and_young_objects_are_left_alone(small_dockerd: SmallDiskDockerd) -> None:
    await asyncio.to_thread(populate, small_dockerd, fillers=1, mib=1)
    before = (names(small_dockerd), tags(small_dockerd), dangling(small_dockerd))

    with pytest.raises(PermanentActionError, match="this remediator's Docker is"):
        await prune(small_dockerd, "some-other-host", containers_min_age_s=0, images_min_age_s=0)
    # Everything is under an hour old, and the build cache is empty: nothing to do says so, and fails.
    with pytest.raises(PermanentActionError, match="nothing to prune") as refused:
        await prune(small_dockerd, containers_min_age_s=3600, images_min_age_s=3600)
    assert "stopped containers: 0 removed" in str(refused.value)
    assert (names(small_dockerd), tags(small_dockerd), dangling(small_dockerd)) == before


async def test_the_cap_stops_after_the_stage_that_reached_it(small_dockerd: SmallDiskDockerd) -> None:
    await asyncio.to_thread(populate, small_dockerd, fillers=2, mib=2)
    # The containers' stage alone reclaims over 1 byte: the image stages never run.
    text = await prune(small_dockerd, containers_min_age_s=0, images_min_age_s=0, stop_after_bytes=1)
    assert "not run (stop_after_bytes 1 bytes reached): dangling images, unused images" in text, text
    assert not {"filler-0", "filler-1", "old-db"} & names(small_dockerd)
    assert {"filler:0", "filler:1", "filler:dup"} <= tags(small_dockerd) and dangling(small_dockerd) >= 1


async def test_prune_reclaims_space_and_never_what_is_used_kept_or_a_volume(
    small_dockerd: SmallDiskDockerd,
) -> None:
    await asyncio.to_thread(populate, small_dockerd, fillers=3, mib=6)
    client = small_dockerd.client
    client.volumes.create("scratch", labels={"cache": "disposable"})  # unused, labelled: opt-in only
    live_started = small_dockerd.started_at("live")
    free_before, _ = small_dockerd.free()

    text = await prune(small_dockerd, containers_min_age_s=0, images_min_age_s=0)
    print(text)
    free_after, _ = small_dockerd.free()

    # Reclaimed: the stopped containers (3 x 6 MiB written), the unused and dangling images.
    assert free_after - free_before > 3 * 6 * MiB * 2 * 0.9
    assert "stopped containers: " in text and "unused images: " in text
    reported = int(text.split(" bytes)", 1)[0].rsplit("(", 1)[1])
    assert reported > 3 * 6 * MiB * 2 * 0.9
    assert not {"filler-0", "filler-1", "filler-2", "old-db"} & names(small_dockerd)
    assert not {"filler:0", "filler:1", "filler:2", "filler:dup"} & tags(small_dockerd)
    assert dangling(small_dockerd) == 0
    # Never: a running container or its image, a kept container, a volume (with its data).
    assert {"live", "kept"} <= names(small_dockerd)
    assert small_dockerd.started_at("live") == live_started
    assert client.containers.get("live").status == "running"
    assert DockerDaemon.image in tags(small_dockerd)
    assert {v.name for v in client.volumes.list()} >= {"db-data", "scratch"}
    assert volume_data(small_dockerd) == b"precious\n"
    assert "volumes: never touched" in text

    # Volumes only by an explicit opt-in, and only those with its label: db-data has none, and stays.
    text = await prune(
        small_dockerd,
        containers_min_age_s=0,
        images_min_age_s=0,
        volumes=VolumeOptIn(label="cache=disposable"),
    )
    assert "volumes: 1 removed" in text, text
    assert "scratch" not in {v.name for v in client.volumes.list()}
    assert volume_data(small_dockerd) == b"precious\n"
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("scratch")


def test_volumes_need_a_label_to_be_opted_in() -> None:
    with pytest.raises(ValueError):
        PruneParams.model_validate({"volumes": {}})
    with pytest.raises(ValueError):
        PruneParams.model_validate({"volumes": {"label": "a; rm -rf /"}})
    with pytest.raises(ValueError):
        PruneParams.model_validate({"volumes": True})
    assert PruneParams().volumes is None


# ---------------------------------------------------------------------------------------------------------
# The whole chain


async def _exporter(daemon: SmallDiskDockerd) -> tuple[web.AppRunner, int]:
    async def metrics(_: web.Request) -> web.Response:
        avail, size = daemon.free()
        fs = 'device="tmpfs",fstype="tmpfs",mountpoint="/var/lib/docker"'
        body = (
            f"node_filesystem_avail_bytes{{{fs}}} {avail}\n"
            f"node_filesystem_size_bytes{{{fs}}} {size}\n"
            f'node_uname_info{{nodename="{HOST}",sysname="Linux"}} 1\n'
        )
        return web.Response(text=body)

    return await serve(metrics)


def _shipped_policy(tmp_path: Path) -> Path:
    """policies/disk-space-low.yaml with the minimum ages at 0 (everything here is seconds old) and a 1 s
    verification interval; the rest as shipped."""
    policy = yaml.safe_load((REPO / "policies" / "disk-space-low.yaml").read_text())
    act = policy["steps"][0]
    assert act["act"] == "docker.prune"
    act["with"].update(containers_min_age_s=0, images_min_age_s=0)
    act["verify"]["interval_s"] = 1
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "disk-space-low.yaml").write_text(yaml.safe_dump(policy))
    return directory


def _shipped_rule() -> str:
    """deploy/prometheus/rules/runbooks.yml's DiskSpaceLow, with `for: 0s` instead of 5m."""
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules" / "runbooks.yml").read_text())
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "DiskSpaceLow"]
    rule["for"] = "0s"
    return yaml.safe_dump({"groups": [{"name": "disk", "rules": [rule]}]})


async def test_disk_space_low_prunes_the_host_until_free_space_recovers_and_the_incident_resolves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    small_dockerd: SmallDiskDockerd,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    from remediator.api_client import ApiClient
    from remediator.app import App
    from remediator.settings import Settings

    await asyncio.to_thread(populate, small_dockerd, fillers=2, mib=4)
    # Fill with stopped containers until under 12% is free: the rule's threshold is 15%.
    n = 0
    while (lambda f: f[0] / f[1])(small_dockerd.free()) >= 0.12:
        await asyncio.to_thread(_stopped, small_dockerd, f"filler-x{n}", 4)
        n += 1
        assert n < 40, f"the disk does not fill: {small_dockerd.free()}"

    exporter, exporter_port = await _exporter(small_dockerd)
    port = free_port()
    am = alertmanager_factory(f"http://127.0.0.1:{port}/alerts", TOKEN, group_by=["alertname", "nodename"])
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]},
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
        ],
    }
    prometheus = prometheus_factory(yaml.safe_dump(config), rule_files=[("runbooks.yml", _shipped_rule())])
    env = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(_shipped_policy(tmp_path)),
        REMEDIATOR_DOCKER__HOST=small_dockerd.host,
        REMEDIATOR_PROMETHEUS__URL=prometheus.url,
        REMEDIATOR_SERVER__PORT=str(port),
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = App(Settings())
    await app.start()
    api = ApiClient(f"http://127.0.0.1:{port}", TOKEN)
    try:
        deadline = time.monotonic() + 90
        incident: dict[str, Any] = {}
        while time.monotonic() < deadline:
            listed = (await asyncio.to_thread(api.get, "/api/incidents?limit=10"))["incidents"]
            if listed:
                incident = await asyncio.to_thread(api.get, f"/api/incidents/{listed[0]['id']}")
                if incident["status"] in ("resolved", "escalated"):
                    break
            await asyncio.sleep(0.5)
        print(incident)
        assert incident, "no incident opened: the rule did not fire, or the alert did not arrive"
        assert (incident["policy"], incident["target"]) == ("disk-space-low", HOST)
        assert incident["status"] == "resolved", incident
        [act] = [s for s in incident["steps"] if s["kind"] == "act"]
        assert act["name"] == "docker.prune" and act["status"] == "ok", act
        assert "reclaimed" in act["detail"] and "volumes: never touched" in act["detail"]
        kinds = [e["kind"] for e in incident["timeline"]]
        assert "verified" in kinds, kinds
        avail, size = small_dockerd.free()
        assert avail / size > 0.15
        # The policy's own verification query, as the daemon sends it, now holds in Prometheus.
        query = yaml.safe_load((REPO / "policies" / "disk-space-low.yaml").read_text())["steps"][0]
        url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query["verify"]["prometheus"]["query"]}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            result = json.load(answer)["data"]["result"]
        assert [sample["value"][1] for sample in result] == ["1"], result
        assert volume_data(small_dockerd) == b"precious\n"
        assert small_dockerd.client.containers.get("live").status == "running"
    finally:
        await app.stop()
        await exporter.cleanup()
