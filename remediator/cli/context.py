"""What a command runs against: the settings (``--policies`` applied), the policy directory, and the running
daemon's API with the daemon's own token. Shared, so that every command finds the token and the policies where
the daemon does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from remediator.actions.catalogue import SPECS
from remediator.api_client import ApiClient, ApiError
from remediator.domain.policies import Policy
from remediator.errors import RemediatorError
from remediator.policy.loader import load_dir
from remediator.server import webhook_token
from remediator.settings import Settings


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "policies", None):
        overrides["policies_dir"] = Path(args.policies)
    return Settings(**overrides)


def load_policies(directory: Path) -> list[Policy]:
    """Every policy of ``directory``; a directory with none is a mistake (RemediatorError), as in a reload."""
    policies = load_dir(directory, SPECS)
    if not policies:
        raise RemediatorError(f"{directory}: no policy (no *.yaml or *.yml file with one)")
    return policies


def daemon_api(args: argparse.Namespace) -> ApiClient:
    """The running daemon's API at --url (default: where the settings say it listens), with --token or the
    token the daemon uses (server.auth.webhook_token: the variable, the token file, or <state_dir>/token)."""
    settings = load_settings(args)
    try:
        token = args.token or webhook_token(settings, generate=False)
    except OSError as exc:  # <state_dir>/token is the daemon's, mode 0600
        raise RemediatorError(f"cannot read the daemon's token: {exc}; give --token") from exc
    return ApiClient.for_daemon(settings, token, args.url)


def api_hint(exc: ApiError) -> str:
    """What to try when a call to the daemon failed."""
    if exc.status is None and "cannot reach" in exc.message:
        return " (is `remediator serve` running there? --url names another daemon)"
    if exc.status == 401:
        return " (the token must be the daemon's: --token, REMEDIATOR_SERVER__TOKEN or __TOKEN_FILE)"
    return ""
