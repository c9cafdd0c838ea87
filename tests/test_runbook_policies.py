"""The runbook policies (docs/runbooks.md) and their alert rules, checked with the real tools that read them.

- `promtool check rules` and `promtool test rules` on deploy/prometheus/rules/runbooks.yml;
- every alert those tests expect is taken by the shipped policy of that name, naming an admitted target;
- every shipped policy loads, and the coverage table names only policies that exist;
- the decisions the table promises hold in the files: no volume is ever pruned by the shipped policy, a
  failing config check stops the proxy ladder, corruption is never acted on, FLUSHDB is never run.
"""

from __future__ import annotations

import re
import subprocess

import yaml
from helpers import REPO
from realparts import require

from remediator.app import load_policies
from remediator.policy.matching import match_alert
from remediator.settings import Settings

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "runbooks.yml"
RULE_TESTS = RULES_DIR / "runbooks.test.yml"

# alert -> the shipped policy that takes it
RUNBOOK_ALERTS = {
    "DiskSpaceLow": "disk-space-low",
    "ProxyDown": "proxy-down",
    "ContainerMemoryHigh": "container-memory-high",
    "ServiceDown": "service-down",
    "PostgresSlowQueries": "slow-queries",
    "PostgresChecksumFailure": "database-corruption",
    "RedisMemoryHigh": "redis-memory-high",
    "BackupTooOld": "backup-stale",
    "SSLCertExpiringSoon": "ssl-cert-renew",
    "SSLCertServedStale": "ssl-cert-reload",
}


def promtool(*args: str) -> str:
    done = subprocess.run(
        [require("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_rules_pass_promtool_and_their_own_tests() -> None:
    assert f"SUCCESS: {len(RUNBOOK_ALERTS)} rules found" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_the_rule_tests_expect_is_taken_by_its_policy_with_an_admitted_target() -> None:
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert rules == set(RUNBOOK_ALERTS)
    expected: dict[str, list[dict[str, str]]] = {}
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            for exp in check["exp_alerts"]:
                expected.setdefault(check["alertname"], []).append(exp["exp_labels"])
    assert set(expected) == set(RUNBOOK_ALERTS), "every alert needs a firing case in runbooks.test.yml"

    policies = load_policies(Settings(policies_dir=REPO / "policies"))
    for alertname, policy_name in RUNBOOK_ALERTS.items():
        for labels in expected[alertname]:
            match = match_alert(policies, labels)
            assert match is not None, f"no shipped policy takes {labels}"
            assert match.policy.name == policy_name, (labels, match.policy.name)
            assert not match.refused, match.refused
            assert match.target == labels[match.policy.target.from_label]


def test_the_coverage_table_names_only_shipped_policies_and_every_runbook_alert() -> None:
    policies = {p.name: p for p in load_policies(Settings(policies_dir=REPO / "policies"))}
    table = (REPO / "docs" / "runbooks.md").read_text()
    named = set(re.findall(r"\| `([a-z][a-z0-9-]+)`:", table))
    assert named and named <= set(policies), named - set(policies)
    assert set(RUNBOOK_ALERTS.values()) <= named
    for alertname in RUNBOOK_ALERTS:
        assert f"`{alertname}`" in table


def test_the_decisions_hold_in_the_shipped_policies() -> None:
    policies = {p.name: p for p in load_policies(Settings(policies_dir=REPO / "policies"))}

    prune = policies["disk-space-low"].steps[0]
    assert prune.name == "docker.prune" and "volumes" not in prune.params
    assert prune.params["containers_min_age_s"] >= 3600 and prune.params["images_min_age_s"] >= 86400

    proxy = policies["proxy-down"].steps
    check = next(i for i, s in enumerate(proxy) if s.name == "container.check")
    assert proxy[check].must_pass and proxy[check].params["argv"] == ["nginx", "-t"]
    assert all(s.kind != "act" for s in proxy[:check]), "nothing acts before the config check"

    reload = policies["ssl-cert-reload"].steps
    check = next(i for i, s in enumerate(reload) if s.name == "container.check")
    assert reload[check].must_pass and reload[check].params["argv"] == ["nginx", "-t"]
    assert all(s.kind != "act" for s in reload[:check]), "nothing acts before the config check"
    assert all(s.name != "container.restart" for s in reload), "a reload loads certificates; never a restart"
    renew = [s for s in policies["ssl-cert-renew"].steps if s.kind == "act"]
    assert [s.params["argv"][:2] for s in renew] == [["certbot", "renew"]]
    assert not {"--force-renewal", "--force", "certonly"} & set(renew[0].params["argv"])

    assert [s.kind for s in policies["database-corruption"].steps] == ["diagnose", "escalate"]
    assert [s.kind for s in policies["redis-memory-high"].steps] == ["diagnose", "escalate"]
    for policy in policies.values():
        for step in policy.steps:
            argv = [a.upper() for a in step.params.get("argv", [])]
            assert "FLUSHDB" not in argv and "FLUSHALL" not in argv, policy.name
