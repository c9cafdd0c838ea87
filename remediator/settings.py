"""Every knob of the daemon, read from ``REMEDIATOR_*`` environment variables (nested with ``__``).

Example: ``REMEDIATOR_SERVER__PORT=9095``, ``REMEDIATOR_DOCKER__HOST=unix:///run/docker.sock``,
``REMEDIATOR_ESCALATION__TARGETS='{"oncall": {"url": "https://hooks.example.com/x"}}'``.
Each field's docstring gives its unit; durations end in ``_s`` (seconds).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseModel):
    """The webhook and API listener."""

    host: str = "127.0.0.1"
    """Address to listen on (an IP or host name)."""
    port: int = Field(default=9095, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""
    token: SecretStr | None = None
    """Bearer token every request must carry (string). Unset: one is generated at start and written to
    ``<state_dir>/token``."""
    token_file: Path | None = None
    """File holding the token (path), e.g. a Docker secret; used when ``token`` is unset."""
    basic_username: str | None = None
    """User name accepted with HTTP basic auth (string); the password is ``token``. Unset: any user name."""
    auth_disabled: bool = False
    """Turn authentication off entirely (boolean). Only for a listener no one else can reach."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes; larger bodies get 413."""
    public_url: str | None = None
    """The URL people reach this daemon at, for the approve/deny links in escalations. Unset: the listener."""
    hmac_secret: SecretStr | None = None
    """When set, ``POST /alerts`` must also carry ``X-Remediator-Timestamp`` (unix seconds) and
    ``X-Remediator-Signature: sha256=HEX``, the HMAC-SHA256 of ``TIMESTAMP.BODY`` with this secret (string)."""
    replay_window_s: float = Field(default=300.0, gt=0)
    """Signed requests older than this, or a signature seen before within it, are refused (seconds)."""
    tls_cert: Path | None = None
    """PEM certificate (path): serve HTTPS."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (path)."""
    tls_client_ca: Path | None = None
    """PEM CA bundle (path): require client certificates it signed (mutual TLS)."""
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """Seconds running steps get to finish after SIGTERM before they are cancelled."""
    max_connections: int = Field(default=512, ge=1)
    """Client connections open at once (count), lowered to fit the open-files limit. At the limit the oldest
    connection with no request in progress is closed to make room; if every one is busy, a new one gets 503."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds a client has to send a request's line and headers (and to finish a TLS handshake), counted from
    connecting or from the first byte of a later request on a kept-alive connection; then it is closed."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Seconds a client has to send a request's whole body once its headers arrived; then it gets 408."""


class StoreSettings(BaseModel):
    """Where incidents, the inbox and the audit trail live."""

    path: Path | None = None
    """SQLite database file (path). Unset: ``<state_dir>/remediator.sqlite3``. One replica per file."""
    url: SecretStr | None = None
    """PostgreSQL URL (``postgresql://user:pass@host:5432/remediator``); set it to run several replicas."""
    lease_s: float = Field(default=15.0, gt=0)
    """Seconds a replica's lease on an incident lasts without renewal; a dead replica's incidents move to
    another replica after this."""


DEFAULT_DOCKER_HOST = "default"
"""The name of the Docker host a policy without ``host:`` acts on, and of ``REMEDIATOR_DOCKER__HOST``."""

HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
"""What a Docker host may be named: the name is a metric label, a breaker name and a word in logs."""


def shown_url(url: str) -> str:
    """``url`` without a password (``ssh://ops:secret@db-1`` -> ``ssh://ops@db-1``), for logs, errors and the
    API."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        authority = f"{userinfo.split(':', 1)[0]}@{hostport}"
    return f"{scheme}{sep}{authority}{slash}{path}"


class DockerTLS(BaseModel):
    """Client certificates for a ``tcp://`` Docker host (paths only: a key's content never sits in settings)."""

    ca: Path
    """CA certificate that signed the daemon's certificate (path)."""
    cert: Path
    """Client certificate (path)."""
    key: Path
    """Client private key (path)."""
    verify: bool = True
    """Check the daemon's certificate against ``ca`` (turn off only for a test rig)."""


class DockerHost(BaseModel):
    """One Docker Engine remediator may act on."""

    url: str = Field(pattern=r"^(unix|tcp|ssh|npipe)://")
    """Docker API URL: ``unix:///var/run/docker.sock``, ``tcp://web-1.internal:2376`` (with ``tls``),
    ``ssh://ops@db-1`` (through the ``ssh`` command, with its own keys and known_hosts)."""
    tls: DockerTLS | None = None
    """Client certificates for ``tcp://``; unset: plain TCP (only on a trusted network)."""

    @field_validator("url")
    @classmethod
    def _no_secret_in_url(cls, url: str) -> str:
        # Refused without repeating the value: it would end in logs, errors and the API.
        userinfo = url.partition("://")[2].rpartition("@")[0]
        if ":" in userinfo:
            raise ValueError("a Docker host URL must not hold a password (ssh: use keys; tcp: use tls)")
        if "?" in url or "#" in url:
            raise ValueError("a Docker host URL takes no query or fragment")
        return url

    timeout_s: float = Field(default=60.0, gt=0)
    """Seconds one Docker API call on this host may take before it counts as a temporary failure."""
    threads: int = Field(default=4, ge=1, le=64)
    """Threads for this host's (blocking) SDK calls: each host has its own, so a slow host cannot starve
    the others (count)."""


class DockerSettings(BaseModel):
    """The Docker Engines that container, Compose and Swarm actions talk to."""

    host: str | None = None
    """Docker API URL of the one host named ``default`` (``unix:///var/run/docker.sock``,
    ``tcp://127.0.0.1:2375``). Unset: ``DOCKER_HOST`` or the default socket. Ignored when ``hosts`` is set."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Seconds one Docker API call may take before it counts as a temporary failure (the ``default`` host)."""
    threads: int = Field(default=4, ge=1, le=64)
    """Threads that run the (blocking) docker SDK calls of the ``default`` host (count)."""
    hosts: dict[str, DockerHost] = Field(default_factory=dict)
    """A fleet: Docker hosts by name, ``{"web-1": {"url": "tcp://web-1:2376", "tls": {...}}, "local": {"url":
    "unix:///var/run/docker.sock"}}``. A policy picks one with ``target.host``; a policy without it acts on
    the host named ``default``. Unset: one host, ``default``, from ``host``."""

    @field_validator("hosts")
    @classmethod
    def _names(cls, hosts: dict[str, DockerHost]) -> dict[str, DockerHost]:
        for name in hosts:
            if re.fullmatch(HOST_NAME, name) is None:
                raise ValueError(f"docker host name {name!r} must match {HOST_NAME}")
        return hosts

    def fleet(self) -> dict[str, DockerHost | None]:
        """Every configured host by name. ``None`` for the ``default`` host of the single-host settings,
        which keeps the SDK's own lookup (``DOCKER_HOST``, then the default socket)."""
        if self.hosts:
            return dict(self.hosts)
        if self.host:
            return {
                DEFAULT_DOCKER_HOST: DockerHost(url=self.host, timeout_s=self.timeout_s, threads=self.threads)
            }
        return {DEFAULT_DOCKER_HOST: None}


class PostgresTarget(BaseModel):
    """One PostgreSQL instance that ``postgres`` policies may act on, by name."""

    dsn: SecretStr
    """Connection string (``postgresql://user:password@host:5432/db``); use a role with only pg_signal_backend
    and pg_read_all_stats."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to connect and run one statement."""


class PostgresSettings(BaseModel):
    """PostgreSQL instances that actions may connect to; a policy's target label selects one by name."""

    targets: dict[str, PostgresTarget] = Field(default_factory=dict)
    """Instances by name: ``{"orders-db": {"dsn": "postgresql://..."}}``."""


class PrometheusSettings(BaseModel):
    """The Prometheus that ``prometheus`` verification checks query."""

    url: str | None = "http://127.0.0.1:9090"
    """Base URL. While it cannot be reached, checks read "no data": never healthy, never recovered. Set it
    empty to run without Prometheus; policies that query it are then refused at start."""
    timeout_s: float = Field(default=5.0, gt=0)
    """Seconds one query may take."""


class WebhookTarget(BaseModel):
    """One generic webhook that escalations are posted to."""

    url: str
    """URL that receives the escalation JSON by POST."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (e.g. an Authorization header) sent with each POST."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one delivery attempt may take."""


class SlackTarget(BaseModel):
    """One Slack incoming webhook: the escalation as readable blocks, and a note when the incident resolves."""

    webhook_url: SecretStr
    """The incoming webhook URL (``https://hooks.slack.com/services/...``); a secret, never logged."""
    channel: str | None = None
    """Channel override (``#ops``), for legacy webhooks that allow one. Unset: the webhook's own channel."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one delivery attempt may take."""


class PagerDutyTarget(BaseModel):
    """One PagerDuty service, through the Events API v2: a trigger per incident, resolved with it."""

    routing_key: SecretStr
    """The integration key of the service's Events API v2 integration (32 characters); a secret."""
    url: str = "https://events.pagerduty.com/v2/enqueue"
    """The Events API v2 endpoint (URL); EU accounts use ``https://events.eu.pagerduty.com/v2/enqueue``."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one delivery attempt may take."""


class AlertmanagerTarget(BaseModel):
    """One Alertmanager that receives a ``RemediationFailed`` alert, so its routing pages the right person."""

    url: str
    """Base URL of the Alertmanager (``http://alertmanager:9093``); the v2 API is under ``/api/v2``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (e.g. an Authorization header for a proxy in front of it)."""
    silence_while_running: bool = False
    """Silence the original alert on this Alertmanager while remediation runs, expired when it ends (boolean).
    Only for an Alertmanager that does NOT send alerts to remediator: Alertmanager drops the resolved
    notification of a silenced alert for every receiver, so remediator would never see the recovery."""
    alert_ttl_s: float = Field(default=86_400.0, gt=0)
    """Seconds the ``RemediationFailed`` alert stays firing if its incident never resolves (it is resolved at
    once when the incident resolves)."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one API call may take."""


class GrafanaTarget(BaseModel):
    """One Grafana that gets each action and each escalation as a dashboard-wide annotation."""

    url: str
    """Base URL of Grafana (``https://grafana.example.com``); annotations are posted to ``/api/annotations``."""
    token: SecretStr
    """A service account token with the annotations:write permission (Editor), sent as a Bearer token."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds one API call may take."""


Priority = Literal["P1", "P2", "P3", "P4"]
QUIET_PRIORITIES: frozenset[str] = frozenset({"P3", "P4"})
"""Priorities that never page: PagerDuty notifiers are skipped for them."""


def _default_priorities() -> dict[str, Priority]:
    return {
        "critical": "P1",
        "page": "P1",
        "error": "P2",
        "high": "P2",
        "warning": "P3",
        "info": "P4",
    }


class RoutingSettings(BaseModel):
    """Which notifiers an escalation goes to, by the priority (P1..P4) read from an alert label.

    An escalation goes to the policy step's notifier (``escalate: NAME``) and to every notifier of
    ``routes[priority]``, each once. P3 and P4 never page: PagerDuty notifiers are skipped for them.
    """

    severity_label: str = "severity"
    """The alert label whose value gives the priority (label name)."""
    priorities: dict[str, Priority] = Field(default_factory=_default_priorities)
    """Label value (case-insensitive) to priority; replaces the defaults when set. A value that is already
    ``P1``..``P4`` is taken as it is."""
    unknown: Priority = "P2"
    """The priority of a value that is missing or not in ``priorities``."""
    routes: dict[Priority, list[str]] = Field(default_factory=dict)
    """Notifier names per priority, on top of the step's notifier: ``{"P1": ["pd", "ops-slack"]}``."""

    @field_validator("priorities")
    @classmethod
    def _lower_keys(cls, priorities: dict[str, Priority]) -> dict[str, Priority]:
        return {key.strip().lower(): value for key, value in priorities.items()}


class EscalationSettings(BaseModel):
    """Where escalations go when automation runs out. Notifier names are unique over every kind."""

    targets: dict[str, WebhookTarget] = Field(default_factory=dict)
    """Named generic webhooks: ``{"oncall": {"url": "https://hooks.example.com/x"}}``."""
    slack: dict[str, SlackTarget] = Field(default_factory=dict)
    """Named Slack incoming webhooks: ``{"ops": {"webhook_url": "https://hooks.slack.com/services/..."}}``."""
    pagerduty: dict[str, PagerDutyTarget] = Field(default_factory=dict)
    """Named PagerDuty services: ``{"pd": {"routing_key": "..."}}``."""
    alertmanager: dict[str, AlertmanagerTarget] = Field(default_factory=dict)
    """Named Alertmanagers: ``{"am": {"url": "http://alertmanager:9093"}}``."""
    grafana: dict[str, GrafanaTarget] = Field(default_factory=dict)
    """Named Grafanas annotated with every action and escalation: ``{"grafana": {"url": "...", "token": "..."}}``."""
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    attempts: int = Field(default=5, ge=1)
    """Delivery attempts after which an escalation is logged as overdue (count); it is retried until delivered."""
    backoff_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between two delivery attempts, in seconds (the wait doubles from 0.5 s)."""

    def notifier_names(self) -> set[str]:
        """Every configured notifier name (``log`` is always there besides them)."""
        return {*self.targets, *self.slack, *self.pagerduty, *self.alertmanager, *self.grafana}

    @model_validator(mode="after")
    def _names_and_routes(self) -> EscalationSettings:
        seen: dict[str, str] = {}
        for kind, group in (
            ("targets", self.targets),
            ("slack", self.slack),
            ("pagerduty", self.pagerduty),
            ("alertmanager", self.alertmanager),
            ("grafana", self.grafana),
        ):
            for name in group:
                if name == "log":
                    raise ValueError(f"escalation.{kind}: the name 'log' is reserved for the log notifier")
                if name in seen:
                    raise ValueError(
                        f"escalation: notifier {name!r} is configured in both {seen[name]} and {kind}"
                    )
                seen[name] = kind
        for priority, names in self.routing.routes.items():
            for name in names:
                if name != "log" and name not in seen:
                    raise ValueError(f"escalation.routing.routes.{priority}: no notifier named {name!r}")
                if priority in QUIET_PRIORITIES and name in self.pagerduty:
                    raise ValueError(
                        f"escalation.routing.routes.{priority}: {name!r} is a PagerDuty notifier, and "
                        f"{priority} never pages"
                    )
        return self


class BreakerSettings(BaseModel):
    """Circuit breakers per backend (docker, postgres, http), per target and per escalation target."""

    failures: int = Field(default=5, ge=1)
    """Failures within ``window_s`` that open a breaker (count)."""
    window_s: float = Field(default=60.0, gt=0)
    """Seconds over which failures are counted."""
    open_s: float = Field(default=30.0, gt=0)
    """Seconds a breaker stays open before one probe is let through (half-open)."""


class GuardSettings(BaseModel):
    """Bounds over every policy: the blast radius of the whole daemon."""

    dry_run: bool = False
    """Record every decision and execute no action at all (boolean)."""
    budget_count: int = Field(default=20, ge=0)
    """At most this many actions over all policies per ``budget_window_s``; past it, escalate (count)."""
    budget_window_s: float = Field(default=3600.0, gt=0)
    """The budget's window, in seconds."""
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)


class RetentionSettings(BaseModel):
    """How long the store keeps what it no longer needs (docs/operations.md, "Retention"). A background task
    deletes older rows in small batches; it never deletes an open incident or anything of it, an undelivered
    escalation, an unprocessed notification, or what the guards still count (resolved incidents stay at least
    as long as the longest guard window in force). Every value must be greater than zero."""

    inbox_s: float = Field(default=86_400.0, gt=0)
    """Seconds a processed notification's body stays in the inbox after it was processed (24 h)."""
    incidents_s: float = Field(default=90 * 86_400.0, gt=0)
    """Seconds a resolved incident, with its steps, alerts and audit records, is kept after it resolved
    (90 days); never less than the longest guard window of the loaded policies and the budget."""
    outbox_s: float = Field(default=30 * 86_400.0, gt=0)
    """Seconds a delivered escalation stays in the outbox after its delivery (30 days), once its incident has
    resolved; an undelivered one is never deleted."""
    audit_s: float = Field(default=90 * 86_400.0, gt=0)
    """Seconds an audit record that belongs to no incident (an unmatched alert, a breaker change, a pause) is
    kept (90 days)."""
    episodes_s: float = Field(default=7 * 86_400.0, gt=0)
    """Seconds an ended episode (fingerprint, startsAt) with no incident left is remembered at least since it
    was first seen (7 days), so that a late copy of it is still recognised as stale (docs/safety.md, E1)."""
    batch: int = Field(default=500, gt=0)
    """Rows deleted per statement and transaction (count); SQLite also frees this many pages per step."""
    pause_s: float = Field(default=0.05, gt=0)
    """Seconds between two batches, so that intake's transactions get the store in between."""
    interval_s: float = Field(default=900.0, gt=0)
    """Seconds between two retention runs; the first runs a minute after start (or sooner with a shorter
    interval)."""


class MaintenanceSettings(BaseModel):
    """Maintenance windows (docs/operations.md, "Maintenance windows")."""

    max_s: float = Field(default=86_400.0, gt=0)
    """The longest window a person may declare, in seconds (24 h); a longer one is refused with the reason. A
    forgotten window would silently keep automation off a target."""
    tick_s: float = Field(default=5.0, gt=0)
    """Seconds between two passes that notice a window begin or end (a cancel through the API is applied at
    once): a window that ended holds its incidents at most this much longer."""
    notify: str | None = None
    """The name of a webhook or Slack notifier (``escalation.targets``, ``escalation.slack``) or ``log``, told
    once per incident and window that an incident is held in maintenance; unset: nobody is told (the audit
    and the metric say it). Never a pager or an Alertmanager: a notice must not page."""


class LogSettings(BaseModel):
    """How the daemon writes its log (to stderr)."""

    format: Literal["text", "json"] = "text"
    """``text`` for people, ``json`` (one object per line) for log pipelines."""
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written."""


class Settings(BaseSettings):
    """The whole configuration; read once at start by the composition root."""

    model_config = SettingsConfigDict(
        env_prefix="REMEDIATOR_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
    )

    replica_id: str = Field(default_factory=socket.gethostname, min_length=1)
    """This replica's name in leases (string); unique per replica, stable across its restarts."""
    policies_dir: Path = Path("policies")
    """Directory whose ``*.yaml`` files are the remediation policies (path)."""
    state_dir: Path = Path(".remediator")
    """Directory for the default SQLite store and the generated token (path); created at start."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def store_path(self) -> Path:
        """The SQLite file actually used."""
        return self.store.path or self.state_dir / "remediator.sqlite3"
