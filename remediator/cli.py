"""The command line: ``remediator COMMAND``. Run ``remediator --help``.

Each command has a function that builds its parser (registered with ``@subcommand``, in ``--help`` order: a new
command is one more such function) and a ``cmd_*`` that runs it. Everything that reads or changes live state
(incidents, status, pause, policies, hosts, approvals, reload, drills) calls the running daemon's API through
``api_client``, with the token the daemon uses; ``serve``, ``store stats`` and ``backtest --inbox`` (which
only reads the inbox) are the only commands that open the store, and none creates one as a side effect of a read.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias, cast

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import SettingsError

from remediator import __version__, backtest
from remediator.actions.catalogue import SPECS
from remediator.api_client import ApiClient, ApiError
from remediator.app import serve, unknown_notifiers
from remediator.domain.alerts import Alert, Notification
from remediator.domain.policies import DOCKER_KINDS, Policy
from remediator.domain.report import IncidentReport
from remediator.domain.report import markdown as report_markdown
from remediator.drill import run_drill
from remediator.env_check import json_problems
from remediator.env_check import warnings as env_warnings
from remediator.errors import ConfigError, PolicyError, RemediatorError
from remediator.healthcheck import TIMEOUT_S as HEALTHCHECK_TIMEOUT_S
from remediator.healthcheck import check as health_check
from remediator.logs import setup as setup_logs
from remediator.policy.loader import load_dir
from remediator.policy.matching import match_alert
from remediator.server import webhook_token
from remediator.settings import Settings
from remediator.store.factory import build_store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EPILOG = """
environment:
  Every setting is a REMEDIATOR_* variable (nested with __), e.g. REMEDIATOR_SERVER__TOKEN,
  REMEDIATOR_DOCKER__HOST, REMEDIATOR_POLICIES_DIR; docs/operations.md lists them all. A REMEDIATOR_*
  variable that is no setting is warned about, with the nearest name.

examples:
  remediator check policies/                      validate every policy file
  remediator simulate alert.json                  what an alert would trigger, acting on nothing
  remediator serve                                run the daemon (webhook on 127.0.0.1:9095/alerts)
  remediator incidents --status active            what the running daemon is working on
  remediator incidents show 7                     one incident's timeline
  remediator status                               paused? dry run? backlog, breakers
  remediator policies -o json                     every listing has -o table|json
"""

STATUSES = ("active", "escalated", "maintenance", "resolved")

# ---------------------------------------------------------------------------------------------------------
# Output


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """A header line (unless None), then one line per row, each column as wide as its widest cell; an empty
    cell shows ``-``, a cell's line breaks become spaces."""
    lines = [["-" if c is None or c == "" else " ".join(str(c).split()) for c in row] for row in rows]
    if headers is not None:
        lines.insert(0, list(headers))
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="a table (default) or JSON"
    )


def _parser(
    sub: Subparsers, name: str, text: str, examples: str = "", **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand with its one-line help, and its examples under ``--help``."""
    return sub.add_parser(
        name,
        help=text,
        description=kwargs.pop("description", text[0].upper() + text[1:] + "."),
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


SUBCOMMANDS: list[Callable[[Subparsers], None]] = []


def subcommand(build: Callable[[Subparsers], None]) -> Callable[[Subparsers], None]:
    """Register a function that adds a subcommand's parser (``--help`` lists them in registration order)."""
    SUBCOMMANDS.append(build)
    return build


# ---------------------------------------------------------------------------------------------------------
# Settings, policies and the daemon


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "policies", None):
        overrides["policies_dir"] = Path(args.policies)
    return Settings(**overrides)


def _policies_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: REMEDIATOR_POLICIES_DIR, policies/)"
    )


def _load_policies(directory: Path) -> list[Policy]:
    """Every policy of ``directory``; a directory with none is a mistake (RemediatorError), as in a reload."""
    policies = load_dir(directory, SPECS)
    if not policies:
        raise RemediatorError(f"{directory}: no policy (no *.yaml or *.yml file with one)")
    return policies


def _daemon_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT, https with TLS_CERT)",
    )
    parser.add_argument(
        "--token",
        help="the API token (default: the daemon's own: REMEDIATOR_SERVER__TOKEN, __TOKEN_FILE or "
        "<state_dir>/token; prefer those: other users can read a flag in ps)",
    )


def _api(args: argparse.Namespace) -> ApiClient:
    """The running daemon's API at --url (default: where the settings say it listens), with --token or the
    token the daemon uses (server.auth.webhook_token: the variable, the token file, or <state_dir>/token)."""
    settings = _settings(args)
    try:
        token = args.token or webhook_token(settings, generate=False)
    except OSError as exc:  # <state_dir>/token is the daemon's, mode 0600
        raise RemediatorError(f"cannot read the daemon's token: {exc}; give --token") from exc
    return ApiClient.for_daemon(settings, token, args.url)


def _hint(exc: ApiError) -> str:
    """What to try when a call to the daemon failed."""
    if exc.status is None and "cannot reach" in exc.message:
        return " (is `remediator serve` running there? --url names another daemon)"
    if exc.status == 401:
        return " (the token must be the daemon's: --token, REMEDIATOR_SERVER__TOKEN or __TOKEN_FILE)"
    return ""


# ---------------------------------------------------------------------------------------------------------
# serve, check, simulate


@subcommand
def _serve_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "serve",
        "run the daemon (the Alertmanager webhook target)",
        "  remediator serve\n  remediator serve --policies /etc/remediator/policies --host 0.0.0.0 --port 9095\n"
        "  REMEDIATOR_SERVER__TOKEN=s3cret REMEDIATOR_DOCKER__HOST=unix:///run/docker.sock remediator serve",
    )
    _policies_arg(p)
    p.add_argument("--host", help="listen address (default: REMEDIATOR_SERVER__HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: REMEDIATOR_SERVER__PORT, 9095)")
    p.add_argument("--log-format", choices=["text", "json"], help="log as text (default) or JSON lines")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.host or args.port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    setup_logs(args.log_format or settings.log.format, settings.log.level)
    try:
        empty = not load_dir(settings.policies_dir, SPECS)
    except (PolicyError, ConfigError):
        empty = False  # serve refuses the set itself, with the reason
    if empty:
        logging.getLogger("remediator").warning(
            "no policy in %s: every alert is recorded as unmatched and nothing runs; add policy files and "
            "run `remediator reload`",
            settings.policies_dir,
        )
    _check_server_files(settings)
    try:
        asyncio.run(serve(settings))
    except ssl.SSLError as exc:
        raise ConfigError(f"REMEDIATOR_SERVER__TLS_CERT/TLS_KEY/TLS_CLIENT_CA: {exc}") from exc
    except socket.gaierror as exc:
        raise ConfigError(
            f"REMEDIATOR_SERVER__HOST: cannot resolve {settings.server.host!r}: {exc.strerror or exc}"
        ) from exc
    except OSError as exc:
        if "bind" not in str(exc):
            raise
        # The listen address is taken or not this machine's: a setting to change, not a crash to report.
        raise ConfigError(
            f"REMEDIATOR_SERVER__HOST/PORT: cannot listen on {settings.server.host}:{settings.server.port}: "
            f"{(exc.strerror or str(exc)).rsplit(': ', 1)[-1]}"
        ) from exc
    return 0


def _check_server_files(settings: Settings) -> None:
    """The listener's certificate files can be read (else the TLS library's error names no file)."""
    server = settings.server
    for name, path in (
        ("TLS_CERT", server.tls_cert),
        ("TLS_KEY", server.tls_key),
        ("TLS_CLIENT_CA", server.tls_client_ca),
    ):
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"REMEDIATOR_SERVER__{name}: cannot read {path}: {exc.strerror or exc}"
            ) from exc


@subcommand
def _check_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "check",
        "validate policy files; exit 1 with file:line: reason on a mistake, or when there is no policy",
        "  remediator check                             REMEDIATOR_POLICIES_DIR's directory (policies/)\n"
        "  remediator check policies/\n"
        "  remediator check --policies policies/        the same",
    )
    p.add_argument("dir", nargs="?", help="policy directory, the same as --policies")
    _policies_arg(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    if args.dir and args.policies and Path(args.dir) != Path(args.policies):
        raise RemediatorError(f"two policy directories: {args.dir} and --policies {args.policies}")
    args.policies = args.dir or args.policies
    settings = _settings(args)
    try:
        policies = _load_policies(settings.policies_dir)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for policy in policies:
        steps = " -> ".join(f"{s.kind} {s.name}" for s in policy.steps)
        print(f"ok  {policy.name:<28} {policy.source}\n    {steps}")
    for missing in unknown_notifiers(policies, settings):
        print(f"warning: escalation target not configured (escalations go to the log): {missing}")
    print(f"{len(policies)} policies valid in {settings.policies_dir}")
    return 0


@subcommand
def _simulate_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "simulate",
        "show what a webhook payload would trigger, acting on nothing",
        "  remediator simulate tests/fixtures/alertmanager_v4_firing.json\n"
        "  remediator simulate --policies my-policies/ - < alert.json",
    )
    p.add_argument("payload", help="an Alertmanager webhook JSON file, or - for standard input")
    _policies_arg(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        policies = _load_policies(settings.policies_dir)
        notification = _read_payload(args.payload, settings.server.max_body_bytes)
    except (PolicyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {args.payload} is not an Alertmanager webhook v4 payload:\n{exc}", file=sys.stderr)
        return 1
    hosts = settings.docker.fleet().keys()
    for alert in notification.alerts:
        print("\n".join(simulate_alert(alert, policies, frozenset(hosts))))
    print("(simulation: nothing was executed)")
    return 0


def _read_payload(name: str, limit: int) -> Notification:
    """The webhook payload in file ``name`` (``-``: standard input), bounded like the webhook's body."""
    if name == "-":
        raw = sys.stdin.buffer.read(limit + 1)
    else:
        with Path(name).open("rb") as file:
            raw = file.read(limit + 1)
    if len(raw) > limit:
        raise OSError(f"{name} is over {limit} bytes (REMEDIATOR_SERVER__MAX_BODY_BYTES)")
    return Notification.model_validate_json(raw)


def simulate_alert(alert: Alert, policies: list[Policy], hosts: frozenset[str] | None = None) -> list[str]:
    """What the daemon would do with one alert, as lines: the policy that takes it, the target and its Docker
    host (checked against ``hosts``, the configured ones, when given), the ladder."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    lines = [f"alert {alert.name} [{alert.status}] {{{labels}}}"]
    match = match_alert(policies, alert.labels, hosts)
    if match is None:
        return [*lines, "  no policy matches: recorded as unmatched, nothing runs"]
    lines.append(f"  policy  {match.policy.name} ({match.policy.source})")
    if alert.status == "resolved":
        return [*lines, "  resolved: closes the open incident of this target and cancels its pending steps"]
    if match.refused:
        return [*lines, f"  REFUSED {match.refused}", "  -> escalates at once; no backend is called"]
    lines.append(f"  target  {match.policy.target.kind} {match.target}")
    if match.policy.target.kind in DOCKER_KINDS:
        lines.append(f"  host    {match.host}")
    for index, step in enumerate(match.policy.steps, start=1):
        extra = ""
        if step.verify is not None:
            what = "resolved" if step.verify.resolved_within_s is not None else "checks hold"
            extra = f", verify: {what} within {step.verify.window_s:g}s, attempts {step.attempts}"
        params = f" {json.dumps(step.params)}" if step.params else ""
        lines.append(f"  {index}. {step.kind} {step.name}{params}{extra}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# backtest


@subcommand
def _backtest_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "backtest",
        "replay past alerts through the policies and guards in virtual time: what would have run, been refused"
        " or paged (nothing runs)",
        "  remediator backtest --prometheus http://prometheus:9090 --since 7d\n"
        "  remediator backtest --prometheus http://prometheus:9090 --start 2026-11-01 --end 2026-11-08 -o json\n"
        "  remediator backtest --inbox --since 1d --policies new-policies/      last day's alerts, a new policy set\n"
        "  remediator backtest --file webhooks.jsonl                            one webhook body a line",
        description="Replays alert history through the daemon's own intake, runner, gate and escalator on a "
        "throwaway SQLite store, with a virtual clock: no action runs, nobody is paged. The history is a file "
        "of webhook bodies (--file), what this daemon received (--inbox: the store's inbox, read only; it "
        "keeps REMEDIATOR_RETENTION__INBOX_S), or Prometheus's ALERTS series turned into the notifications "
        "Alertmanager would have sent (--prometheus). A verification counts as recovered when the alert's "
        "resolved came within the step's window; a healthy floor is evaluated at the replayed time in "
        "--prometheus, else it is not evaluable and taken to hold. docs/operations.md (Backtest) has the "
        "assumptions.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--file", metavar="JSONL", help='webhook bodies, one a line ({"at": T, "body": B} or B)'
    )
    source.add_argument("--inbox", action="store_true", help="what this daemon received (its store's inbox)")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="Prometheus: its ALERTS series are the history (without --file/--inbox), and healthy floors are "
        "evaluated there at the replayed time",
    )
    p.add_argument(
        "--since", metavar="DURATION", help="the history's last DURATION (7d, 12h, 90m; default 7d)"
    )
    p.add_argument(
        "--start", metavar="TIME", help="the history's start (ISO 8601, UTC unless it says, or Unix)"
    )
    p.add_argument("--end", metavar="TIME", help="the history's end (default: now)")
    p.add_argument(
        "--group-wait",
        type=float,
        default=backtest.AlertmanagerTiming.group_wait_s,
        metavar="S",
        help="--prometheus: seconds from an alert's first firing evaluation to its notification (default %(default)g)",
    )
    p.add_argument(
        "--group-interval",
        type=float,
        default=backtest.AlertmanagerTiming.group_interval_s,
        metavar="S",
        help="--prometheus: seconds from an alert's resolution to its resolved notification (default %(default)g)",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="S",
        help="--prometheus: the rules' evaluation interval (default: the median gap between ALERTS samples)",
    )
    p.add_argument("--enforce", action="store_true", help="replay policies in shadow mode as enforced")
    _policies_arg(p)
    _output_arg(p)
    p.set_defaults(func=cmd_backtest)


def _history_range(args: argparse.Namespace, now: float) -> tuple[float, float]:
    try:
        end = backtest.parse_time(args.end) if args.end else now
        if args.start and args.since:
            raise RemediatorError("--start and --since both say where the history starts: give one")
        start = (
            backtest.parse_time(args.start)
            if args.start
            else end - backtest.parse_duration(args.since or "7d")
        )
    except ValueError as exc:
        raise RemediatorError(str(exc)) from exc
    if start >= end:
        raise RemediatorError(f"the history's start ({_when(start)}) is not before its end ({_when(end)})")
    return start, end


async def _inbox_history(settings: Settings, start: float, end: float) -> list[backtest.Delivery]:
    store = build_store(settings)
    await store.open()
    try:
        return await backtest.read_inbox(store, start, end)
    finally:
        await store.close()


def cmd_backtest(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policies = _load_policies(settings.policies_dir)
    start, end = _history_range(args, datetime.now(UTC).timestamp())
    if args.file:
        try:
            history = backtest.read_jsonl(Path(args.file), settings.server.max_body_bytes)
        except OSError as exc:
            raise RemediatorError(f"{args.file}: {exc.strerror or exc}") from exc
        if args.start or args.since or args.end:
            history = [d for d in history if start <= d.at <= end]
        source = f"file {args.file}"
    elif args.inbox:
        if settings.store.url is None and not settings.store_path.exists():
            raise RemediatorError(
                f"no store at {settings.store_path} (REMEDIATOR_STORE__PATH, or REMEDIATOR_STATE_DIR): run this "
                "with the daemon's settings"
            )
        history = asyncio.run(_inbox_history(settings, start, end))
        source = "the store's inbox"
    elif args.prometheus:
        timing = backtest.AlertmanagerTiming(args.group_wait, args.group_interval)
        history = backtest.read_prometheus(args.prometheus, start, end, timing, args.interval)
        source = f"ALERTS in {args.prometheus}"
    else:
        raise RemediatorError("no history: give --file JSONL, --inbox or --prometheus URL")
    report = backtest.run(history, policies, settings, prometheus=args.prometheus, enforce=args.enforce)
    report["source"] = source
    ranged = not args.file or bool(args.start or args.since or args.end)
    report["range"] = {"start": _when(start), "end": _when(end)} if ranged else None
    if args.output == "json":
        print_json(report)
    else:
        print(f"source: {source}" + (f", from {_when(start)} to {_when(end)} UTC" if ranged else ""))
        print(backtest.render(report, table))
    return 0


# ---------------------------------------------------------------------------------------------------------
# incidents


@subcommand
def _incidents_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "incidents",
        "list the running daemon's incidents, or show one with its timeline",
        "  remediator incidents                         the latest 50\n"
        "  remediator incidents list --status active --limit 10\n"
        "  remediator incidents show 7\n"
        "  remediator incidents report 7 > incident-7.md   the post-incident report (Markdown)\n"
        "  remediator incidents report 7 -o json\n"
        "  remediator incidents -o json | jq '.incidents[].target'",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "show", "report"],
        default="list",
        help="list (default), show, or report (the post-incident report: Markdown, or -o json)",
    )
    p.add_argument("id", nargs="?", type=int, help="incident id (for show and report)")
    p.add_argument("--status", choices=STATUSES, help="only incidents in this state")
    p.add_argument("--limit", type=int, default=50, help="how many to list, newest first (default 50)")
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_incidents)


def pending_approval(timeline: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The approval request an incident's ``timeline`` leaves unanswered: step, requested_at, expires_at (unix
    seconds) and on_timeout (``deny`` or ``proceed``); None when there is none."""
    pending: dict[str, Any] | None = None
    for event in timeline:
        detail = event.get("detail") or {}
        if event.get("kind") == "approval_requested":
            requested = float(detail.get("requested_at") or datetime.fromisoformat(event["at"]).timestamp())
            pending = {
                "step": str(detail.get("step", "")),
                "requested_at": requested,
                "expires_at": requested + float(detail.get("timeout_s") or 0),
                "on_timeout": detail.get("on_timeout") or "deny",
            }
        elif event.get("kind") in ("approved", "denied") and pending is not None:
            answered = detail.get("requested_at")
            if answered is None or float(answered) == pending["requested_at"]:
                pending = None
    return pending


def _approval_reason(incident: dict[str, Any]) -> str:
    approval = incident["pending_approval"]
    silence = "it runs" if approval["on_timeout"] == "proceed" else "it is denied and escalated"
    return (
        f"{approval['step']} on {incident['target']} waits for approval: `remediator approve|deny "
        f"{incident['id']}`; unanswered at {_when(approval['expires_at'])} UTC, {silence}"
    )


def _with_approval(
    api: ApiClient, incident: dict[str, Any], timeline: Sequence[dict[str, Any]] | None
) -> None:
    """Mark an active incident that waits for a person: ``pending_approval``, and its status shown as such."""
    if incident.get("status") != "active":
        return
    if timeline is None:
        try:
            timeline = api.get(f"/api/incidents/{incident['id']}").get("timeline", [])
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile (retention): listed as it was
                raise
            return
    approval = pending_approval(timeline)
    if approval is not None:
        incident["pending_approval"] = approval


def _shown_status(incident: dict[str, Any]) -> str:
    return "awaiting approval" if "pending_approval" in incident else str(incident["status"])


def _shown_reason(incident: dict[str, Any]) -> str:
    return _approval_reason(incident) if "pending_approval" in incident else str(incident.get("reason", ""))


def cmd_incidents(args: argparse.Namespace) -> int:
    if args.action in ("show", "report"):
        if args.id is None:
            raise RemediatorError(f"incidents {args.action} needs an incident id")
        if args.action == "report":
            return _incident_report(_api(args), args.id, args.output)
        return _incident_show(_api(args), args.id, args.output)
    api = _api(args)
    found: list[dict[str, Any]] = api.get("/api/incidents", status=args.status, limit=args.limit)["incidents"]
    for incident in found:
        _with_approval(api, incident, None)
    if args.output == "json":
        print_json({"incidents": found})
        return 0
    fleet = any(i.get("host", "default") != "default" for i in found)
    headers = ["ID", "STATUS", "OPENED (UTC)", "POLICY", *(["HOST"] if fleet else []), "TARGET", "REASON"]
    rows = [
        [
            i["id"],
            _shown_status(i),
            _when(i["opened_at"]),
            i["policy"],
            *([i.get("host", "")] if fleet else []),
            i["target"],
            _shown_reason(i),
        ]
        for i in found
    ]
    print(table(headers, rows))
    if not found:
        print(f"(no {args.status + ' ' if args.status else ''}incidents)")
    return 0


def _incident_report(api: ApiClient, incident_id: int, output: str) -> int:
    """The post-incident report from the daemon (``GET /api/incidents/ID/report``), rendered here as Markdown
    by the same function as the daemon's ``?format=markdown``."""
    report = api.get(f"/api/incidents/{incident_id}/report", format="json")
    if output == "json":
        print_json(report)
    else:
        print(report_markdown(cast(IncidentReport, report)), end="")
    return 0


def _incident_show(api: ApiClient, incident_id: int, output: str) -> int:
    incident = api.get(f"/api/incidents/{incident_id}")
    _with_approval(api, incident, incident.get("timeline", []))
    if output == "json":
        print_json(incident)
        return 0
    host = incident.get("host", "default")
    print(
        f"incident {incident['id']}: {incident['policy']} on {incident['target']}"
        f"{f' (host {host})' if host != 'default' else ''}, {_shown_status(incident)}, "
        f"severity {incident.get('severity') or '-'}, opened {_when(incident['opened_at'])} UTC"
    )
    reason = _shown_reason(incident)
    if reason:
        print(f"{'approval' if 'pending_approval' in incident else 'reason'}: {reason}")
    print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(incident.get("labels", {}).items())))
    print(
        table(
            ["AT (UTC)", "WHAT", "DETAIL"],
            (
                [e["at"][:19].replace("T", " "), e["kind"], json.dumps(e["detail"], sort_keys=True)]
                for e in incident.get("timeline", [])
            ),
        )
    )
    return 0


# ---------------------------------------------------------------------------------------------------------
# report: how well each policy works

_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def report_period(text: str) -> float:
    """``--since``: ``7d``, ``24h``, ``90m``, ``2w``, ``3600s`` or a number of seconds, as seconds."""
    text = text.strip().lower()
    unit = _PERIOD_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a period: write 7d, 24h, 90m, 2w or seconds"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the period must be longer than 0")
    return value


@subcommand
def _report_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "report",
        "how well each policy worked: incidents, acted, recovered (by step), escalated, refused, success rate,"
        " time to recovery, pages avoided",
        "  remediator report                     the last 7 days\n"
        "  remediator report --since 24h\n"
        "  remediator report --since 30d -o json | jq '.policies[] | {policy, success_rate}'",
        description="How well each policy worked over a period, read by the running daemon from its store (the"
        " same from any replica, after any restart; GET /api/report). Success rate: recovered / acted (shadow"
        " mode and dry run never act). Pages avoided: incidents at P1 or P2 that recovered after an action and"
        " were never escalated.",
    )
    p.add_argument(
        "--since",
        type=report_period,
        default=7 * 86_400.0,
        metavar="PERIOD",
        help="how far back, by when incidents opened: 7d (default), 24h, 90m, 2w, or seconds",
    )
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_report)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {count}" for key, count in counts.items()) or "-"


def cmd_report(args: argparse.Namespace) -> int:
    answer = _api(args).get("/api/report", since=f"{args.since:g}")
    if args.output == "json":
        print_json(answer)
        return 0
    rows = []
    for effect in [*answer["policies"], answer["all"]]:
        rate = effect["success_rate"]
        rows.append(
            [
                effect["policy"],
                effect["incidents"],
                effect["acted"],
                effect["recovered"],
                "-" if rate is None else f"{rate * 100:.0f}%",
                _seconds(effect["time_to_recovery_p50_s"]),
                _seconds(effect["time_to_recovery_p90_s"]),
                effect["escalated"],
                effect["refused"],
                effect["pages_avoided"],
                _counts(effect["recovered_by_step"]),
                _counts(effect["refusals"]),
            ]
        )
    print(f"incidents opened from {_when(_ts(answer['since']))} to {_when(_ts(answer['until']))} UTC")
    headers = ["POLICY", "INCIDENTS", "ACTED", "RECOVERED", "SUCCESS", "TTR P50", "TTR P90", "ESCALATED"]
    headers += ["REFUSED", "PAGES AVOIDED", "RECOVERED BY STEP", "REFUSALS BY REASON"]
    print(table(headers, rows))
    return 0


def _ts(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


# ---------------------------------------------------------------------------------------------------------
# status, pause, resume, reload


@subcommand
def _status_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "status",
        "paused?, dry run?, open incidents, intake backlog and breakers of the running daemon",
        "  remediator status\n  remediator status -o json\n"
        "  remediator status --url https://remediator.internal:9095",
    )
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    status = _api(args).get("/api/status")
    if args.output == "json":
        print_json(status)
        return 0
    rows: list[list[object]] = [
        [
            "automation",
            "PAUSED: no action runs; alerts are still recorded and escalated (`remediator resume`)"
            if status.get("paused")
            else "running",
        ],
        [
            "dry run",
            "on: every decision is recorded, no action is executed" if status.get("dry_run") else "off",
        ],
        ["open incidents", status.get("open_incidents")],
        ["intake backlog", status.get("backlog")],
    ]
    breakers: dict[str, Any] = status.get("breakers") or {}
    tripped = {name: state for name, state in breakers.items() if state != "closed"}
    rows.append(["breakers", f"{len(breakers)}, {len(tripped)} not closed" if breakers else "none yet"])
    windows = status.get("maintenance_windows_in_force")
    if windows:
        rows.append(["maintenance", f"{windows} window(s) in force (`remediator maintenance list`)"])
    known = {"paused", "dry_run", "open_incidents", "backlog", "breakers", "maintenance_windows_in_force"}
    rows += [
        [k.replace("_", " "), v]
        for k, v in sorted(status.items())
        if k not in known and not isinstance(v, (dict, list))
    ]
    print(table(None, rows))
    if tripped:
        print()
        print(table(["BREAKER", "STATE"], sorted(tripped.items())))
    return 0


@subcommand
def _control_parsers(sub: Subparsers) -> None:
    for name, text, example in (
        ("pause", "kill switch: stop every action now (alerts are still recorded and escalated)", "pause"),
        ("resume", "undo pause", "resume"),
        (
            "reload",
            "load the policy files again (a broken set is refused; the policies in force stay)",
            "check && remediator reload",
        ),
    ):
        p = _parser(
            sub, name, text, f"  remediator {example}\n  remediator {name} --url http://10.0.0.5:9095"
        )
        _daemon_args(p)
        p.set_defaults(func=cmd_control)


def cmd_control(args: argparse.Namespace) -> int:
    if args.command == "reload":
        answer = _api(args).post("/-/reload")
        print(f"{answer['policies']} policies in force (version {answer['version']})")
        return 0
    answer = _api(args).post(f"/api/{args.command}")
    print(
        "automation paused: no action runs; alerts are still recorded and escalated"
        if answer["paused"]
        else "automation resumed"
    )
    return 0


# ---------------------------------------------------------------------------------------------------------
# policies, hosts, approve, deny


@subcommand
def _policies_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "policies",
        "list the daemon's policies with their mode; switch one between shadow and enforce",
        "  remediator policies\n  remediator policies shadow high-error-rate     record, do not act\n"
        "  remediator policies promote high-error-rate    act again",
    )
    p.add_argument("action", nargs="?", choices=["list", "promote", "shadow"], default="list")
    p.add_argument("name", nargs="?", help="the policy (for promote and shadow)")
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_policies)


def cmd_policies(args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = _api(args).get("/api/policies")
        if args.output == "json":
            print_json(listed)
            return 0
        rows = []
        for p in listed["policies"]:
            mode = p["mode"] + (f" (file says {p['file_mode']})" if p["mode"] != p["file_mode"] else "")
            rows.append([p["name"], mode + (", dry run" if p.get("dry_run") else ""), p["source"]])
        print(table(["POLICY", "MODE", "SOURCE"], rows))
        return 0
    if not args.name:
        raise RemediatorError(f"policies {args.action} needs a policy name")
    answer = _api(args).post(f"/api/policies/{args.name}/{args.action}")
    print(f"policy {answer['policy']} is now {answer['mode']}")
    return 0


@subcommand
def _hosts_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "hosts",
        "the Docker hosts the daemon acts on: reachable?, engine version, breaker, latency",
        "  remediator hosts\n  remediator hosts -o json",
    )
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_hosts)


def cmd_hosts(args: argparse.Namespace) -> int:
    try:
        listed = _api(args).get("/api/hosts")
    except ApiError as exc:
        if exc.status == 404:
            raise RemediatorError(f"{exc.url}: this daemon has no host listing (an older version)") from exc
        raise
    if args.output == "json":
        print_json(listed)
        return 0
    rows = [
        [
            h.get("name"),
            h.get("url"),
            {True: "yes", False: "NO"}.get(h.get("reachable"), "?"),
            h.get("engine_version"),
            h.get("breaker"),
            "" if h.get("latency_ms") is None else f"{h['latency_ms']:.0f} ms",
            _when(h["checked_at"]) if isinstance(h.get("checked_at"), (int, float)) else h.get("checked_at"),
            h.get("last_error"),
        ]
        for h in listed["hosts"]
    ]
    headers = ["HOST", "URL", "REACHABLE", "ENGINE", "BREAKER", "LATENCY", "CHECKED (UTC)", "LAST ERROR"]
    print(table(headers, rows))
    return 0


@subcommand
def _decide_parsers(sub: Subparsers) -> None:
    for name, text in (
        ("approve", "let a step waiting for approval act"),
        ("deny", "refuse it (the incident escalates)"),
    ):
        p = _parser(
            sub, name, text, f"  remediator incidents --status active    find it\n  remediator {name} 7"
        )
        p.add_argument("id", type=int, help="the incident id")
        _daemon_args(p)
        p.set_defaults(func=cmd_decide)


def cmd_decide(args: argparse.Namespace) -> int:
    answer = _api(args).post(f"/api/incidents/{args.id}/{args.command}")
    print(f"incident {answer['incident_id']}: {'approved' if answer['approved'] else 'denied'}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# maintenance windows

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """``2h``, ``90m``, ``1h30m``, ``1d``, ``45s`` or a number of seconds, as seconds (ValueError otherwise)."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    found = _DURATION.fullmatch(text)
    if not text or found is None or not any(found.groups()):
        raise ValueError(f"{text!r} is not a duration: write 2h, 90m, 1h30m, 1d, 45s or seconds")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(days * 86_400 + hours * 3600 + minutes * 60 + seconds)


def parse_start(text: str, now: float) -> float:
    """``--start``: ``+30m`` (from now), or an ISO 8601 time (``2026-12-01T22:00Z``; one without an offset is
    UTC), as a Unix time (ValueError otherwise)."""
    text = text.strip()
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write +30m, or 2026-12-01T22:00Z (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@subcommand
def _maintenance_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "maintenance",
        "declare, list and cancel maintenance windows: alerts are recorded, nothing acts, nobody is paged",
        '  remediator maintenance add --target sms-db --for 2h --reason "disk swap, CHG-1234"\n'
        "  remediator maintenance add --target sms-db --host db-1 --policy database-down --for 30m \\\n"
        '      --start 2026-12-01T22:00Z --reason "failover test"\n'
        "  remediator maintenance add --target web --for 1h --start +15m --reason deploy\n"
        "  remediator maintenance list [--all]             scheduled and in force (--all: ended too)\n"
        "  remediator maintenance cancel 3                 end it now: what still fires is remediated",
        description="Maintenance windows. While a window holds a target, its alerts are recorded and their\n"
        "incidents are 'maintenance': no action runs and nobody is paged. When it ends (on time or\n"
        "cancelled), an incident whose alerts still fire starts its ladder as a new one would; one whose\n"
        "alerts resolved was closed quietly. A window longer than REMEDIATOR_MAINTENANCE__MAX_S is refused.",
    )
    p.add_argument("action", nargs="?", choices=["list", "add", "cancel"], default="list")
    p.add_argument("id", nargs="?", type=int, help="the window (for cancel)")
    p.add_argument("--target", help="the target the window holds (for add)")
    p.add_argument("--host", help="only on this Docker host (default: any host)")
    p.add_argument("--policy", help="only this policy's incidents (default: any policy)")
    p.add_argument(
        "--for", dest="duration", metavar="DURATION", help="how long: 2h, 90m, 1h30m, 1d (for add)"
    )
    p.add_argument("--reason", help="why: the audit and the incidents show it (for add)")
    p.add_argument("--start", help="when it begins: +30m, or 2026-12-01T22:00Z (default: now)")
    p.add_argument("--all", action="store_true", help="list also the windows that ended in the last day")
    _output_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_maintenance)


def _who() -> str:
    """Who declares or cancels a window, for the audit: the user and the machine the command runs on."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _window_rows(windows: Iterable[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            w["id"],
            w["state"],
            w["target"],
            w["host"] or "any",
            w["policy"] or "any",
            w["starts_utc"],
            w["ends_utc"],
            w["created_by"],
            w["reason"],
        ]
        for w in windows
    ]


_WINDOW_HEADERS = ["ID", "STATE", "TARGET", "HOST", "POLICY", "STARTS (UTC)", "ENDS (UTC)", "BY", "REASON"]


def cmd_maintenance(args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = _api(args).get("/api/maintenance", all=1 if args.all else None)
        if args.output == "json":
            print_json(listed)
        else:
            print(table(_WINDOW_HEADERS, _window_rows(listed["windows"])))
        return 0
    if args.action == "cancel":
        if args.id is None:
            raise RemediatorError("maintenance cancel needs a window id (remediator maintenance list)")
        answer = _api(args).delete(f"/api/maintenance/{args.id}", by=_who())
        if args.output == "json":
            print_json(answer)
        else:
            print(
                f"maintenance window {args.id} cancelled: incidents it held whose alerts still fire are"
                " remediated now"
            )
        return 0
    missing = [flag for flag, value in (("--target", args.target), ("--for", args.duration)) if not value]
    if not args.reason:
        missing.append("--reason")
    if missing:
        raise RemediatorError(f"maintenance add needs {', '.join(missing)}")
    try:
        body: dict[str, Any] = {
            "target": args.target,
            "for_s": parse_duration(args.duration),
            "reason": args.reason,
            "by": _who(),
        }
        if args.start:
            body["start"] = parse_start(args.start, time.time())
    except ValueError as exc:
        raise RemediatorError(str(exc)) from exc
    if args.host:
        body["host"] = args.host
    if args.policy:
        body["policy"] = args.policy
    answer = _api(args).post("/api/maintenance", body)
    for warning in answer.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.output == "json":
        print_json(answer)
        return 0
    w = answer["window"]
    print(
        f"maintenance window {w['id']} on {w['target']} (host {w['host'] or 'any'}, policy"
        f" {w['policy'] or 'any'}) from {w['starts_utc']} to {w['ends_utc']}: {w['state']}"
    )
    return 0


# ---------------------------------------------------------------------------------------------------------
# drill, store, healthcheck


@subcommand
def _drill_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "drill",
        "inject the failure a policy covers and time detection, action and recovery",
        "  remediator drill database-down --target sms-db\n"
        "  remediator drill high-error-rate --target web --alertmanager http://127.0.0.1:9093",
        description="Stops the target container (or posts a synthetic alert, per the policy's drill: section), "
        "then follows the running daemon's incident and reports against the policy's success criteria. "
        "Exit 0 when it passed.",
    )
    p.add_argument("policy", help="the policy to rehearse")
    p.add_argument("--target", required=True, help="what to break; must pass the policy's allow list")
    p.add_argument("--alertmanager", metavar="URL", help="Alertmanager, for drills that post an alert")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (default: criteria + 30)")
    p.add_argument(
        "--host",
        help="the Docker host of the target (REMEDIATOR_DOCKER__HOSTS; default: the policy's own, or default)",
    )
    p.add_argument(
        "--host-label",
        metavar="VALUE",
        help="the host label's value in a synthetic alert, for a policy that reads its host through a pattern"
        " (e.g. web-1:9100; default: the host's name)",
    )
    _policies_arg(p)
    _daemon_args(p)
    p.set_defaults(func=cmd_drill)


def cmd_drill(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policies = {p.name: p for p in load_dir(settings.policies_dir, SPECS)}
    policy = policies.get(args.policy)
    if policy is None:
        raise RemediatorError(f"no policy {args.policy!r} (have: {', '.join(sorted(policies))})")
    report = asyncio.run(
        run_drill(
            settings,
            policy,
            args.target,
            _api(args),
            args.alertmanager,
            args.timeout,
            host=args.host,
            host_label=args.host_label,
        )
    )
    print(report.render())
    return 0 if report.passed else 1


@subcommand
def _store_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "store",
        "what the store holds: rows per table and its size on disk",
        "  remediator store stats\n  REMEDIATOR_STORE__URL=postgresql://... remediator store stats -o json",
    )
    p.add_argument("action", nargs="?", choices=["stats"], default="stats")
    _output_arg(p)
    p.set_defaults(func=cmd_store)


async def _store_stats(settings: Settings) -> dict[str, Any]:
    store = build_store(settings)
    await store.open()
    try:
        return {"tables": await store.table_rows(), "size_bytes": await store.size_bytes()}
    finally:
        await store.close()


def cmd_store(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.store.url is None and not settings.store_path.exists():
        # Opening it would create an empty one here: say where none was found instead.
        raise RemediatorError(
            f"no store at {settings.store_path} (REMEDIATOR_STORE__PATH, or REMEDIATOR_STATE_DIR): run this "
            "with the daemon's settings"
        )
    stats = asyncio.run(_store_stats(settings))
    if args.output == "json":
        print_json(stats)
        return 0
    print(table(["TABLE", "ROWS"], stats["tables"].items()))
    print(f"size on disk: {stats['size_bytes']} bytes ({stats['size_bytes'] / 2**20:.1f} MiB)")
    return 0


@subcommand
def _healthcheck_parser(sub: Subparsers) -> None:
    p = _parser(
        sub,
        "healthcheck",
        "is the daemon here ready? exit 0 if its /readyz says so, else 1 (for HEALTHCHECK)",
        "  remediator healthcheck\n"
        '  HEALTHCHECK CMD ["remediator", "healthcheck"]        (Dockerfile)\n'
        "  remediator healthcheck --url https://10.0.0.5:9095 --timeout 5",
        description="Asks the local daemon's /readyz where `serve` listens: REMEDIATOR_SERVER__HOST and "
        "__PORT (a wildcard address is probed on the loopback), over HTTPS when REMEDIATOR_SERVER__TLS_CERT "
        "is set (the certificate is not checked). Prints one line; exit 0 ready, 1 not (or settings it "
        "cannot read).",
    )
    p.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
    p.add_argument("--host", help="probe this address instead of REMEDIATOR_SERVER__HOST")
    p.add_argument("--port", type=int, help="probe this port instead of REMEDIATOR_SERVER__PORT")
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTHCHECK_TIMEOUT_S,
        help=f"seconds to wait for the answer (default {HEALTHCHECK_TIMEOUT_S:g})",
    )
    p.set_defaults(func=cmd_healthcheck)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """One line and 0 when the daemon is ready, else 1 (also for unreadable settings: Docker reserves 2)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print("unhealthy: " + "; ".join(_settings_problems(exc)), file=sys.stderr)
        return 1
    except SettingsError as exc:
        print("unhealthy: " + "; ".join(_json_problems(exc)), file=sys.stderr)
        return 1
    health = health_check(settings, args.url, args.host, args.port, args.timeout)
    print(health.line, file=sys.stdout if health.ok else sys.stderr)
    return 0 if health.ok else 1


# ---------------------------------------------------------------------------------------------------------
# main


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="remediator",
        description="Runs on-call runbooks by itself: takes Alertmanager webhooks, runs the matching policy's "
        "bounded actions, verifies recovery, and escalates to a human when the policy runs out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"remediator {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return top


def _settings_problems(exc: ValidationError) -> list[str]:
    """Settings from the environment: one line per problem, named as the user set it (a part of the settings
    validated later, e.g. a Docker host, by its model and field)."""
    lines = []
    for problem in exc.errors():
        where = [str(part) for part in problem["loc"]]
        name = (
            f"REMEDIATOR_{'__'.join(where).upper()}"
            if exc.title == "Settings"
            else f"{exc.title} {'.'.join(where)}"
        )
        value = problem.get("input")
        # A URL, DSN, key or token (or a whole mapping of them) is not repeated: the line ends in terminals,
        # CI logs and tickets.
        hidden = isinstance(value, dict | list) or any(
            word in part.lower() for part in where for word in _SECRETS
        )
        lines.append(f"{name}: {problem['msg']}" + ("" if hidden else f": {value!r}"))
    return lines


_SECRETS = (
    "url",
    "dsn",
    "token",
    "secret",
    "password",
    "key",
    "cert",
    "hosts",
    "targets",
    "slack",
    "pagerduty",
)
"""Settings whose value may hold a credential (by a part of their name)."""


def _json_problems(exc: SettingsError) -> list[str]:
    """A value the settings could not parse (JSON): they name only the top-level field, so find the variable."""
    environ: dict[str, str | None] = {**dotenv_values(".env"), **os.environ}
    return json_problems(environ) or [str(exc)]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for line in env_warnings(os.environ):
        print(line, file=sys.stderr)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        # The commands catch what they validate themselves (payloads): what is left is configuration, the
        # settings or a part of them validated when it is used.
        for line in _settings_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        for line in _json_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc}{_hint(exc)}", file=sys.stderr)
        return 1
    except RemediatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
