"""Turns ``policies/*.yaml`` into validated ``Policy`` objects, or refuses a file with its path, line and reason.

A file may hold several policies as YAML documents separated by ``---``. Policies are kept in a stable order
(file name, then position in the file), because the first policy that matches an alert takes it.

A policy file is input like any other: a few hundred bytes of YAML can ask for gigabytes (an alias bomb), a
deep nesting for a RecursionError, a large file for minutes. So the loader bounds every dimension before it
builds anything, and refuses what is over with a PolicyError (file, line, reason), never a traceback:

* a file is a regular file of at most ``MAX_FILE_BYTES``, checked before it is read (a FIFO or
  ``/dev/zero`` behind a symlink would otherwise block or read forever); a directory holds at most
  ``MAX_FILES`` policy files, ``MAX_TOTAL_BYTES`` in all, and ``MAX_POLICIES`` policies;
* nesting is at most ``MAX_DEPTH`` levels, checked while PyYAML composes (its composer recurses);
* a file has at most ``MAX_NODES`` nodes, counted while composing and again, after composing, with every
  alias counted as the nodes it stands for: that is what construction and validation will walk.
* aliases stay allowed (``<<: *defaults`` is a fair way to share limits) because their expansion is what is
  counted; an alias used inside its own anchor (a cycle) is refused.

Everything the policies' regexes may cost is bounded by ``domain.patterns`` through one ``RegexBudget``
per directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from remediator.domain.patterns import RegexBudget
from remediator.domain.policies import ActionSpec, Policy
from remediator.errors import PolicyError

MAX_FILE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 4 << 20
MAX_FILES = 256
MAX_POLICIES = 1_000
MAX_DEPTH = 32
MAX_NODES = 50_000

LinePath = tuple[str | int, ...]


def _line(node_or_mark: yaml.Node | yaml.Mark) -> int:
    mark = node_or_mark.start_mark if isinstance(node_or_mark, yaml.Node) else node_or_mark
    return int(mark.line) + 1


def _shown(value: object) -> str:
    text = str(value)
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}..."


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops composing at ``MAX_DEPTH`` levels and ``MAX_NODES`` nodes, and turns a
    constructor's own failure on an odd scalar (``!!int ""``, a 5,000-digit integer, February 30) into a
    YAML error with its line."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file
        self.depth = 0
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.composed += 1
        self.depth += 1
        try:
            if self.composed > MAX_NODES:
                raise PolicyError(self.file, self._next_line(), f"more than {MAX_NODES} YAML nodes")
            if self.depth > MAX_DEPTH:
                raise PolicyError(self.file, self._next_line(), f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _next_line(self) -> int:
        return _line(self.peek_event().start_mark)  # type: ignore[no-untyped-call]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
            raise PolicyError(
                self.file,
                _line(node),
                f"not valid YAML: cannot read {_shown(node.value)} as {node.tag}: {exc}",
            ) from exc


def _walk_lines(root: yaml.Node, file: str) -> dict[LinePath, int]:
    """The line of every path in the document, after checking its keys and its size with aliases expanded.

    Iterative, so that no nesting reaches Python's recursion limit; each node is entered once per path that
    leads to it, which is exactly the work that construction and validation will do. A refusal names the line
    where the walk entered the text: inside an alias's expansion, that is the alias's parent, not the anchor.
    """
    lines: dict[LinePath, int] = {}
    walked = 0
    entered: set[int] = set()
    inside: set[int] = set()
    # (node, path, depth, the line a refusal names inside an alias's expansion, the parent's line, leaving)
    stack: list[tuple[yaml.Node, LinePath, int, int | None, int, bool]] = [(root, (), 1, None, 1, False)]
    while stack:
        node, path, depth, where, parent_line, leaving = stack.pop()
        if leaving:
            inside.discard(id(node))
            continue
        # Anchors come before their aliases and the walk follows the text, so a collection entered again is
        # an alias: it and all below it are reported at the line that uses the alias, not at the anchor.
        if where is None and id(node) in entered:
            where = parent_line
        here = _line(node) if where is None else where
        walked += 1
        if walked > MAX_NODES:
            raise PolicyError(file, here, f"more than {MAX_NODES} YAML nodes once aliases are expanded")
        if depth > MAX_DEPTH:
            raise PolicyError(
                file, here, f"nested more than {MAX_DEPTH} levels deep once aliases are expanded"
            )
        lines.setdefault(path, _line(node))
        if not isinstance(node, yaml.CollectionNode):
            continue
        if id(node) in inside:
            raise PolicyError(file, here, "an alias is used inside its own anchor (a cycle)")
        entered.add(id(node))
        inside.add(id(node))
        stack.append((node, path, depth, where, parent_line, True))
        children: list[tuple[yaml.Node, LinePath]] = []
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise PolicyError(
                        file, _line(key_node), "a key is a plain value, not a list or a mapping"
                    )
                key = str(key_node.value)
                if key in seen:
                    raise PolicyError(file, _line(key_node), f"duplicate key {key[:80]!r}")
                seen.add(key)
                lines[(*path, key)] = _line(key_node)
                children.append((value_node, (*path, key)))
        else:
            children = [(item, (*path, index)) for index, item in enumerate(node.value)]
        stack.extend(
            (child, child_path, depth + 1, where, here, False) for child, child_path in reversed(children)
        )
    return lines


def _line_for(loc: Sequence[str | int], lines: Mapping[LinePath, int]) -> int | None:
    path: LinePath = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), None)


def _read(path: Path) -> str:
    """The text of one policy file, refused before reading if it is not a regular file or is too large."""
    file = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PolicyError(file, None, f"cannot read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PolicyError(file, None, "not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise PolicyError(
                file, None, f"{info.st_size} bytes, over the {MAX_FILE_BYTES} bytes a policy file may hold"
            )
        try:
            # One byte more than the limit, in case the file grew since fstat.
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise PolicyError(file, None, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyError(file, None, f"over the {MAX_FILE_BYTES} bytes a policy file may hold")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError(file, line, f"not UTF-8: {exc.reason} at byte {exc.start}") from exc


def _documents(file: str, text: str) -> list[tuple[Any, dict[LinePath, int]]]:
    docs: list[tuple[Any, dict[LinePath, int]]] = []
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, file)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines = _walk_lines(node, file)
            docs.append((loader.construct_document(node), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(file, line, f"not valid YAML: {exc.problem or exc}") from exc
    except yaml.reader.ReaderError as exc:
        # A control character: the reader refuses the whole text before any mark exists.
        line = text.count("\n", 0, exc.position) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise PolicyError(file, line, f"not valid YAML: {exc.reason} ({char})") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(file, None, f"not valid YAML: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def _format_error(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def _check_steps(
    policy: Policy, lines: Mapping[LinePath, int], file: str, known_actions: Mapping[str, ActionSpec]
) -> None:
    for index, step in enumerate(policy.steps):
        if step.kind == "escalate":
            continue
        where = ("steps", index, step.kind)
        spec = known_actions.get(step.name)
        if spec is None or spec.kind != step.kind:
            known = ", ".join(sorted(n for n, s in known_actions.items() if s.kind == step.kind))
            raise PolicyError(
                file, _line_for(where, lines), f"unknown {step.kind} {step.name!r} (known: {known})"
            )
        if policy.target.kind not in spec.target_kinds:
            kinds = " or ".join(sorted(spec.target_kinds))
            raise PolicyError(
                file,
                _line_for(where, lines),
                f"{step.name} acts on a {kinds} target, not {policy.target.kind}",
            )
        try:
            spec.params.model_validate(step.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ("steps", index, "with", *first["loc"])
            raise PolicyError(
                file, _line_for(loc, lines), f"{step.name}: {_format_error({**first, 'loc': loc})}"
            ) from exc


def _load(
    file: str, text: str, known_actions: Mapping[str, ActionSpec] | None, budget: RegexBudget
) -> list[Policy]:
    policies: list[Policy] = []
    for raw, lines in _documents(file, text):
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise PolicyError(file, lines.get(()), "a policy is a mapping (name:, match:, target:, steps:)")
        try:
            policy = Policy.model_validate(raw, context={"regex_budget": budget})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PolicyError(file, _line_for(first["loc"], lines), _format_error(first)) from exc
        version = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]
        policy = policy.model_copy(update={"source": f"{file}:{lines.get((), 1)}", "version": version})
        if known_actions is not None:
            _check_steps(policy, lines, file, known_actions)
        policies.append(policy)
    return policies


def load_file(path: Path, known_actions: Mapping[str, ActionSpec] | None = None) -> list[Policy]:
    """Every policy in one file; raises PolicyError on the first mistake."""
    return _load(str(path), _read(path), known_actions, RegexBudget())


def _policy_files(directory: Path) -> list[Path]:
    # Listed by hand rather than globbed, to stop at MAX_FILES + 1 instead of listing a million entries.
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith((".yaml", ".yml")):
                    names.append(entry.name)
                    if len(names) > MAX_FILES:
                        raise PolicyError(
                            str(directory), None, f"more than {MAX_FILES} policy files (*.yaml, *.yml)"
                        )
    except OSError as exc:
        raise PolicyError(str(directory), None, f"cannot list: {exc.strerror or exc}") from exc
    return [directory / name for name in sorted(names)]


def load_dir(directory: Path, known_actions: Mapping[str, ActionSpec] | None = None) -> list[Policy]:
    """Every policy under ``directory`` (``*.yaml`` and ``*.yml``), in file-name order; names must be unique."""
    if not directory.is_dir():
        raise PolicyError(str(directory), None, "not a directory of policy files")
    policies: list[Policy] = []
    seen: dict[str, str] = {}
    total = 0
    budget = RegexBudget()
    for file in _policy_files(directory):
        text = _read(file)
        total += len(text.encode())
        if total > MAX_TOTAL_BYTES:
            raise PolicyError(
                str(file), None, f"the policy files hold more than {MAX_TOTAL_BYTES} bytes together"
            )
        for policy in _load(str(file), text, known_actions, budget):
            if policy.name in seen:
                line = int(policy.source.rsplit(":", 1)[1])
                raise PolicyError(
                    str(file), line, f"policy name {policy.name!r} is already used at {seen[policy.name]}"
                )
            seen[policy.name] = policy.source
            policies.append(policy)
            if len(policies) > MAX_POLICIES:
                raise PolicyError(
                    str(file), int(policy.source.rsplit(":", 1)[1]), f"more than {MAX_POLICIES} policies"
                )
    return policies
