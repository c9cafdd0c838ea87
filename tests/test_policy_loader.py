"""Policy files: valid ones load in order; every kind of mistake is refused with file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.actions.catalogue import SPECS
from remediator.errors import PolicyError
from remediator.policy.loader import load_dir, load_file

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: db
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["db"]
steps:
  - act: container.restart
    with: {timeout_s: 5}
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(path: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_file(path, SPECS)
    return info.value


def test_the_shipped_policies_load() -> None:
    policies = load_dir(REPO / "policies", SPECS)
    names = {p.name for p in policies}
    assert {"database-down", "high-error-rate"} <= names
    for policy in policies:
        assert policy.source.startswith(str(REPO / "policies"))


def test_a_good_policy_loads_with_its_source(tmp_path: Path) -> None:
    (policy,) = load_file(write(tmp_path, GOOD), SPECS)
    assert policy.name == "db"
    assert policy.source == f"{tmp_path / 'p.yaml'}:1"
    assert [s.kind for s in policy.steps] == ["act", "escalate"]
    assert policy.steps[0].params == {"timeout_s": 5}


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        (
            "  from_label: container\n",
            "  from_label: container\n  form_label: x\n",
            7,
            "form_label: Extra inputs",
        ),
        ("  - alertname = DatabaseDown\n", "  - alertname == DatabaseDown\n", 3, "not a matcher"),
        ("  - alertname = DatabaseDown\n", '  - alertname =~ "(unclosed"\n', 3, "bad regex"),
        ("    verify: {resolved_within_s: 60}\n", "", 9, "an act step needs verify"),
        ("  - act: container.restart\n", "  - act: container.reboot\n", 9, "unknown act 'container.reboot'"),
        ("    with: {timeout_s: 5}\n", "    with: {timeout_s: 5, tail: 3}\n", 10, "tail: Extra inputs"),
        ("    with: {timeout_s: 5}\n", "    with: {timeout_s: -1}\n", 10, "timeout_s"),
        ('  allow: ["db"]\n', '  allow: ["(db"]\n', 7, "is not a regex"),
        ("name: db\n", "name: Bad Name\n", 1, "name must be lower-case"),
        ("  kind: container\n", "  kind: vm\n", 5, "target.kind"),
        (
            "  kind: container\n",
            "  kind: postgres\n",
            9,
            "container.restart acts on a container target, not postgres",
        ),
        ("{resolved_within_s: 60}", "{within_s: 60}", 11, "within_s needs an http or prometheus check"),
        ("{resolved_within_s: 60}", "{resolved_within_s: 60, prometheus: {query: up}}", 11, "takes within_s"),
        (
            "{resolved_within_s: 60}",
            "{within_s: 60, http: {url: 'ftp://x'}}",
            11,
            "String should match pattern",
        ),
        (
            "  - escalate: oncall\n",
            "  - escalate: oncall\n    act: container.restart\n",
            12,
            "exactly one of",
        ),
    ],
)
def test_mistakes_are_refused_with_line_and_reason(
    tmp_path: Path, old: str, new: str, line: int, reason: str
) -> None:
    assert old in GOOD
    error = refused(write(tmp_path, GOOD.replace(old, new)))
    assert error.path == str(tmp_path / "p.yaml")
    assert error.line == line, str(error)
    assert reason in error.reason
    assert str(error).startswith(f"{tmp_path / 'p.yaml'}:{line}: ")


def test_broken_yaml_names_its_line(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD.replace("  kind: container\n", "  kind: [container\n")))
    assert error.line is not None and 5 <= error.line <= 7
    assert "not valid YAML" in error.reason


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    error = refused(write(tmp_path, GOOD + "name: other\n"))
    assert error.line == 13
    assert "duplicate key 'name'" in error.reason


def test_a_policy_must_be_a_mapping(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "- just\n- a list\n"))
    assert "a policy is a mapping" in error.reason


def test_duplicate_policy_names_across_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(PolicyError) as info:
        load_dir(tmp_path, SPECS)
    assert info.value.path == str(tmp_path / "b.yaml")
    assert "already used at" in info.value.reason


def test_several_documents_in_one_file_keep_their_order(tmp_path: Path) -> None:
    second = GOOD.replace("name: db", "name: db2")
    policies = load_file(write(tmp_path, GOOD + "---\n" + second), SPECS)
    assert [p.name for p in policies] == ["db", "db2"]
    assert policies[1].source.endswith(":14")


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a directory"):
        load_dir(tmp_path / "nope")
