"""Pure functions from an alert's labels to the policy that takes it and the target it names."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from remediator.domain.policies import DOCKER_KINDS, Policy
from remediator.errors import TargetRefused
from remediator.settings import DEFAULT_DOCKER_HOST


@dataclass(frozen=True)
class Match:
    """The policy an alert fell to, its target and the Docker host it lives on (or why either was refused)."""

    policy: Policy
    target: str
    refused: str = ""
    host: str = DEFAULT_DOCKER_HOST
    """The configured Docker host; for a refused host, what the label named (recorded, never connected to).
    ``default`` for a target that lives on no Docker host (PostgreSQL)."""


class PolicyIndex:
    """The policies that could take an alert, looked up by its alertname. A policy with an ``alertname = X``
    matcher can only take alerts named X; most alerts are no policy's business, and intake tries every alert.
    ``candidates`` keeps the file-name order, so the first policy still wins."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        pinned: dict[str, list[int]] = {}
        anywhere: list[int] = []
        for i, policy in enumerate(policies):
            names = [m.value for m in policy.match if m.label == "alertname" and m.op == "="]
            if names:
                pinned.setdefault(names[0], []).append(i)
            else:
                anywhere.append(i)
        self._anywhere = tuple(policies[i] for i in anywhere)
        self._by_name = {
            name: tuple(policies[i] for i in sorted(ids + anywhere)) for name, ids in pinned.items()
        }

    def candidates(self, labels: dict[str, str]) -> Sequence[Policy]:
        return self._by_name.get(labels.get("alertname", ""), self._anywhere)


def first_policy(policies: Sequence[Policy], labels: dict[str, str]) -> Policy | None:
    """The first policy (file-name order) whose every matcher holds; None when no policy takes the alert."""
    return next((p for p in policies if p.matches(labels)), None)


def target_of(policy: Policy, labels: dict[str, str]) -> str:
    """The target named by the policy's ``from_label``; raises TargetRefused unless the allow list admits it."""
    label = policy.target.from_label
    value = labels.get(label)
    if not value:
        raise TargetRefused(f"label {label!r} is missing or empty")
    if not policy.target.admits(value):
        raise TargetRefused(f"{label}={value!r} is outside the allow list of policy {policy.name!r}")
    return value


def host_of(policy: Policy, labels: dict[str, str], hosts: Collection[str] | None = None) -> str:
    """The Docker host the alert's target lives on: the policy's fixed ``host``, or the one its label names
    (through the pattern and the host allow list), and only a host of ``hosts`` (the configured ones; None:
    not checked, for ``check`` and ``simulate`` without settings). Raises TargetRefused, naming what the label
    held, otherwise."""
    spec = policy.target.host
    if policy.target.kind not in DOCKER_KINDS or spec is None:
        name = DEFAULT_DOCKER_HOST
    elif isinstance(spec, str):
        name = spec
    else:
        value = labels.get(spec.from_label)
        if not value:
            raise TargetRefused(f"host label {spec.from_label!r} is missing or empty")
        found = spec.name_in(value)
        if found is None:
            raise TargetRefused(
                f"{spec.from_label}={value!r} does not match the host pattern of policy {policy.name!r}"
            )
        if not spec.admits(found):
            raise TargetRefused(
                f"host {found!r} ({spec.from_label}={value!r}) is outside the host allow list of policy {policy.name!r}"
            )
        name = found
    if hosts is not None and policy.target.kind in DOCKER_KINDS and name not in hosts:
        raise TargetRefused(f"docker host {name!r} is not configured (REMEDIATOR_DOCKER__HOSTS)")
    return name


def _named_host(policy: Policy, labels: dict[str, str]) -> str:
    """What the alert named as the host, for the record of a refusal."""
    spec = policy.target.host
    if spec is None or isinstance(spec, str):
        return spec or DEFAULT_DOCKER_HOST
    value = labels.get(spec.from_label, "")
    return spec.name_in(value) or value


def match_alert(
    policies: Sequence[Policy], labels: dict[str, str], hosts: Collection[str] | None = None
) -> Match | None:
    """The match for one alert. A refused target or host still yields a Match, so the refusal is recorded and
    escalated."""
    policy = first_policy(policies, labels)
    if policy is None:
        return None
    raw = labels.get(policy.target.from_label, "")
    try:
        target = target_of(policy, labels)
    except TargetRefused as exc:
        return Match(policy=policy, target=raw, refused=str(exc), host=_named_host(policy, labels))
    try:
        host = host_of(policy, labels, hosts)
    except TargetRefused as exc:
        return Match(policy=policy, target=target, refused=str(exc), host=_named_host(policy, labels))
    return Match(policy=policy, target=target, host=host)


def hosts_out_of_reach(policies: Sequence[Policy], configured: Collection[str]) -> list[str]:
    """Policies that name a Docker host no setting configures (each of their alerts would be refused and
    escalated): said at start and at each reload rather than at the first incident."""
    problems: list[str] = []
    for policy in policies:
        spec = policy.target.host
        if policy.target.kind not in DOCKER_KINDS:
            continue
        if spec is None or isinstance(spec, str):
            name = spec or DEFAULT_DOCKER_HOST
            if name not in configured:
                problems.append(f"policy {policy.name} acts on Docker host {name!r}, which is not configured")
        elif not any(spec.admits(name) for name in configured):
            problems.append(f"policy {policy.name}: no configured Docker host is in its host allow list")
    return problems
