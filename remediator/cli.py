"""The command line: ``remediator serve | check | simulate | incidents``. Run ``remediator --help``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import SettingsError

from remediator import __version__
from remediator.actions.catalogue import SPECS
from remediator.api_client import ApiClient
from remediator.app import serve, unknown_notifiers
from remediator.domain.alerts import Notification
from remediator.domain.story import incident_timeline
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

EPILOG = """
environment:
  Every setting is a REMEDIATOR_* variable (nested with __), e.g. REMEDIATOR_SERVER__TOKEN,
  REMEDIATOR_DOCKER__HOST, REMEDIATOR_POLICIES_DIR. See README.md for the full list.

examples:
  remediator check policies/              validate every policy file
  remediator simulate alert.json          what would happen, acting on nothing
  remediator serve                        run the daemon (webhook on 127.0.0.1:9095/alerts)
"""


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "policies", None):
        overrides["policies_dir"] = Path(args.policies)
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.host or args.port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    setup_logs(args.log_format or settings.log.format, settings.log.level)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        if "bind" not in str(exc):
            raise
        # The listen address is taken or not this machine's: a setting to change, not a crash to report.
        raise ConfigError(
            f"REMEDIATOR_SERVER__HOST/PORT: cannot listen on {settings.server.host}:{settings.server.port}: "
            f"{(exc.strerror or str(exc)).rsplit(': ', 1)[-1]}"
        ) from exc
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    directory = Path(args.dir) if args.dir else settings.policies_dir
    try:
        policies = load_dir(directory, SPECS)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for policy in policies:
        steps = " -> ".join(f"{s.kind} {s.name}" for s in policy.steps)
        print(f"ok  {policy.name:<28} {policy.source}\n    {steps}")
    for missing in unknown_notifiers(policies, settings):
        print(f"warning: escalation target not configured (escalations go to the log): {missing}")
    print(f"{len(policies)} policies valid in {directory}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        policies = load_dir(settings.policies_dir, SPECS)
        # Bounded like the webhook's body: a payload that big is not one Alertmanager sends.
        limit = settings.server.max_body_bytes
        if args.payload == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(args.payload).open("rb") as file:
                raw = file.read(limit + 1)
        if len(raw) > limit:
            raise OSError(f"{args.payload} is over {limit} bytes (REMEDIATOR_SERVER__MAX_BODY_BYTES)")
        notification = Notification.model_validate_json(raw)
    except (PolicyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"error: {args.payload} is not an Alertmanager webhook v4 payload:\n{exc}", file=sys.stderr)
        return 1
    for alert in notification.alerts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        print(f"alert {alert.name} [{alert.status}] {{{labels}}}")
        match = match_alert(policies, alert.labels)
        if match is None:
            print("  no policy matches: recorded as unmatched, nothing runs")
            continue
        print(f"  policy  {match.policy.name} ({match.policy.source})")
        if alert.status == "resolved":
            print("  resolved: closes the open incident of this target and cancels its pending steps")
        elif match.refused:
            print(f"  REFUSED {match.refused}\n  -> escalates at once; no backend is called")
        else:
            print(f"  target  {match.policy.target.kind} {match.target}")
            for index, step in enumerate(match.policy.steps, start=1):
                extra = ""
                if step.verify is not None:
                    what = "resolved" if step.verify.resolved_within_s is not None else "checks hold"
                    extra = f", verify: {what} within {step.verify.window_s:g}s, attempts {step.attempts}"
                params = f" {json.dumps(step.params)}" if step.params else ""
                print(f"  {index}. {step.kind} {step.name}{params}{extra}")
    print("(simulation: nothing was executed)")
    return 0


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _incidents(args: argparse.Namespace, settings: Settings) -> int:
    store = build_store(settings)
    await store.open()
    try:
        if args.action == "show":
            incident = await store.get_incident(args.id)
            if incident is None:
                print(f"error: no incident {args.id}", file=sys.stderr)
                return 1
            print(
                f"incident {incident.id}: {incident.policy} on {incident.target}, {incident.status}, "
                f"severity {incident.severity or '-'}, opened {_when(incident.opened_at)}"
            )
            if incident.reason:
                print(f"reason: {incident.reason}")
            print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(incident.labels.items())))
            steps = await store.steps(incident.id)
            for entry in incident_timeline(steps, await store.audit_trail(incident.id)):
                print(
                    f"{entry['at'][:19].replace('T', ' ')}  {entry['kind']:<20} {json.dumps(entry['detail'], sort_keys=True)}"
                )
        else:
            for incident in await store.list_incidents(limit=args.limit):
                print(
                    f"{incident.id:>6}  {incident.status:<9} {_when(incident.opened_at)}  "
                    f"{incident.policy:<24} {incident.target}  {incident.reason}"
                )
    finally:
        await store.close()
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    if args.action == "show" and args.id is None:
        print("error: incidents show needs an incident id", file=sys.stderr)
        return 2
    return asyncio.run(_incidents(args, _settings(args)))


async def _store_stats(settings: Settings) -> dict[str, Any]:
    store = build_store(settings)
    await store.open()
    try:
        return {"tables": await store.table_rows(), "size_bytes": await store.size_bytes()}
    finally:
        await store.close()


def cmd_store(args: argparse.Namespace) -> int:
    stats = asyncio.run(_store_stats(_settings(args)))
    if args.output == "json":
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    for table, rows in stats["tables"].items():
        print(f"{table:<16} {rows:>12} rows")
    print(f"{'size on disk':<16} {stats['size_bytes']:>12} bytes ({stats['size_bytes'] / 2**20:.1f} MiB)")
    return 0


def _daemon(args: argparse.Namespace) -> ApiClient:
    """The running daemon's API at --url (default: REMEDIATOR_SERVER__HOST/PORT), with the token the daemon
    uses (REMEDIATOR_SERVER__TOKEN, the token file, or <state_dir>/token)."""
    settings = _settings(args)
    url = args.url or f"http://{settings.server.host}:{settings.server.port}"
    return ApiClient(url, webhook_token(settings, generate=False))


def cmd_control(args: argparse.Namespace) -> int:
    if args.command == "status":
        print(json.dumps(_daemon(args).get("/api/status"), indent=2, sort_keys=True))
    elif args.command == "reload":
        answer = _daemon(args).post("/-/reload")
        print(f"{answer['policies']} policies in force (version {answer['version']})")
    else:
        answer = _daemon(args).post(f"/api/{args.command}")
        print(
            "automation paused: no action runs; alerts are still recorded and escalated"
            if answer["paused"]
            else "automation resumed"
        )
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    if args.action == "list":
        for p in _daemon(args).get("/api/policies")["policies"]:
            note = f" (file says {p['file_mode']})" if p["mode"] != p["file_mode"] else ""
            print(f"{p['name']:<28} {p['mode']:<8}{note}  {p['source']}")
        return 0
    if not args.name:
        raise RemediatorError(f"policies {args.action} needs a policy name")
    answer = _daemon(args).post(f"/api/policies/{args.name}/{args.action}")
    print(f"policy {answer['policy']} is now {answer['mode']}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    answer = _daemon(args).post(f"/api/incidents/{args.id}/{args.command}")
    print(f"incident {answer['incident_id']}: {'approved' if answer['approved'] else 'denied'}")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    settings = _settings(args)
    policies = {p.name: p for p in load_dir(settings.policies_dir, SPECS)}
    policy = policies.get(args.policy)
    if policy is None:
        raise RemediatorError(f"no policy {args.policy!r} (have: {', '.join(sorted(policies))})")
    report = asyncio.run(
        run_drill(settings, policy, args.target, _daemon(args), args.alertmanager, args.timeout)
    )
    print(report.render())
    return 0 if report.passed else 1


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """One line and 0 when the daemon is ready, else 1 (also for unreadable settings: Docker reserves 2)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print("unhealthy: " + "; ".join(_settings_problems(exc)), file=sys.stderr)
        return 1
    health = health_check(settings, args.url, args.host, args.port, args.timeout)
    print(health.line, file=sys.stdout if health.ok else sys.stderr)
    return 0 if health.ok else 1


def _healthcheck_parser(sub: Any) -> None:
    hc = sub.add_parser(
        "healthcheck",
        help="is the daemon here ready? exit 0 if its /readyz says so, else 1 (for HEALTHCHECK)",
        description="Asks the local daemon's /readyz where `serve` listens: REMEDIATOR_SERVER__HOST and "
        "__PORT (a wildcard address is probed on the loopback), over HTTPS when REMEDIATOR_SERVER__TLS_CERT "
        "is set (the certificate is not checked). Prints one line; exit 0 ready, 1 not (or settings it "
        "cannot read).",
        epilog="examples:\n  remediator healthcheck\n"
        '  HEALTHCHECK CMD ["remediator", "healthcheck"]        (Dockerfile)\n'
        "  remediator healthcheck --url https://10.0.0.5:9095 --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hc.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
    hc.add_argument("--host", help="probe this address instead of REMEDIATOR_SERVER__HOST")
    hc.add_argument("--port", type=int, help="probe this port instead of REMEDIATOR_SERVER__PORT")
    hc.add_argument(
        "--timeout",
        type=float,
        default=HEALTHCHECK_TIMEOUT_S,
        help=f"seconds to wait for the answer (default {HEALTHCHECK_TIMEOUT_S:g})",
    )
    hc.set_defaults(func=cmd_healthcheck)


def _store_parser(sub: Any) -> None:
    store_p = sub.add_parser("store", help="what the store holds: rows per table and its size on disk")
    store_p.add_argument("action", nargs="?", choices=["stats"], default="stats")
    store_p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="text or JSON")
    store_p.set_defaults(func=cmd_store)


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

    serve_p = sub.add_parser("serve", help="run the daemon (the Alertmanager webhook target)")
    serve_p.add_argument("--policies", metavar="DIR", help="policy directory (default: policies/)")
    serve_p.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="listen port (default 9095)")
    serve_p.add_argument("--log-format", choices=["text", "json"], help="log as text (default) or JSON lines")
    serve_p.set_defaults(func=cmd_serve)

    check_p = sub.add_parser(
        "check", help="validate policy files; exit 1 with file:line: reason on a mistake"
    )
    check_p.add_argument("dir", nargs="?", help="policy directory (default: policies/)")
    check_p.set_defaults(func=cmd_check)

    sim_p = sub.add_parser("simulate", help="show what a webhook payload would trigger, acting on nothing")
    sim_p.add_argument("payload", help="an Alertmanager webhook JSON file, or - for standard input")
    sim_p.add_argument("--policies", metavar="DIR", help="policy directory (default: policies/)")
    sim_p.set_defaults(func=cmd_simulate)

    inc_p = sub.add_parser("incidents", help="list incidents, or show one with its timeline")
    inc_p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    inc_p.add_argument("id", nargs="?", type=int, help="incident id (for show)")
    inc_p.add_argument("--limit", type=int, default=50, help="how many to list (default 50)")
    inc_p.set_defaults(func=cmd_incidents)

    _store_parser(sub)
    _healthcheck_parser(sub)
    for name, text in (
        ("pause", "kill switch: stop every action now (alerts are still recorded and escalated)"),
        ("resume", "undo pause"),
        ("status", "paused?, dry-run?, open incidents, breaker states of the running daemon"),
        ("reload", "load the policy files again (a broken set is refused; the policies in force stay)"),
    ):
        ctl = sub.add_parser(name, help=text)
        ctl.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
        ctl.set_defaults(func=cmd_control)

    pol = sub.add_parser(
        "policies", help="list policies with their mode; promote a shadow policy to enforcing"
    )
    pol.add_argument("action", nargs="?", choices=["list", "promote", "shadow"], default="list")
    pol.add_argument("name", nargs="?", help="the policy (for promote and shadow)")
    pol.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
    pol.set_defaults(func=cmd_policies)

    for name, text in (
        ("approve", "let a step waiting for approval act"),
        ("deny", "refuse it (it escalates)"),
    ):
        dec = sub.add_parser(name, help=text)
        dec.add_argument("id", type=int, help="the incident id")
        dec.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
        dec.set_defaults(func=cmd_decide)

    drill = sub.add_parser(
        "drill",
        help="inject the failure a policy covers and time detection, action and recovery",
        description="Stops the target container (or posts a synthetic alert, per the policy's drill: section), "
        "then follows the running daemon's incident and reports against the policy's success criteria. "
        "Exit 0 when it passed.",
    )
    drill.add_argument("policy", help="the policy to rehearse")
    drill.add_argument("--target", required=True, help="what to break; must pass the policy's allow list")
    drill.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
    drill.add_argument("--alertmanager", metavar="URL", help="Alertmanager, for drills that post an alert")
    drill.add_argument(
        "--timeout", type=float, help="give up after this many seconds (default: criteria + 30)"
    )
    drill.add_argument("--policies", metavar="DIR", help="policy directory (default: policies/)")
    drill.set_defaults(func=cmd_drill)
    return top


def _settings_problems(exc: ValidationError) -> list[str]:
    """Settings from the environment: one line per problem, named as the user set it."""
    return [
        f"REMEDIATOR_{'__'.join(str(part) for part in problem['loc']).upper()}: {problem['msg']}: "
        f"{problem.get('input')!r}"
        for problem in exc.errors()
    ]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for line in env_warnings(os.environ):
        print(line, file=sys.stderr)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        for line in _settings_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        # A value the settings could not parse (JSON): they name only the top-level field, so find the variable.
        environ: dict[str, str | None] = {**dotenv_values(".env"), **os.environ}
        for line in json_problems(environ) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RemediatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
