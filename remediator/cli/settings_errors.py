"""Settings the user got wrong, told as one line per problem, named as the user set them (``REMEDIATOR_*``) and
without repeating a value that may be a credential. Apart from ``entrypoint`` because ``healthcheck`` reports
them too, with its own exit code.
"""

from __future__ import annotations

import os

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import SettingsError

from remediator.env_check import json_problems


def settings_problems(exc: ValidationError) -> list[str]:
    """Settings from the environment: one line per problem, named as the user set it (a part of the settings
    validated later, e.g. a Docker host, by its model and field)."""
    lines = []
    for problem in exc.errors():
        where = [str(part) for part in problem["loc"]]
        name = (
            f"REMEDIATOR_{'__'.join(where).upper()}"
            if exc.title == "Settings"
            else f"{exc.title} {'.'.join(where)}"
        )
        value = problem.get("input")
        # A URL, DSN, key or token (or a whole mapping of them) is not repeated: the line ends in terminals,
        # CI logs and tickets.
        hidden = isinstance(value, dict | list) or any(
            word in part.lower() for part in where for word in _SECRETS
        )
        lines.append(f"{name}: {problem['msg']}" + ("" if hidden else f": {value!r}"))
    return lines


_SECRETS = (
    "url",
    "dsn",
    "token",
    "secret",
    "password",
    "key",
    "cert",
    "hosts",
    "targets",
    "slack",
    "pagerduty",
)
"""Settings whose value may hold a credential (by a part of their name)."""


def settings_json_problems(exc: SettingsError) -> list[str]:
    """A value the settings could not parse (JSON): they name only the top-level field, so find the variable."""
    environ: dict[str, str | None] = {**dotenv_values(".env"), **os.environ}
    return json_problems(environ) or [str(exc)]
