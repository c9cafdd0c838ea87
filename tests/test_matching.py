"""Matchers behave as Alertmanager's; a target is admitted only by the allow list, never from free text."""

from __future__ import annotations

import pytest

from remediator.domain.policies import Matcher, Policy
from remediator.errors import TargetRefused
from remediator.policy.matching import PolicyIndex, first_policy, match_alert, target_of


def policy(name: str, match: list[str], allow: list[str] | None = None) -> Policy:
    return Policy.model_validate(
        {
            "name": name,
            "match": match,
            "target": {
                "kind": "container",
                "from_label": "container",
                "allow": allow or ["db", "web-[0-9]+"],
            },
            "steps": [{"escalate": "oncall"}],
        }
    )


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ("alertname = DatabaseDown", {"alertname": "DatabaseDown"}, True),
        ("alertname = DatabaseDown", {"alertname": "DatabaseDownX"}, False),
        ('alertname="DatabaseDown"', {"alertname": "DatabaseDown"}, True),
        ("severity != info", {"severity": "critical"}, True),
        ("severity != info", {"severity": "info"}, False),
        ("severity != info", {}, True),
        ('severity =~ "critical|page"', {"severity": "page"}, True),
        # anchored like Alertmanager: the regex must match the whole value
        ('severity =~ "critical|page"', {"severity": "paged"}, False),
        ('severity =~ "crit"', {"severity": "critical"}, False),
        ('severity !~ "info|none"', {"severity": "warning"}, True),
        ('severity !~ "info|none"', {"severity": "none"}, False),
        # a missing label reads as the empty string
        ('team =~ ".*"', {}, True),
        ('team = ""', {}, True),
        ('team =~ ".+"', {}, False),
        (r'msg = "say \"hi\""', {"msg": 'say "hi"'}, True),
    ],
)
def test_matchers_follow_alertmanager(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is expected


@pytest.mark.parametrize("bad", ["alertname", "= x", "1abc = x", 'a =~ "("', "a == b"])
def test_bad_matchers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Matcher.parse(bad)


def test_every_matcher_must_hold_and_the_first_policy_wins() -> None:
    a = policy("a", ["alertname = DatabaseDown", "severity = critical"])
    b = policy("b", ["alertname = DatabaseDown"])
    assert first_policy([a, b], {"alertname": "DatabaseDown", "severity": "critical"}) is a
    assert first_policy([a, b], {"alertname": "DatabaseDown", "severity": "warning"}) is b
    assert first_policy([a, b], {"alertname": "Other"}) is None


def test_the_index_finds_what_trying_every_policy_finds() -> None:
    policies = [
        policy("named", ["alertname = DatabaseDown", "severity = critical"]),
        policy("by-regex", ['alertname =~ "Database.*"']),
        policy("also-named", ["alertname = DatabaseDown"]),
        policy("any-critical", ["severity = critical"]),
        policy("other", ["alertname = HighQueueDepth", "alertname != x"]),
    ]
    index = PolicyIndex(policies)
    for name in ("DatabaseDown", "DatabaseSlow", "HighQueueDepth", "Unknown", ""):
        for severity in ("critical", "warning"):
            labels = {"alertname": name, "severity": severity} if name else {"severity": severity}
            assert first_policy(index.candidates(labels), labels) is first_policy(policies, labels), labels
    # the order of the files still decides: "named" comes before the regex and the unpinned policy
    assert (
        first_policy(
            index.candidates({"alertname": "DatabaseDown", "severity": "critical"}),
            {"alertname": "DatabaseDown", "severity": "critical"},
        )
        is policies[0]
    )


@pytest.mark.parametrize("value", ["db", "web-1", "web-42"])
def test_allowed_targets_are_admitted(value: str) -> None:
    assert target_of(policy("a", ["alertname = X"]), {"container": value}) == value


@pytest.mark.parametrize(
    "value",
    ["db; rm -rf /", "db\n", "web-1 && reboot", "$(id)", "../db", "web-", "xdb", "dbx", "db ", "-db"],
)
def test_targets_outside_the_allow_list_are_refused(value: str) -> None:
    with pytest.raises(TargetRefused, match="outside the allow list"):
        target_of(policy("a", ["alertname = X"]), {"container": value})


def test_even_a_permissive_allow_list_never_admits_shell_text() -> None:
    permissive = policy("a", ["alertname = X"], allow=[".*"])
    assert target_of(permissive, {"container": "anything-goes_1.2"}) == "anything-goes_1.2"
    with pytest.raises(TargetRefused):
        target_of(permissive, {"container": "db; rm -rf /"})


def test_a_missing_target_label_is_refused() -> None:
    with pytest.raises(TargetRefused, match="missing"):
        target_of(policy("a", ["alertname = X"]), {"alertname": "X"})


def test_a_refused_target_still_matches_so_it_can_escalate() -> None:
    match = match_alert([policy("a", ["alertname = X"])], {"alertname": "X", "container": "db; rm -rf /"})
    assert match is not None
    assert match.refused and match.target == "db; rm -rf /"
