"""Every metric remediator exports, on an injected registry so tests and replicas never share global state.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms); the Grafana dashboard in
``deploy/`` queries exactly these.

Two kinds of series, which aggregate differently over replicas (docs/operations.md, "Metrics"; design D34):

- this process's own (counters, histograms, ``remediator_intake_backlog``, ``remediator_dry_run``): sum them;
- facts about the shared store (``remediator_incidents_open``, ``remediator_approvals_pending``,
  ``remediator_outbox_*``, ``remediator_paused``): every replica reads the same store when it is scraped
  (engine/gauges.py) and reports the same value, so take ``max``, never ``sum``.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.registry import Collector

from remediator import __version__

_RUNTIME: tuple[Collector, ...] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
"""process_* (CPU, memory, open files, start time), python_info and python_gc_*: collectors that read the
process itself and hold no state, so one instance serves every registry."""


class Metrics:
    """The daemon's metrics; one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        for collector in _RUNTIME:
            self.registry.register(collector)
        self.build_info = Gauge(
            "remediator_build_info",
            "1, labelled with the running remediator's version (python_info has Python's).",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(__version__).set(1)
        self._intake(self.registry)
        self._remediation(self.registry)
        self._state(self.registry)
        self._config(self.registry)
        self._retention(self.registry)

    def _intake(self, r: CollectorRegistry) -> None:
        """What arrives and what was decided about it."""
        self.alerts_received = Counter(
            "remediator_alerts_received_total",
            "Alerts received from Alertmanager, by status and alert name (a name no policy pins with"
            " alertname = X counts as 'other', so outside input cannot grow the series).",
            ["alertname", "status"],
            registry=r,
        )
        self.webhook_rejected = Counter(
            "remediator_webhook_rejected_total",
            "Webhook requests refused before intake, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.decisions = Counter(
            "remediator_decisions_total",
            "Engine decisions on alerts (opened, unmatched, attached, duplicate, stale, resolved, resolved_other,"
            " target_refused, maintenance, unrecordable, store_retry).",
            ["decision"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "remediator_webhook_duration_seconds",
            "How long POST /alerts took to answer, from its handler's start (the notification stored and"
            " synced, or refused) to the answer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.intake_backlog = Gauge(
            "remediator_intake_backlog",
            "Notifications this replica stored and has not decided on yet (its intake queue).",
            registry=r,
        )

    def _remediation(self, r: CollectorRegistry) -> None:
        """What was done, how it went, and what was refused or escalated."""
        self.actions = Counter(
            "remediator_actions_total",
            "Action attempts, by policy, step kind (act: a remediation; diagnose: gathering evidence), action"
            " and outcome (ok, temporary, permanent), and the Docker host it ran on (default: the one host, or a"
            " backend that has none).",
            ["policy", "kind", "action", "outcome", "host"],
            registry=r,
        )
        self.action_duration = Histogram(
            "remediator_action_duration_seconds",
            "How long one action attempt took.",
            ["action"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.verifications = Counter(
            "remediator_verifications_total",
            "Verification results after actions, by policy and result (recovered, not_recovered).",
            ["policy", "result"],
            registry=r,
        )
        self.recoveries = Counter(
            "remediator_recoveries_total",
            "Incidents that recovered after an action, by policy and the act step after which verification saw"
            " it (remediator report reads the same from the store, across restarts and replicas).",
            ["policy", "step"],
            registry=r,
        )
        self.pages_avoided = Counter(
            "remediator_pages_avoided_total",
            "Incidents at a paging priority (P1, P2) that recovered after an action, so that nobody was paged,"
            " by policy.",
            ["policy"],
            registry=r,
        )
        self.escalations = Counter(
            "remediator_escalations_total",
            "Escalations, by policy, notifier and result (delivered; overdue: still retrying past the attempts;"
            " skipped: a pager for a P3/P4 incident).",
            ["policy", "notifier", "result"],
            registry=r,
        )

    def _config(self, r: CollectorRegistry) -> None:
        """Whether the policies in force are the ones on disk (named as Prometheus names its own)."""
        self.reload_successful = Gauge(
            "remediator_config_last_reload_successful",
            "1 when the last policy reload (or the start) succeeded; 0 when it was refused and the previous"
            " policies stay in force.",
            registry=r,
        )
        self.reload_success_time = Gauge(
            "remediator_config_last_reload_success_timestamp_seconds",
            "When the policies in force were loaded.",
            registry=r,
        )
        self.policies_version = Gauge(
            "remediator_policies_info",
            "1, labelled with the version (a hash) of the policy set in force: replicas that disagree show"
            " different versions.",
            ["version"],
            registry=r,
        )

    def _state(self, r: CollectorRegistry) -> None:
        """How things stand now."""
        # Facts about the shared store, read from it when /metrics is scraped (engine/gauges.py): every
        # replica reports the same value; aggregate them with max.
        self.incidents_open = Gauge(
            "remediator_incidents_open",
            "Incidents not yet resolved (active, waiting, escalated or in maintenance), in the shared store: the"
            " same on every replica (aggregate with max, not sum).",
            registry=r,
        )
        self.approvals_pending = Gauge(
            "remediator_approvals_pending",
            "Steps waiting for a person's approval, in the shared store (aggregate with max).",
            registry=r,
        )
        self.outbox_undelivered = Gauge(
            "remediator_outbox_undelivered",
            "Escalations, resolve notices and silence expiries stored and not delivered yet, in the shared"
            " store (aggregate with max).",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "remediator_outbox_oldest_undelivered_age_seconds",
            "How long the oldest undelivered escalation or notice has waited; 0 when none waits (aggregate"
            " with max).",
            registry=r,
        )
        self.paused = Gauge(
            "remediator_paused",
            "1 while the kill switch is on (no action runs; alerts are still recorded and escalated), in the"
            " shared store (aggregate with max).",
            registry=r,
        )
        self.dry_run = Gauge(
            "remediator_dry_run",
            "1 when this replica runs with REMEDIATOR_GUARDS__DRY_RUN (records decisions, executes nothing).",
            registry=r,
        )
        self.time_to_recovery = Histogram(
            "remediator_time_to_recovery_seconds",
            "From an incident opening to its alert resolving.",
            ["policy"],
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.refusals = Counter(
            "remediator_refusals_total",
            "Actions a guard refused, by policy and reason (cooldown, rate_limit, budget, breaker_open, locked,"
            " flapping, paused, dry_run, shadow).",
            ["policy", "reason"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "remediator_breaker_state",
            "Circuit breaker state by breaker name: 0 closed, 1 half-open, 2 open; host: the Docker host of a"
            " docker backend or target breaker (empty for the others).",
            ["breaker", "host"],
            registry=r,
        )
        self.lease_lost = Counter(
            "remediator_lease_lost_total",
            "Work stopped because another replica took its lease over (incident: a ladder; outbox: a delivery).",
            ["what"],
            registry=r,
        )
        self.policies_loaded = Gauge(
            "remediator_policies_loaded", "Policies loaded and enforced.", registry=r
        )
        self.maintenance = Counter(
            "remediator_maintenance_total",
            "Incidents of a policy a maintenance window held (held: no action, no page), and what became of"
            " them when no window held them any more (resumed: its alerts still fired and its ladder started;"
            " closed: they resolved, closed quietly).",
            ["policy", "event"],
            registry=r,
        )

    def _retention(self, r: CollectorRegistry) -> None:
        """What the store holds and what retention removed (docs/operations.md, "Retention")."""
        self.store_rows = Gauge(
            "remediator_store_rows",
            "Rows per table of the store, counted at the end of each retention run.",
            ["table"],
            registry=r,
        )
        self.store_size = Gauge(
            "remediator_store_size_bytes",
            "The store's size on disk: the SQLite file and its WAL, or the PostgreSQL database.",
            registry=r,
        )
        self.retention_deleted = Counter(
            "remediator_retention_deleted_total",
            "Rows retention deleted, by table.",
            ["table"],
            registry=r,
        )
        self.retention_last_run = Gauge(
            "remediator_retention_last_run_timestamp_seconds",
            "When the last retention run ended (Unix time), whether it succeeded or not.",
            registry=r,
        )
        self.retention_last_success = Gauge(
            "remediator_retention_last_run_successful",
            "Whether the last retention run succeeded (1) or failed and will be retried next interval (0).",
            registry=r,
        )
