"""The exception tree, in one place so that every layer raises and catches the same types.

    RemediatorError
    ├── ConfigError                  settings that cannot work
    ├── PolicyError                  a policy file refused at load (file, line, reason)
    ├── TargetRefused                a label value that the policy's allow list does not admit
    ├── StoreError                   the store cannot persist or read
    │   ├── StoreUnavailable         the store is down, full or busy (retry for as long as it lasts)
    │   └── StoreDataError           this one value cannot be stored (retrying cannot help)
    ├── LeaseLost                    this replica no longer holds an incident's or entry's lease
    ├── ActionError                  a backend action that did not succeed
    │   ├── TemporaryActionError     worth retrying (backend down, timeout, 5xx)
    │   │   └── LateCall             about to go out after its lease-safe moment: confirm the lease, try again
    │   └── PermanentActionError     retrying cannot help (no such container, bad request)
    └── NotifyError                  an escalation that could not be delivered (yet)

Third-party errors (docker, aiohttp, sqlite3) are mapped to these at the boundary with ``raise ... from exc``;
an unknown error counts as permanent.
"""

from __future__ import annotations


class RemediatorError(Exception):
    """Base of every error remediator raises on purpose."""


class ConfigError(RemediatorError):
    """Settings that cannot work together."""


class PolicyError(RemediatorError):
    """A policy file that is refused at load."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class TargetRefused(RemediatorError):
    """A target value that no backend may see: missing, or outside the allow list."""


class StoreError(RemediatorError):
    """The store could not persist or read."""


class StoreUnavailable(StoreError):
    """The store cannot take any write now: down, unreachable, its disk full, busy. Worth retrying for as long
    as it lasts, and never a reason to give up on what is being written."""


class StoreDataError(StoreError):
    """The store refused a value (out of range, not representable): the same call would fail again, so the
    caller must not retry it, nor let it hold up other work."""


class LeaseLost(RemediatorError):
    """A write or an action for an incident (or an outbox entry) whose lease this replica no longer holds with
    the fencing token it was granted: another replica took it over. The writer stops working on it at once."""


class ActionError(RemediatorError):
    """A backend action that did not succeed."""


class TemporaryActionError(ActionError):
    """Worth retrying: the backend is down, slow, or answered 5xx."""


class LateCall(TemporaryActionError):
    """A backend call reached the moment of sending after the deadline its lease confirmation set (it waited
    behind a burst, or the process was frozen): not sent. The runner confirms the lease again and retries; if
    another replica took the incident meanwhile, that confirmation raises LeaseLost instead."""


class PermanentActionError(ActionError):
    """Retrying cannot help: the target does not exist, or the request is wrong."""


class NotifyError(RemediatorError):
    """An escalation that could not be delivered on this attempt."""
