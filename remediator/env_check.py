"""``REMEDIATOR_*`` variables that are no setting: a typo such as ``REMEDIATOR_SERVER__PROT`` would otherwise be
ignored without a word (the settings ignore what they do not know). Every command warns about each one at
start, with the nearest valid name.

A name is valid when it walks the settings' fields from ``Settings`` down, one field per ``__``-separated
part, case-insensitive as the settings read them: a group (``REMEDIATOR_SERVER``, set as JSON), a field
(``REMEDIATOR_SERVER__PORT``), or anything below a mapping by name (``REMEDIATOR_ESCALATION__TARGETS__ONCALL__URL``:
a key, then the fields of its value).
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import BaseModel

from remediator.settings import Settings

PREFIX = "REMEDIATOR_"
DELIMITER = "__"

OTHER_VARIABLES = frozenset({"REMEDIATOR_IMAGE", "REMEDIATOR_REQUIRE_REAL_PARTS", "REMEDIATOR_FUZZ_EXAMPLES"})
"""Ours but no setting: the image tag in deploy/swarm-stack.yaml, and two of the test suite's."""


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The settings models an annotation may hold (``X``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _mapping_value(annotation: Any) -> Any | None:
    """The value type of a ``dict[str, V]`` field (possibly optional), else None."""
    origin = typing.get_origin(annotation)
    if origin in (dict, Mapping):
        return typing.get_args(annotation)[1] if typing.get_args(annotation) else Any
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            value = _mapping_value(arg)
            if value is not None:
                return value
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name.upper(): field.annotation for name, field in model.model_fields.items()}


def _below(model: type[BaseModel]) -> list[str]:
    """Every name under ``model``, relative to it (``PORT``, ``BREAKER__OPEN_S``, ``TARGETS``...)."""
    names = []
    for name, annotation in _fields(model).items():
        names.append(name)
        for inner in _models(annotation):
            names.extend(f"{name}{DELIMITER}{below}" for below in _below(inner))
    return names


def _annotation(parts: list[str]) -> Any | None:
    """The type a valid name sets (None when the name is not valid)."""
    annotation: Any = Settings
    for part in parts:
        models = _models(annotation)
        if models:
            fields = {name: a for model in models for name, a in _fields(model).items()}
            if part not in fields:
                return None
            annotation = fields[part]
        elif (value := _mapping_value(annotation)) is not None:
            annotation = value
        else:
            return None
    return annotation


def _is_json(annotation: Any) -> bool:
    """Whether the settings read a variable of this type as JSON (a group, a mapping, a list)."""
    return (
        bool(_models(annotation))
        or _mapping_value(annotation) is not None
        or (typing.get_origin(annotation) in (list, set, tuple))
    )


def json_problems(environ: Mapping[str, str | None]) -> list[str]:
    """``NAME: not valid JSON: reason`` for each variable the settings read as JSON and cannot parse (the
    settings themselves only name the top-level field). The value is not repeated: it may hold a secret."""
    lines = []
    for name, value in sorted(environ.items()):
        upper = name.upper()
        if not upper.startswith(PREFIX) or not value:
            continue
        annotation = _annotation(upper[len(PREFIX) :].split(DELIMITER))
        if annotation is None or not _is_json(annotation):
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            lines.append(f"{name}: not valid JSON: {exc}")
    return lines


def _check(parts: list[str], annotation: Any) -> tuple[int, type[BaseModel]] | None:
    """None when ``parts`` name something under ``annotation``; else how many parts were right and the model
    whose fields the next one should have been."""
    done = 0
    while done < len(parts):
        models = _models(annotation)
        if models:
            fields = {name: a for model in models for name, a in _fields(model).items()}
            if parts[done] not in fields:
                return done, models[0]
            annotation = fields[parts[done]]
            done += 1
            continue
        value = _mapping_value(annotation)
        if value is None:
            return done, BaseModel  # a plain value has nothing under it
        done += 1  # the mapping's key: any name
        if not _models(value):
            return None  # a mapping of plain values (or of anything): what is below is its content
        annotation = value
    return None


def problem(name: str) -> str | None:
    """Why ``name`` (a ``REMEDIATOR_*`` variable) is no setting, with the nearest valid name; None when it is
    one."""
    upper = name.upper()
    if not upper.startswith(PREFIX) or upper in OTHER_VARIABLES:
        return None
    parts = upper[len(PREFIX) :].split(DELIMITER)
    found = _check(parts, Settings)
    if found is None:
        return None
    done, model = found
    head = PREFIX + "".join(f"{part}{DELIMITER}" for part in parts[:done])
    rest = DELIMITER.join(parts[done:])
    nearest = difflib.get_close_matches(rest, _below(model), n=1, cutoff=0.6)
    if nearest:
        return f"{name} is not a setting; did you mean {head}{nearest[0]}?"
    if model is BaseModel:
        return f"{name} is not a setting: {head.removesuffix(DELIMITER)} has nothing under it"
    return f"{name} is not a setting (the settings are in docs/operations.md#settings)"


def warnings(environ: Mapping[str, str], env_file: Path | None = Path(".env")) -> list[str]:
    """One ``warning: ...`` line per ``REMEDIATOR_*`` variable of ``environ`` (and of ``env_file``, which the
    settings read too) that is no setting."""
    lines = [f"warning: {found}" for found in _problems(environ)]
    if env_file is not None and env_file.is_file():
        lines += [f"warning: {found} (in {env_file})" for found in _problems(dotenv_values(env_file))]
    return lines


def _problems(names: Iterable[str]) -> list[str]:
    return [found for name in sorted(names) if (found := problem(name)) is not None]
