"""``remediator simulate``: what a webhook payload would trigger (policy, target, host, ladder), worked out with
the daemon's own matching and acting on nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from remediator.cli.arguments import Subparsers, command_parser, policies_arg
from remediator.cli.context import load_policies, load_settings
from remediator.domain.alerts import Alert, Notification
from remediator.domain.policies import DOCKER_KINDS, Policy
from remediator.errors import PolicyError
from remediator.policy.matching import match_alert


def simulate_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "simulate",
        "show what a webhook payload would trigger, acting on nothing",
        "  remediator simulate tests/fixtures/alertmanager_v4_firing.json\n"
        "  remediator simulate --policies my-policies/ - < alert.json",
    )
    p.add_argument("payload", help="an Alertmanager webhook JSON file, or - for standard input")
    policies_arg(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    try:
        policies = load_policies(settings.policies_dir)
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
