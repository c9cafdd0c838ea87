"""Every metric remediator exports, on an injected registry so tests and replicas never share global state.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms); the Grafana dashboard in
``deploy/`` queries exactly these.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The daemon's metrics; one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
            " target_refused, unrecordable, store_retry).",
            ["decision"],
            registry=r,
        )

    def _remediation(self, r: CollectorRegistry) -> None:
        """What was done, how it went, and what was refused or escalated."""
        self.actions = Counter(
            "remediator_actions_total",
            "Action attempts, by policy, action and outcome (ok, temporary, permanent).",
            ["policy", "action", "outcome"],
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
        self.incidents_open = Gauge(
            "remediator_incidents_open",
            "Incidents not yet resolved (active, waiting or escalated).",
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
            "Circuit breaker state by breaker name: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
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
