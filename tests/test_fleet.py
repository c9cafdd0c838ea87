"""A fleet on real parts: three private dockerds (two on unix sockets, one on TCP with TLS client certificates
made by openssl here), a real Alertmanager whose alerts' ``instance`` label names the host, and remediator acting
on the right host only; a dead host opens only its own breaker; a label crafted to name anything else makes no
connection anywhere (a listener run for the purpose counts the attempts)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from helpers import TOKEN, eventually
from realparts import Alertmanager, CaptureServer, DockerDaemon, free_port, make_tls

from remediator.app import App
from remediator.domain.incidents import Incident
from remediator.engine.runner import RetryPolicy

POLICY = """\
name: app-down
match: [alertname = AppDown]
target:
  kind: container
  from_label: container
  allow: ["sms-db", "app-[0-9]+"]
  host:
    from_label: instance
    pattern: '^(?P<host>[^:]+):[0-9]+$'
    allow: [local, web-1, db-1]
steps:
  - act: container.restart
    with: {timeout_s: 2}
    verify: {resolved_within_s: 600}
  - escalate: oncall
limits:
  cooldown_s: 0
  max_actions: {count: 50, window_s: 3600}
  flapping: {count: 100, window_s: 3600}
"""

HOSTS = ("local", "web-1", "db-1")


class Fleet:
    def __init__(self, daemons: dict[str, DockerDaemon], tls_dir: Path) -> None:
        self.daemons = daemons
        self.tls_dir = tls_dir

    def settings(self, **extra: dict[str, Any]) -> str:
        hosts: dict[str, Any] = {
            "local": {"url": self.daemons["local"].host},
            "web-1": {"url": self.daemons["web-1"].host, "timeout_s": 5},
            "db-1": {
                "url": self.daemons["db-1"].tcp_url,
                "tls": {
                    "ca": str(self.tls_dir / "ca.pem"),
                    "cert": str(self.tls_dir / "client-cert.pem"),
                    "key": str(self.tls_dir / "client-key.pem"),
                },
            },
        }
        return json.dumps({**hosts, **extra})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tls_dir = tmp_path_factory.mktemp("tls")
    tls = make_tls(tls_dir)
    started: dict[str, DockerDaemon] = {}
    try:
        started["local"] = DockerDaemon()
        started["web-1"] = DockerDaemon()
        started["db-1"] = DockerDaemon(tls=tls, tcp_port=free_port())
        yield Fleet(started, tls_dir)
    finally:
        for daemon in started.values():
            daemon.close()


class Listener:
    """A TCP port that counts every connection made to it: where a crafted label would lead."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def labels(container: str, instance: str) -> dict[str, str]:
    return {"alertname": "AppDown", "container": container, "instance": instance}


async def changed(daemon: DockerDaemon, name: str, before: str) -> bool:
    return await asyncio.to_thread(daemon.started_at, name) != before


def restarts(daemon: DockerDaemon, name: str, since: float) -> int:
    """``docker events``: how many times the container was restarted since ``since`` (epoch seconds)."""
    events = daemon.client.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "restart"},
    )
    return sum(1 for e in events if e.get("Actor", {}).get("Attributes", {}).get("name") == name)


async def api(app: App, path: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.port}{path}", headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


async def incidents_of(app: App, target: str) -> list[Incident]:
    return [i for i in await app.store.list_incidents() if i.target == target]


async def start(
    start_app: Callable[..., Any], fleet: Fleet, capture_server: CaptureServer, **hosts: Any
) -> App:
    app: App = await start_app(
        policies={"app.yaml": POLICY},
        retry=RetryPolicy(tries=2, initial_s=0.05, max_s=0.1),
        REMEDIATOR_DOCKER__HOSTS=fleet.settings(**hosts),
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
        REMEDIATOR_GUARDS__BREAKER__FAILURES="2",
        REMEDIATOR_GUARDS__BREAKER__OPEN_S="600",
    )
    return app


async def test_each_alert_restarts_its_own_host_only(
    start_app: Callable[..., Any],
    fleet: Fleet,
    capture_server: CaptureServer,
    alertmanager_factory: Callable[..., Alertmanager],
) -> None:
    for daemon in fleet.daemons.values():
        await asyncio.to_thread(daemon.run_container, "sms-db")
    before = {h: await asyncio.to_thread(d.started_at, "sms-db") for h, d in fleet.daemons.items()}
    since = time.time() - 1
    app = await start(start_app, fleet, capture_server)

    hosts = {h["name"]: h for h in (await api(app, "/api/hosts"))["hosts"]}
    assert set(hosts) == set(HOSTS)
    for name in HOSTS:
        assert hosts[name]["reachable"] is True and hosts[name]["engine_version"], hosts[name]
        assert hosts[name]["breaker"] == "closed" and hosts[name]["latency_ms"] is not None
    assert hosts["db-1"]["tls"] is True and hosts["db-1"]["url"].startswith("tcp://127.0.0.1:")
    assert "key" not in json.dumps(hosts["db-1"]).replace("engine_version", "")  # no key path, no key

    am = alertmanager_factory(
        f"http://127.0.0.1:{app.port}/alerts", TOKEN, group_by=("alertname", "container", "instance")
    )
    # Two of the three first: the third host's container must stay untouched until its own alert.
    for name in ("local", "db-1"):
        await asyncio.to_thread(am.fire, labels("sms-db", f"{name}:9100"))
    for name in ("local", "db-1"):
        await eventually(lambda n=name: changed(fleet.daemons[n], "sms-db", before[n]), timeout=30)
    assert await asyncio.to_thread(fleet.daemons["web-1"].started_at, "sms-db") == before["web-1"]
    await asyncio.to_thread(am.fire, labels("sms-db", "web-1:9100"))
    await eventually(lambda: changed(fleet.daemons["web-1"], "sms-db", before["web-1"]), timeout=30)

    # The same container name on three hosts: three incidents, one restart on each host, none twice.
    found = await incidents_of(app, "sms-db")
    assert sorted(i.host for i in found) == sorted(HOSTS) and len({i.id for i in found}) == 3
    await asyncio.sleep(1.5)  # re-sends of the groups arrive: none acts again
    for name, daemon in fleet.daemons.items():
        assert await asyncio.to_thread(restarts, daemon, "sms-db", since) == 1, name
    for incident in found:
        steps = await app.store.steps(incident.id)
        assert [(s.name, s.status) for s in steps] == [("container.restart", "ok")], incident.host

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/metrics") as r:
        body = await r.text()
    for name in HOSTS:
        assert (
            f'remediator_actions_total{{action="container.restart",host="{name}",kind="act",outcome="ok",'
            'policy="app-down"} 1.0'
        ) in body


async def test_crafted_host_labels_connect_nowhere(
    start_app: Callable[..., Any], fleet: Fleet, capture_server: CaptureServer, listener: Listener
) -> None:
    from helpers import alert, notification, post_alerts

    app = await start(start_app, fleet, capture_server)
    crafted = [
        "unknown-9:9100",  # a name no setting has
        f"tcp://127.0.0.1:{listener.port}",  # a URL
        f"127.0.0.1:{listener.port}",  # an address: the pattern takes 127.0.0.1, outside the allow list
        "../../:9100",
        "web-1;x:9100",
        "web-1 :9100",
        "",
    ]
    bodies = [
        notification(alert("AppDown", fingerprint=f"c{n}", container="app-1", instance=value))
        for n, value in enumerate(crafted)
    ]
    assert await post_alerts(app.port, bodies) == [200] * len(bodies)
    await eventually(lambda: _count_escalated(app, "app-1", len(crafted)), timeout=20)
    for incident in await incidents_of(app, "app-1"):
        assert incident.status == "escalated", incident
        assert "host" in incident.reason and incident.reason, incident
        assert await app.store.steps(incident.id) == []  # nothing ran
    await asyncio.sleep(0.5)
    assert listener.accepted == 0
    # A configured host outside the policy's host allow list is refused too, though it is reachable.
    app2 = await start(start_app, fleet, capture_server, spare={"url": fleet.daemons["web-1"].host})
    await post_alerts(
        app2.port,
        [notification(alert("AppDown", fingerprint="s1", container="app-2", instance="spare:9100"))],
    )
    [refused] = await eventually(lambda: _escalated(app2, "app-2"), timeout=20)
    assert "outside the host allow list" in refused.reason and refused.host == "spare"
    assert listener.accepted == 0


async def _escalated(app: App, target: str) -> list[Incident] | None:
    found = [i for i in await incidents_of(app, target) if i.status == "escalated"]
    return found or None


async def _count_escalated(app: App, target: str, count: int) -> bool:
    return len([i for i in await incidents_of(app, target) if i.status == "escalated"]) >= count


async def test_a_dead_host_opens_only_its_own_breaker(
    start_app: Callable[..., Any], fleet: Fleet, capture_server: CaptureServer
) -> None:
    from helpers import alert, notification, post_alerts

    containers = [f"app-{n}" for n in range(1, 4)]
    for daemon in fleet.daemons.values():
        for name in containers:
            await asyncio.to_thread(daemon.run_container, name)
    before = {
        (h, c): await asyncio.to_thread(d.started_at, c) for h, d in fleet.daemons.items() for c in containers
    }
    app = await start(start_app, fleet, capture_server)
    web = fleet.daemons["web-1"]
    await asyncio.to_thread(web.stop_daemon)
    try:
        # One storm over the three hosts; web-1 is down.
        bodies = [
            notification(alert("AppDown", fingerprint=f"{c}@{h}", container=c, instance=f"{h}:9100"))
            for c in containers
            for h in HOSTS
        ]
        assert await post_alerts(app.port, bodies) == [200] * len(bodies)
        for host in ("local", "db-1"):
            for name in containers:
                daemon = fleet.daemons[host]
                await eventually(
                    lambda d=daemon, n=name, h=host: asyncio.to_thread(
                        lambda: d.started_at(n) != before[(h, n)]
                    ),
                    timeout=40,
                )
        await eventually(lambda: app.gate.circuits.get("backend:docker:web-1").status == "open", timeout=30)
        assert app.gate.circuits.get("backend:docker:local").status == "closed"
        assert app.gate.circuits.get("backend:docker:db-1").status == "closed"
        # Every incident of web-1 is in a human's hands, with the reason.
        web_incidents = [i for c in containers for i in await incidents_of(app, c) if i.host == "web-1"]
        assert len(web_incidents) == 3
        await eventually(lambda: _all_escalated(app, [i.id for i in web_incidents]), timeout=40)
        hosts = {h["name"]: h for h in (await api(app, "/api/hosts"))["hosts"]}
        assert hosts["web-1"]["reachable"] is False and hosts["web-1"]["last_error"]
        assert hosts["web-1"]["breaker"] == "open"
        assert hosts["local"]["reachable"] is True and hosts["db-1"]["reachable"] is True
    finally:
        await asyncio.to_thread(web.start_daemon)
    # The containers of web-1 were never touched (the daemon was down; it kept them).
    for name in containers:
        assert await asyncio.to_thread(restarts, web, name, time.time() - 3600) == 0


async def _all_escalated(app: App, ids: list[int]) -> bool:
    found = [await app.store.get_incident(i) for i in ids]
    return all(i is not None and i.status == "escalated" for i in found)


async def test_a_drill_breaks_the_target_on_the_host_it_names(
    start_app: Callable[..., Any], fleet: Fleet, capture_server: CaptureServer
) -> None:
    """``remediator drill POLICY --target app-7 --host db-1``: the container stops on db-1 (through TLS) and on
    no other host; the monitoring (this test) raises the alert, remediator restarts it there, the drill passes."""
    from helpers import alert, notification, post_alerts

    from remediator.api_client import ApiClient
    from remediator.drill import run_drill
    from remediator.errors import RemediatorError
    from remediator.settings import Settings

    for daemon in fleet.daemons.values():
        await asyncio.to_thread(daemon.run_container, "app-7")
    app = await start(start_app, fleet, capture_server)
    settings, policy = Settings(), app.policies[0]
    api = ApiClient(f"http://127.0.0.1:{app.port}", TOKEN)
    with pytest.raises(RemediatorError, match="give --host"):
        await run_drill(settings, policy, "app-7", api)
    with pytest.raises(RemediatorError, match="outside the host allow list"):
        await run_drill(settings, policy, "app-7", api, host="spare", host_label="spare:9100")
    with pytest.raises(RemediatorError, match="names host"):
        await run_drill(settings, policy, "app-7", api, host="db-1", host_label="web-1:9100")
    db = fleet.daemons["db-1"]
    firing = notification(alert("AppDown", fingerprint="d7", container="app-7", instance="db-1:9100"))

    async def monitoring() -> None:
        state = lambda: db.client.api.inspect_container("app-7")["State"]  # noqa: E731
        await eventually(lambda: asyncio.to_thread(lambda: not state()["Running"]), timeout=30)
        stopped_at = await asyncio.to_thread(lambda: state()["StartedAt"])
        await post_alerts(app.port, [firing])
        await eventually(
            lambda: asyncio.to_thread(lambda: state()["Running"] and state()["StartedAt"] != stopped_at),
            timeout=30,
        )
        resolved = notification(
            alert("AppDown", status="resolved", fingerprint="d7", container="app-7", instance="db-1:9100")
        )
        await post_alerts(app.port, [resolved])

    watcher = asyncio.create_task(monitoring())
    report = await run_drill(
        settings, policy, "app-7", api, host="db-1", host_label="db-1:2376", timeout_s=60
    )
    await watcher
    assert report.host == "db-1" and "on host db-1" in report.render()
    assert report.outcome == "resolved", report.render()
    for name in ("local", "web-1"):  # the same name elsewhere was never touched
        state = await asyncio.to_thread(
            lambda n=name: fleet.daemons[n].client.api.inspect_container("app-7")["State"]
        )
        assert state["Running"], name


async def test_every_docker_action_goes_to_the_host_it_is_given(fleet: Fleet) -> None:
    """Diagnoses, exec and Compose through one DockerFleet: each answers from its own host only."""
    from remediator.actions.catalogue import SPECS, build_actions
    from remediator.actions.fleet import DockerFleet
    from remediator.errors import PermanentActionError
    from remediator.settings import DockerSettings

    labels = {"com.docker.compose.project": "fleetp", "com.docker.compose.service": "svc"}
    for name, daemon in fleet.daemons.items():
        await asyncio.to_thread(daemon.run_container, "fleetp_svc_1", labels=labels)
        await asyncio.to_thread(
            daemon.run_container,
            "who",
            command=["/bin/sh", "-c", f"echo i-am-{name}; exec /bin/busybox sleep 100000"],
        )
    await asyncio.to_thread(fleet.daemons["web-1"].run_container, "fleetp_svc_2", labels=labels)
    hosts = DockerSettings.model_validate({"hosts": json.loads(fleet.settings())})
    docker_fleet = DockerFleet.from_settings(hosts)
    try:
        actions = build_actions(docker_fleet)

        def params(action: str, **values: Any) -> Any:
            return SPECS[action].params.model_validate(values)

        await asyncio.sleep(0.5)  # the echo reaches the log
        for name in HOSTS:
            logs = await actions["container.logs"].run("who", params("container.logs", tail=5), host=name)
            assert f"i-am-{name}" in logs and all(f"i-am-{o}" not in logs for o in HOSTS if o != name)
            ran = await actions["container.exec"].run(
                "who", params("container.exec", argv=["/bin/busybox", "true"]), host=name
            )
            assert "exit 0" in ran
            status = await actions["compose.status"].run(
                "svc", params("compose.status", project="fleetp"), host=name
            )
            replicas = "2" if name == "web-1" else "1"
            assert f"{replicas}/{replicas}" in status or f"{replicas} " in status, (name, status)
        with pytest.raises(PermanentActionError, match="not configured"):
            await actions["container.logs"].run("who", params("container.logs"), host="elsewhere")
    finally:
        docker_fleet.close()
