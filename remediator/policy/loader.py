"""Turns ``policies/*.yaml`` into validated ``Policy`` objects, or refuses a file with its path, line and reason.

A file may hold several policies as YAML documents separated by ``---``. Policies are kept in a stable order
(file name, then position in the file), because the first policy that matches an alert takes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from remediator.domain.policies import ActionSpec, Policy
from remediator.errors import PolicyError

LinePath = tuple[str | int, ...]


def _walk_lines(node: yaml.Node, path: LinePath, lines: dict[LinePath, int], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise PolicyError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk_lines(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk_lines(item, (*path, index), lines, file)


def _line_for(loc: Sequence[str | int], lines: Mapping[LinePath, int]) -> int | None:
    path: LinePath = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get((), None)


def _documents(path: Path) -> list[tuple[Any, dict[LinePath, int]]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(file, None, f"cannot read: {exc}") from exc
    loader = yaml.SafeLoader(text)
    docs: list[tuple[Any, dict[LinePath, int]]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[LinePath, int] = {}
            _walk_lines(node, (), lines, file)
            docs.append((loader.construct_document(node), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyError(file, line, f"not valid YAML: {exc.problem or exc}") from exc
    finally:
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


def load_file(path: Path, known_actions: Mapping[str, ActionSpec] | None = None) -> list[Policy]:
    """Every policy in one file; raises PolicyError on the first mistake."""
    file = str(path)
    policies: list[Policy] = []
    for raw, lines in _documents(path):
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise PolicyError(file, lines.get(()), "a policy is a mapping (name:, match:, target:, steps:)")
        try:
            policy = Policy.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PolicyError(file, _line_for(first["loc"], lines), _format_error(first)) from exc
        policy = policy.model_copy(update={"source": f"{file}:{lines.get((), 1)}"})
        if known_actions is not None:
            _check_steps(policy, lines, file, known_actions)
        policies.append(policy)
    return policies


def load_dir(directory: Path, known_actions: Mapping[str, ActionSpec] | None = None) -> list[Policy]:
    """Every policy under ``directory`` (``*.yaml`` and ``*.yml``), in file-name order; names must be unique."""
    if not directory.is_dir():
        raise PolicyError(str(directory), None, "not a directory of policy files")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    policies: list[Policy] = []
    seen: dict[str, str] = {}
    for file in files:
        for policy in load_file(file, known_actions):
            if policy.name in seen:
                line = int(policy.source.rsplit(":", 1)[1])
                raise PolicyError(
                    str(file), line, f"policy name {policy.name!r} is already used at {seen[policy.name]}"
                )
            seen[policy.name] = policy.source
            policies.append(policy)
    return policies
