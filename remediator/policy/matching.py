"""Pure functions from an alert's labels to the policy that takes it and the target it names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from remediator.domain.policies import Policy
from remediator.errors import TargetRefused


@dataclass(frozen=True)
class Match:
    """The policy an alert fell to, and its target (or why the target was refused)."""

    policy: Policy
    target: str
    refused: str = ""


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


def match_alert(policies: Sequence[Policy], labels: dict[str, str]) -> Match | None:
    """The match for one alert. A refused target still yields a Match, so the refusal is recorded and escalated."""
    policy = first_policy(policies, labels)
    if policy is None:
        return None
    try:
        return Match(policy=policy, target=target_of(policy, labels))
    except TargetRefused as exc:
        raw = labels.get(policy.target.from_label, "")
        return Match(policy=policy, target=raw, refused=str(exc))
