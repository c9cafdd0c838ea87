"""Property-based fuzzing of the policy loader and of policy regexes (issue 12).

Whatever the text of a policy file (random YAML-ish text, or a shipped policy with characters, lines, regexes
and unicode mutated), ``load_dir`` either loads it or raises a PolicyError that names the file: never another
exception, never a traceback, and within a deadline. Whatever a regex, compiling it through the RE2 wrapper
either refuses it or gives a pattern whose matching stays fast on hostile text.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.actions.catalogue import SPECS
from remediator.domain.patterns import PatternError, compile_pattern
from remediator.domain.policies import Policy
from remediator.errors import PolicyError
from remediator.policy.loader import load_dir
from remediator.policy.matching import match_alert

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {path.name: path.read_text() for path in sorted((REPO / "policies").glob("*.yaml"))}

# REMEDIATOR_FUZZ_EXAMPLES=20000 for a long hunt; the default keeps the four tests under ~15 s on a busy box.
FUZZ = settings(
    max_examples=int(os.environ.get("REMEDIATOR_FUZZ_EXAMPLES", "400")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

YAML_CHARS = st.sampled_from(list("abcxyz019 \n\t-:,[]{}&*!|>'\"#%@?`=~\\.<$^()+"))
ANY_CHAR = st.characters(codec="utf-8") | st.characters(min_codepoint=0, max_codepoint=0x1F)
HOSTILE_TEXTS = [
    "a" * 34 + "!",
    "a" * 20_000 + "!",
    "ab" * 10_000,
    "\u00e9" * 10_000 + "\n",
    "-" * 20_000 + "db",
]
# Nested quantifiers first: a backtracking engine takes hours over them on HOSTILE_TEXTS.
_PIECES = r"""(a+)+ (a|aa)* ([a-z0-9]+-?)+ (.*)* a b - . * + ? | ( ) [ ] { } ^ $ \ 1 3 , (?: (?= (?! (?<= (?P<n>
    (?P=n) \1 \d \w \s \b \pL \C \Z \z [^a] [a-z] {2,5} {1000} {,3} *+ ++ (?i) (?s) (?x) \Q \E"""
REGEX_PIECES = st.sampled_from([*_PIECES.split(), "\u00e9", "\u0663", "\x00", "\ud800", " "])
regexes = st.lists(REGEX_PIECES, max_size=25).map("".join) | st.text(max_size=30)


def load(text: str) -> list[Policy]:
    """Load ``text`` as the one policy file of a fresh directory; only PolicyError naming it may escape."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "p.yaml"
        # A lone surrogate is written as the bytes it would be on disk, which are not UTF-8.
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            return load_dir(Path(directory), SPECS)
        except PolicyError as exc:
            assert str(path) in str(exc), exc
            return []


@FUZZ
@given(st.text(YAML_CHARS | ANY_CHAR, max_size=400))
def test_random_text_loads_or_is_refused_with_its_file(text: str) -> None:
    load(text)


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(sorted(SHIPPED.values())))
    for _ in range(draw(st.integers(1, 6))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["insert", "delete", "replace", "line-drop", "line-dup", "line-swap"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        row = draw(st.integers(0, len(lines) - 1))
        if kind == "insert":
            text = text[:at] + draw(st.text(YAML_CHARS | ANY_CHAR, min_size=1, max_size=8)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "replace":
            text = text[:at] + draw(YAML_CHARS | ANY_CHAR) + text[at + 1 :]
        elif kind == "line-drop":
            text = "\n".join(lines[:row] + lines[row + 1 :])
        elif kind == "line-dup":
            text = "\n".join(lines[: row + 1] + lines[row:])
        else:
            other = draw(st.integers(0, len(lines) - 1))
            lines[row], lines[other] = lines[other], lines[row]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated_policy())
def test_mutated_shipped_policies_load_or_are_refused_with_their_file(text: str) -> None:
    load(text)


@FUZZ
@given(st.sampled_from(sorted(SHIPPED.values())), regexes, regexes, st.sampled_from(["=~", "!~"]))
def test_random_regexes_in_matchers_and_allow_lists(text: str, matcher: str, allow: str, op: str) -> None:
    # JSON strings are YAML double-quoted scalars: the regexes reach the policy exactly as drawn.
    lines = text.split("\n")
    lines = [
        f"  allow: [{json.dumps(allow)}]" if line.startswith("  allow:") else line
        for line in lines
        if not line.startswith("  - severity")
    ]
    at = lines.index("match:") + 1
    lines.insert(at, "  - " + json.dumps(f'job {op} "{matcher}"'))
    for policy in load("\n".join(lines)):
        alertname = next((m.value for m in policy.match if m.label == "alertname"), "")
        for hostile in HOSTILE_TEXTS:
            # a label such as a backtracking engine would take hours over, within the deadline here
            match_alert([policy], {"alertname": alertname, "job": hostile, policy.target.from_label: hostile})


@FUZZ
@given(regexes, st.text(max_size=60))
def test_random_regexes_compile_or_are_refused_and_never_backtrack(source: str, text: str) -> None:
    try:
        pattern = compile_pattern(source)
    except PatternError:
        return
    for subject in [text, *HOSTILE_TEXTS]:
        assert isinstance(pattern.fullmatch(subject), bool)
        assert isinstance(pattern.search(subject), bool)
