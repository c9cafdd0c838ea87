"""A remediation policy: which alerts it takes, which target it may touch, and the ladder of steps to run.

These are the validated, read-only objects that ``policy.loader`` builds from ``policies/*.yaml``. The schema
refuses unknown keys, so a typo in a policy fails at load instead of being silently ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from remediator.domain.patterns import Pattern, PatternError, charge, compile_pattern
from remediator.settings import HOST_NAME

# Applied to the stripped text, and each part starts where the one before cannot go on: the former
# ``\s*(.*?)\s*$`` was quadratic in a run of inner blanks (a minute for 100k), and policy files are input.
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\S.*)?")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Names a target may take whatever the allow list says: what Docker accepts for a container or service name,
# and a PostgreSQL identifier. A second fence behind the allow list; shells and query strings never see it.
SAFE_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,253}$")
# What a Docker host may be named in the settings (remediator.settings.HOST_NAME), so a name from a label that
# is not one is refused before any lookup.
SAFE_HOST = re.compile(HOST_NAME)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        body = raw[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    return raw


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager matcher: ``label OP value``, OP one of ``=``, ``!=``, ``=~``, ``!~``.

    As in Alertmanager, a regex must match the whole value (it is anchored), and a missing label reads as "".
    Regexes are RE2, as in Alertmanager (see ``domain.patterns``); a value that compiles only once wrapped in
    Alertmanager's ``^(?:...)$`` (such as ``a)|(b``) is refused rather than given that odd meaning.
    """

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    pattern: Pattern | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~") and self.pattern is None:
            object.__setattr__(self, "pattern", compile_pattern(self.value))

    @classmethod
    def parse(cls, text: str) -> Matcher:
        found = _MATCHER.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"not a matcher: {_shown(text)} (expected: label = value, !=, =~ or !~)")
        label, op, raw = found.group(1), found.group(2), found.group(3) or ""
        if raw[:1] in ("=", "~", "!"):
            raise ValueError(f"not a matcher: {_shown(text)} (quote a value that starts with {raw[0]!r})")
        value = _unquote(raw)
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = compile_pattern(value)
            except PatternError as exc:
                raise ValueError(f"bad regex in matcher {_shown(text)}: {exc}") from exc
        return cls(label=label, op=op, value=value, pattern=pattern)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.pattern is None:
            return (actual == self.value) == (self.op == "=")
        return self.pattern.fullmatch(actual) == (self.op == "=~")

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 200 else f"{text[:200]!r}... ({len(text)} characters)"


def _matcher(raw: object, info: ValidationInfo) -> object:
    if not isinstance(raw, str):
        return raw
    matcher = Matcher.parse(raw)
    if matcher.pattern is not None:
        try:
            charge(info.context, matcher.pattern)
        except PatternError as exc:
            raise ValueError(f"bad regex in matcher {_shown(raw)}: {exc}") from exc
    return matcher


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


TargetKind = Literal["container", "compose-service", "swarm-service", "postgres", "docker-host"]


@dataclass(frozen=True)
class ActionSpec:
    """What the loader must know of an action to refuse a wrong policy, without importing any backend."""

    kind: Literal["act", "diagnose"]
    target_kinds: frozenset[str]
    params: type[BaseModel]


def _allow_patterns(sources: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    for source in sources:
        try:
            charge(info.context, compile_pattern(source))
        except PatternError as exc:
            raise ValueError(f"allow pattern {_shown(source)} {exc}") from exc
    return sources


DOCKER_KINDS = frozenset({"container", "compose-service", "swarm-service", "docker-host"})
"""Target kinds that live on a Docker host (``target.host`` picks which)."""


class HostFromLabel(_Frozen):
    """The Docker host read from an alert label (``instance: web-1:9100``), admitted by its own allow list.

    The name is only ever looked up among the hosts configured in the settings (REMEDIATOR_DOCKER__HOSTS):
    a label selects one of them or is refused; it never becomes a URL."""

    from_label: str = Field(min_length=1)
    pattern: str | None = None
    """RE2 regex matched against the whole label value, whose ``(?P<host>...)`` group is the host name
    (``^(?P<host>[^:]+):[0-9]+$`` takes ``web-1`` from ``web-1:9100``). Unset: the whole value."""
    allow: tuple[str, ...] = Field(min_length=1)
    """Host names (regexes, matched in full) this policy may act on."""

    @field_validator("allow")
    @classmethod
    def _allow_compiles(cls, sources: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _allow_patterns(sources, info)

    @field_validator("pattern")
    @classmethod
    def _has_host_group(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is None:
            return None
        try:
            compiled = charge(info.context, compile_pattern(source))
        except PatternError as exc:
            raise ValueError(f"host pattern {_shown(source)} {exc}") from exc
        if "host" not in compiled.groups:
            raise ValueError(f"host pattern {_shown(source)} has no (?P<host>...) group")
        return source

    # The compiled regexes are cached properties, not private attributes: those cost a trip through pydantic's
    # __getattr__ on every read, and these are read for every alert. (Compiled again from the sources:
    # cheap, and validation has already refused any that would not compile.)
    @cached_property
    def host_pattern(self) -> Pattern | None:
        return compile_pattern(self.pattern) if self.pattern is not None else None

    @cached_property
    def allow_patterns(self) -> tuple[Pattern, ...]:
        return tuple(compile_pattern(source) for source in self.allow)

    def name_in(self, value: str) -> str | None:
        """The host name the label value holds (the pattern's group, or all of it); None when it holds none."""
        pattern = self.host_pattern
        return pattern.extract(value, "host") if pattern is not None else value

    def admits(self, name: str) -> bool:
        """True when ``name`` is a host name one of the allow patterns matches in full."""
        return SAFE_HOST.fullmatch(name) is not None and any(p.fullmatch(name) for p in self.allow_patterns)


class Target(_Frozen):
    """What the policy may act on: a value read from one alert label, admitted only by the allow list.

    ``container``, ``compose-service`` and ``swarm-service`` name Docker objects; ``postgres`` names one of
    the PostgreSQL instances configured in the settings (a label never becomes a connection string);
    ``docker-host`` names a Docker host as its daemon names itself (``docker.prune`` checks it).
    """

    kind: TargetKind
    from_label: str = Field(min_length=1)
    allow: tuple[str, ...] = Field(min_length=1)
    host: (
        Annotated[
            Annotated[str, Field(pattern=SAFE_HOST.pattern), Tag("name")]
            | Annotated[HostFromLabel, Tag("label")],
            # Decided by the YAML's shape, so a mistake in a mapping is reported as that, not as "not a string".
            Discriminator(lambda value: "name" if isinstance(value, str) else "label"),
        ]
        | None
    ) = None
    """The Docker host the target lives on: a name (``db-1``), or read from a label (HostFromLabel). Unset:
    the host named ``default``. Only for Docker targets."""

    @field_validator("allow")
    @classmethod
    def _regexes_compile(cls, sources: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _allow_patterns(sources, info)

    @model_validator(mode="after")
    def _host_only_for_docker(self) -> Target:
        if self.host is not None and self.kind not in DOCKER_KINDS:
            raise ValueError(
                f"target.host is for Docker targets; a {self.kind} target is named by its instance"
            )
        return self

    @cached_property
    def allow_patterns(self) -> tuple[Pattern, ...]:
        """The allow list compiled (a cached property, like HostFromLabel's: read for every alert). A copy made
        with ``model_copy`` keeps it: a target with another allow list is validated anew, never copied."""
        return tuple(compile_pattern(source) for source in self.allow)

    def admits(self, value: str) -> bool:
        """True when ``value`` is a safe name that one of the allow patterns matches in full."""
        if SAFE_TARGET.fullmatch(value) is None:
            return False
        return any(pattern.fullmatch(value) for pattern in self.allow_patterns)


class HttpCheck(_Frozen):
    """A health endpoint that must answer ``status`` (and match ``body``, a regex, if given)."""

    url: str = Field(pattern=r"^https?://")
    status: int = Field(default=200, ge=100, le=599)
    body: str | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    _body_pattern: Pattern | None = PrivateAttr(default=None)

    @field_validator("body")
    @classmethod
    def _body_is_a_regex(cls, body: str | None, info: ValidationInfo) -> str | None:
        if body is not None:
            try:
                charge(info.context, compile_pattern(body))
            except PatternError as exc:
                raise ValueError(f"body {_shown(body)} {exc}") from exc
        return body

    @model_validator(mode="after")
    def _keep_compiled(self) -> HttpCheck:
        self._body_pattern = compile_pattern(self.body) if self.body is not None else None
        return self

    @property
    def body_pattern(self) -> Pattern | None:
        """``body`` compiled (RE2); the probe searches the response for it."""
        return self._body_pattern


class PrometheusCheck(_Frozen):
    """A PromQL instant query that must return at least one sample, every one of them non-zero."""

    query: str = Field(min_length=1)


class Verify(_Frozen):
    """How an action proves it worked: the alert resolves, or every configured check holds, within a window.

    ``resolved_within_s: N`` waits N seconds for Alertmanager's "resolved". ``within_s: N`` with ``http:``
    and/or ``prometheus:`` polls those checks every ``interval_s`` for N seconds (a resolved alert also
    counts). A check that cannot be evaluated (endpoint down, no series) never counts as recovered.
    """

    resolved_within_s: float | None = Field(default=None, gt=0, le=86_400)
    within_s: float | None = Field(default=None, gt=0, le=86_400)
    http: HttpCheck | None = None
    prometheus: PrometheusCheck | None = None
    interval_s: float = Field(default=2.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_window(self) -> Verify:
        probes = self.http is not None or self.prometheus is not None
        if (self.resolved_within_s is None) == (self.within_s is None):
            raise ValueError("verify needs exactly one of resolved_within_s or within_s")
        if probes and self.within_s is None:
            raise ValueError("verify with http or prometheus checks takes within_s (the polling window)")
        if self.within_s is not None and not probes:
            raise ValueError(
                "within_s needs an http or prometheus check; use resolved_within_s for the alert"
            )
        return self

    @property
    def window_s(self) -> float:
        return self.within_s or self.resolved_within_s or 0.0


class Approval(_Frozen):
    """A human says yes before this step acts (``remediator approve ID`` or the link in the escalation)."""

    timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    """How long to wait for the answer."""
    on_timeout: Literal["deny", "proceed"] = "deny"
    """What silence means."""


class HealthyFloor(_Frozen):
    """Live state that must hold before the policy acts, e.g. that enough replicas of a service are up.

    Evaluated before every action. When it does not hold, or cannot be evaluated (Prometheus down, no series),
    the policy holds, re-checking every ``interval_s`` for ``hold_s``, then escalates without acting.
    """

    prometheus: PrometheusCheck
    hold_s: float = Field(default=0.0, ge=0, le=3600)
    interval_s: float = Field(default=5.0, gt=0, le=600)


class Drill(_Frozen):
    """How ``remediator drill`` rehearses this policy, and what counts as success."""

    inject: Literal["stop_container", "idle_transaction", "alert"] | None = None
    """The failure to inject. Default: stop_container for a container target, idle_transaction for postgres,
    else a synthetic alert posted to Alertmanager."""
    detect_within_s: float = Field(default=60.0, gt=0)
    """The incident must open within this many seconds of the injection."""
    recover_within_s: float = Field(default=300.0, gt=0)
    """The incident must resolve within this many seconds of the injection."""

    def injection(self, kind: str) -> str:
        if self.inject is not None:
            return self.inject
        return {"container": "stop_container", "postgres": "idle_transaction"}.get(kind, "alert")


class Step(_Frozen):
    """One rung of the ladder: exactly one of ``diagnose``, ``act`` or ``escalate``."""

    act: str | None = None
    diagnose: str | None = None
    escalate: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, alias="with")
    verify: Verify | None = None
    attempts: int = Field(default=1, ge=1, le=10)
    approval: Approval | None = None
    must_pass: bool = False
    """On a diagnose step: its failure (or a diagnosis that cannot run) stops the ladder, and the incident is
    escalated with the diagnosis' output; the steps after it never run ("nginx -t before the reload")."""

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        kinds = [k for k in ("act", "diagnose", "escalate") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a step has exactly one of: act, diagnose, escalate")
        if self.must_pass and self.diagnose is None:
            raise ValueError("must_pass belongs to a diagnose step")
        if self.act is None and (self.verify is not None or self.attempts != 1 or self.approval is not None):
            raise ValueError("verify, attempts and approval belong to an act step")
        if self.act is not None and self.verify is None:
            raise ValueError("an act step needs verify: (for example verify: {resolved_within_s: 120})")
        return self

    @property
    def kind(self) -> Literal["act", "diagnose", "escalate"]:
        if self.act is not None:
            return "act"
        return "diagnose" if self.diagnose is not None else "escalate"

    @property
    def name(self) -> str:
        return self.act or self.diagnose or self.escalate or ""


class Window(_Frozen):
    """``count`` events per ``window_s`` seconds."""

    count: int = Field(ge=1, le=10_000)
    window_s: float = Field(gt=0, le=30 * 86_400)


class Limits(_Frozen):
    """How much one policy may do to one target. Defaults are deliberately tight: loosen them per policy."""

    cooldown_s: float = Field(default=300.0, ge=0, le=7 * 86_400)
    """After an incident acted on a target, a new incident on it waits this long before acting."""
    max_actions: Window = Field(default_factory=lambda: Window(count=3, window_s=3600))
    """At most ``count`` actions on one target per ``window_s`` (counted over every policy)."""
    flapping: Window = Field(default_factory=lambda: Window(count=3, window_s=3600))
    """A target whose alert opened ``count`` incidents within ``window_s`` is flapping: escalate, don't act."""
    lock_wait_s: float = Field(default=60.0, gt=0, le=3600)
    """How long a step waits for another step on the same target before it is refused."""


class Policy(_Frozen):
    """A validated policy. ``source`` is ``file:line`` of its first key, for explanations."""

    name: str
    description: str = ""
    match: tuple[Annotated[Matcher, BeforeValidator(_matcher)], ...] = Field(min_length=1)
    target: Target
    steps: tuple[Step, ...] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    healthy_floor: HealthyFloor | None = None
    drill: Drill = Field(default_factory=Drill)
    mode: Literal["enforce", "shadow"] = "enforce"
    """``shadow``: evaluate and record "would have acted", act on nothing and page nobody; promote it with
    ``remediator policies promote NAME`` once its record convinces you."""
    dry_run: bool = False
    """Record what would be done and do nothing (escalations still go out, saying nothing was done)."""
    source: str = ""
    """``file:line`` of the policy (set by the loader)."""
    version: str = ""
    """A hash of what the file says for this policy (set by the loader): an incident records the version it
    was opened under, and a reload shows which policies changed."""

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, name: str) -> str:
        if _NAME.fullmatch(name) is None:
            raise ValueError("name must be lower-case letters, digits, '-', '_' or '.' (at most 63)")
        return name

    def escalation_target(self, from_index: int = 0) -> str:
        """Whom a human-owned problem goes to: the first escalate step at or after ``from_index``, else the
        policy's first escalate step, else the log. One rule for intake (a refused target), the runner (a
        guard's refusal) and approval requests."""
        later = [s.name for s in self.steps[from_index:] if s.kind == "escalate"]
        anywhere = [s.name for s in self.steps if s.kind == "escalate"]
        return (later or anywhere or ["log"])[0]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.match)


def policy_set_version(policies: Sequence[Policy]) -> str:
    """One hash for a loaded set of policies: replicas that loaded the same files show the same one."""
    digest = hashlib.sha256()
    for policy in sorted(policies, key=lambda p: p.name):
        digest.update(f"{policy.name}\x1f{policy.version}\x1e".encode())
    return digest.hexdigest()[:12]
