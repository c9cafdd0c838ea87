"""Every regex a policy file holds (matchers, the target allow list, the HTTP check's body) runs on RE2.

Python's ``re`` backtracks: ``(a+)+$`` against 34 ``a`` and a ``!`` takes minutes, and matching runs on the
event loop, so one careless pattern froze the daemon. RE2 (``google-re2``) matches in time linear in the
text, and it is the syntax Alertmanager itself uses (Go's ``regexp``), so a matcher copied from an
Alertmanager route means the same here. What that means for whoever writes a policy:

* what RE2 cannot do in linear time does not exist in its syntax: backreferences (``\\1``, ``(?P=name)``),
  lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``), possessive quantifiers, atomic groups. They are refused
  at load with that reason. The installed ``google-re2`` raises on them and never falls back to ``re``;
  ``compile_pattern`` also insists on an RE2 program size, so a binding that fell back would be refused too.
* as in Go, ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII, ``a{,3}`` is literal text, the end of the text is
  ``\\z`` (``\\Z`` is refused), and ``\\C`` (one byte), which C++ RE2 has and Go does not, is refused.
* linear is not free: the work per character grows with the compiled program when RE2's DFA outgrows its
  memory and falls back to simulating the program. A pattern is at most ``MAX_PATTERN_CHARS`` long and
  ``MAX_PROGRAM_SIZE`` instructions (``[a-z0-9.-]{1,253}`` is about 1,000; ``.{1000}`` is 8,000 and refused),
  RE2 gets ``_MAX_MEM`` per pattern, and the loader charges every pattern of a policy directory to one
  ``RegexBudget``. Measured at the limit: a full match of a 1 MiB label takes milliseconds; the worst
  contrived body pattern takes about 0.4 s to search the 64 KiB an HTTP check reads.

Groups never capture (nobody reads them): that keeps RE2 on its DFA instead of its slower engines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import re2

MAX_PATTERN_CHARS = 1_000
MAX_PROGRAM_SIZE = 5_000
"""Instructions of one compiled pattern: ``[a-z0-9.-]{1,253}`` is about 1,000, ``.{1000}`` 8,000."""
MAX_TOTAL_PROGRAM_SIZE = 200_000
"""Instructions of every pattern of one policy directory together."""
_MAX_MEM = 1 << 20
_REMEMBERED_TEXTS = 16_384
_REMEMBERED_CHARS = 256
_ANSWERS: dict[tuple[str, str], bool] = {}
"""``Pattern.fullmatch``'s answers for the short texts seen lately, by (pattern source, text): a storm names the
same few targets in every alert, and one call through the RE2 binding costs microseconds. One table for every
pattern, bounded in entries and text length (a few MiB at most, whatever the labels), keyed by the source (every
pattern is compiled with the same options, so the same source gives the same answer, across reloads too)."""

_OPTIONS = re2.Options()
_OPTIONS.max_mem = _MAX_MEM
_OPTIONS.never_capture = True
# A refused pattern is reported to the user by the loader; RE2's own stderr line would say it twice.
_OPTIONS.log_errors = False

_SURROGATE = re.compile("[\ud800-\udfff]")

# RE2's message for a construct it lacks, and how to say that to whoever wrote the policy.
_UNSUPPORTED = (
    (re.compile(r"invalid escape sequence: \\[1-9]"), "RE2 syntax has no backreferences"),
    (re.compile(r"invalid escape sequence: \\[kg]"), "RE2 syntax has no backreferences"),
    (re.compile(r"invalid perl operator: \(\?<?[=!]"), "RE2 syntax has no lookaround"),
    (re.compile(r"invalid perl operator: \(\?>"), "RE2 syntax has no atomic groups"),
    (re.compile(r"bad repetition operator: .*\+$"), "RE2 syntax has no possessive quantifiers"),
    (re.compile(r"invalid escape sequence: \\Z"), r"RE2 writes the end of the text \z, not \Z"),
    (re.compile(r"invalid perl operator: \(\?[a-zA-Z]"), "RE2 knows only the flags i, m, s and U"),
)

_NAMED_BACKREFERENCE = re.compile(r"\(\?P[=>]")


class PatternError(ValueError):
    """A pattern refused at load; the message is the reason, without the pattern's location."""


@dataclass(frozen=True)
class Pattern:
    """One compiled policy regex. Equal and hashed by its source, so policies compare by what they say."""

    source: str
    _regexp: Any = field(compare=False, repr=False)
    cost: int = field(compare=False, repr=False)
    """Instructions of the compiled program: the work per character of a match, roughly."""

    def fullmatch(self, text: str) -> bool:
        """True when the pattern matches all of ``text``: Alertmanager's ``^(?:pattern)$``."""
        key = (self.source, text)
        known = _ANSWERS.get(key)
        if known is not None:
            return known
        matched = self._regexp.fullmatch(_utf8(text)) is not None
        if len(text) <= _REMEMBERED_CHARS:
            if len(_ANSWERS) >= _REMEMBERED_TEXTS:
                _ANSWERS.clear()
            _ANSWERS[key] = matched
        return matched

    def search(self, text: str) -> bool:
        """True when the pattern matches somewhere in ``text``."""
        return self._regexp.search(_utf8(text)) is not None

    @cached_property
    def groups(self) -> dict[str, int]:
        """The named groups, ``(?P<name>...)``, and their numbers. (The pattern is compiled from UTF-8 bytes,
        so RE2 keys them by bytes; decoded once here.)"""
        return {
            (name.decode("utf-8") if isinstance(name, bytes) else str(name)): number
            for name, number in self._regexp.groupindex.items()
        }

    def extract(self, text: str, group: str) -> str | None:
        """What the named ``group`` captured when the pattern matches all of ``text``; None otherwise."""
        found = self._regexp.fullmatch(_utf8(text))
        index = self.groups.get(group)
        if found is None or index is None:
            return None
        value = found.group(index)
        return None if value is None else bytes(value).decode("utf-8", "replace")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON "\ud800") has no UTF-8; Go reads invalid text as U+FFFD, and so do we.
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def _any_byte_escape(source: str) -> bool:
    # RE2 in C++ has \C (one byte, even inside a UTF-8 character); Go does not, so a matcher that used it
    # would mean something else to Alertmanager. Text between \Q and \E is literal.
    i = 0
    while i < len(source):
        if source[i] != "\\":
            i += 1
        elif source[i + 1 : i + 2] == "Q":
            end = source.find("\\E", i + 2)
            i = len(source) if end < 0 else end + 2
        elif source[i + 1 : i + 2] == "C":
            return True
        else:
            i += 2
    return False


def compile_pattern(source: str) -> Pattern:
    """``source`` compiled by RE2, or PatternError saying why it is refused."""
    if len(source) > MAX_PATTERN_CHARS:
        raise PatternError(f"is {len(source)} characters long, at most {MAX_PATTERN_CHARS}")
    if _SURROGATE.search(source) is not None:
        raise PatternError("holds a lone surrogate (\\ud800-\\udfff), which is not text")
    if _any_byte_escape(source):
        raise PatternError(r"is not supported: \C (any byte) is not in Go's RE2 syntax")
    try:
        compiled = re2.compile(source, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        # RE2 cuts its message at "(?P", so a named backreference is recognised in the pattern itself.
        if message.endswith("(?P") and _NAMED_BACKREFERENCE.search(source):
            raise PatternError("is not supported: RE2 syntax has no backreferences ((?P=name))") from exc
        for found, reason in _UNSUPPORTED:
            if found.search(message):
                raise PatternError(f"is not supported: {reason} ({message})") from exc
        if message.startswith("pattern too large"):
            raise PatternError(f"is too large: it needs more than {_MAX_MEM >> 20} MiB to compile") from exc
        raise PatternError(f"is not a regex: {message}") from exc
    cost = getattr(compiled, "programsize", None)
    if not isinstance(cost, int):
        raise PatternError("was not compiled by RE2 (the re2 module fell back to backtracking)")
    if cost > MAX_PROGRAM_SIZE:
        raise PatternError(
            f"is too complex: it compiles to {cost} RE2 instructions, at most {MAX_PROGRAM_SIZE} "
            "(every character matched costs up to that many steps)"
        )
    return Pattern(source, compiled, cost)


class RegexBudget:
    """The instructions every pattern of one policy directory may compile to, together.

    The loader hands one to validation (pydantic's context, key ``regex_budget``); each regex validator
    charges it, so a file of a hundred thousand patterns is refused at the first one over, not after
    compiling them all.
    """

    def __init__(self, instructions: int = MAX_TOTAL_PROGRAM_SIZE) -> None:
        self.left = instructions
        self.total = instructions

    def charge(self, pattern: Pattern) -> None:
        if pattern.cost > self.left:
            raise PatternError(
                f"goes over the budget of {self.total} RE2 instructions for all the policies' regexes together"
            )
        self.left -= pattern.cost


def charge(context: Any, pattern: Pattern) -> Pattern:
    """Charge ``pattern`` to the budget in a pydantic validation context, if there is one."""
    budget = context.get("regex_budget") if isinstance(context, dict) else None
    if isinstance(budget, RegexBudget):
        budget.charge(pattern)
    return pattern
