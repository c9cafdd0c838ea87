"""Policy files: valid ones load in order; every kind of mistake is refused with file, line and reason."""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from remediator.actions.catalogue import SPECS
from remediator.errors import PolicyError
from remediator.policy.loader import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_POLICIES,
    MAX_TOTAL_BYTES,
    load_dir,
    load_file,
)

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


# --- Hostile files: each is refused quickly, with its file and reason, in bounded memory (issue 12, item 10).

CLI = REPO / ".venv" / "bin" / "remediator"
MEMORY_LIMIT = 1 << 30


def _alias_bomb() -> str:
    # Nine levels of nine aliases: 9**9 (387 million) strings once expanded, from 700 bytes.
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias-bomb": (_alias_bomb, 5, "YAML nodes once aliases are expanded"),
    "deep-sequence": (lambda: "[" * 10_000 + "]" * 10_000 + "\n", 1, "nested more than"),
    "deep-mapping": (lambda: "a: {" * 10_000 + "}" * 10_000 + "\n", 1, "nested more than"),
    "deep-block": (
        lambda: "".join(f"{'  ' * i}a:\n" for i in range(500)) + "  " * 500 + "b: 1\n",
        32,
        "nested more than",
    ),
    "20-MB": (lambda: GOOD + "# padding\n" * 2_000_000, None, "bytes a policy file may hold"),
    "1M-nodes": (lambda: "[" + "0, " * 1_000_000 + "0]\n", None, "bytes a policy file may hold"),
    "300k-nodes-under-1-MiB": (lambda: "[" + "0," * 300_000 + "0]\n", 1, "more than 50000 YAML nodes"),
    "cyclic-alias": (lambda: GOOD + "drill: &d {inject: *d}\n", 13, "alias is used inside its own anchor"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_refused_by_load_dir(tmp_path: Path, case: str) -> None:
    make, line, reason = HOSTILE[case]
    write(tmp_path, make())
    started = time.monotonic()
    with pytest.raises(PolicyError) as info:
        load_dir(tmp_path, SPECS)
    assert time.monotonic() - started < 10
    assert info.value.path == str(tmp_path / "p.yaml")
    assert info.value.line == line, str(info.value)
    assert reason in info.value.reason


@dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mib: float


def run_check(directory: Path, timeout: float = 60.0) -> Child:
    """``remediator check`` as a user runs it, under a 1 GiB address-space limit, with its own peak RSS."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [str(CLI), "check", str(directory)], stdout=out, stderr=err, preexec_fn=limit_memory
        )
        deadline = time.monotonic() + timeout
        # wait4 rather than Popen.wait: the rusage of this one child, not of every child pytest reaped.
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                pytest.fail(f"remediator check {directory} still running after {timeout:g}s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss / 1024)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_check_refuses_hostile_files_without_a_traceback_in_bounded_memory(tmp_path: Path, case: str) -> None:
    make, line, reason = HOSTILE[case]
    write(tmp_path, make())
    child = run_check(tmp_path)
    assert child.returncode == 1, child.stderr[-2000:]
    where = f"{tmp_path / 'p.yaml'}:{line}: " if line is not None else f"{tmp_path / 'p.yaml'}: "
    assert child.stderr.startswith(f"error: {where}"), child.stderr[-2000:]
    assert reason in child.stderr
    assert "Traceback" not in child.stderr
    assert child.max_rss_mib < 300, child.max_rss_mib


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        # PyYAML's reader refuses control characters before it has marks: once a traceback
        ("name: a\x00b\n", 1, "special characters are not allowed"),
        ("name: db\ndescription: \x07\n", 2, "special characters are not allowed"),
        # a constructor's own failure on an odd scalar: once a ValueError or IndexError traceback
        ("name: db\ndescription: !!int ''\n", 2, "cannot read '' as tag:yaml.org,2002:int"),
        ("name: db\ndescription: 2001-02-30\n", 2, "day is out of range"),
        ("name: db\ndescription: " + "1" * 5000 + "\n", 2, "Exceeds the limit"),
        ("name: db\ndescription: !!timestamp x\n", 2, "tag:yaml.org,2002:timestamp"),
        ("name: db\ndescription: !!bool maybe\n", 2, "tag:yaml.org,2002:bool"),
        # a mapping as a key: once a repr of every node under it, through every alias
        ("name: db\n? {a: 1}\n: x\n", 2, "a key is a plain value"),
    ],
)
def test_odd_yaml_is_refused_with_its_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    error = refused(write(tmp_path, text))
    assert error.line == line, str(error)
    assert reason in error.reason


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(GOOD.encode() + b"description: \xff\n")
    error = refused(tmp_path / "p.yaml")
    assert error.line == 13 and "not UTF-8" in error.reason


def test_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    shared = GOOD.replace("  - escalate: oncall\n", "  - escalate: oncall\nlimits: &l {cooldown_s: 60}\n")
    second = shared.replace("name: db", "name: db2").replace("limits: &l {cooldown_s: 60}", "limits: *l")
    # an anchor lives within its document, so the second policy defines its own
    (first,) = load_file(write(tmp_path, shared), SPECS)
    assert first.limits.cooldown_s == 60
    merged = GOOD + "drill: &d {detect_within_s: 5}\nlimits: {<<: {cooldown_s: 7}}\n"
    (policy,) = load_file(write(tmp_path, merged), SPECS)
    assert policy.limits.cooldown_s == 7 and policy.drill.detect_within_s == 5
    del second


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.yaml")
    started = time.monotonic()
    with pytest.raises(PolicyError, match="not a regular file"):
        load_dir(tmp_path, SPECS)
    assert time.monotonic() - started < 5


def test_a_symlink_to_an_endless_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").symlink_to("/dev/zero")
    with pytest.raises(PolicyError, match="not a regular file"):
        load_dir(tmp_path, SPECS)


def test_too_many_files_are_refused(tmp_path: Path) -> None:
    for i in range(MAX_FILES + 1):
        write(tmp_path, "", f"p{i:04}.yaml")
    with pytest.raises(PolicyError, match=f"more than {MAX_FILES} policy files"):
        load_dir(tmp_path, SPECS)


def test_too_many_policies_are_refused(tmp_path: Path) -> None:
    per_file = 100
    for f in range(MAX_POLICIES // per_file + 1):
        docs = [GOOD.replace("name: db", f"name: p{f}-{i}") for i in range(per_file)]
        write(tmp_path, "---\n".join(docs), f"p{f:02}.yaml")
    with pytest.raises(PolicyError, match=f"more than {MAX_POLICIES} policies"):
        load_dir(tmp_path, SPECS)


def test_the_directory_as_a_whole_is_bounded(tmp_path: Path) -> None:
    padding = "# padding\n" * (MAX_FILE_BYTES // 11)
    for i in range(MAX_TOTAL_BYTES // MAX_FILE_BYTES + 1):
        write(tmp_path, GOOD.replace("name: db", f"name: db{i}") + padding, f"p{i}.yaml")
    with pytest.raises(PolicyError, match="bytes together"):
        load_dir(tmp_path, SPECS)


def test_the_escalation_target_is_one_rule() -> None:
    """Intake (a refused target), the runner (a guard's refusal) and approval requests all ask this."""
    from remediator.domain.policies import Policy

    def policy(*steps: dict[str, object]) -> Policy:
        return Policy.model_validate(
            {
                "name": "p",
                "match": ["alertname = A"],
                "target": {"kind": "container", "from_label": "c", "allow": ["db"]},
                "steps": list(steps),
            }
        )

    act = {"act": "container.restart", "verify": {"resolved_within_s": 1}}
    two = policy({"escalate": "first"}, act, {"escalate": "second"})
    assert (two.escalation_target(), two.escalation_target(1), two.escalation_target(2)) == (
        "first",
        "second",
        "second",
    )
    only_before = policy({"escalate": "first"}, act)
    assert only_before.escalation_target(1) == "first"  # none later: the policy's first
    assert policy(act).escalation_target() == "log"
