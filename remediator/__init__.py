"""remediator: runs on-call runbooks by itself, from an Alertmanager webhook to a bounded, verified action."""

__version__ = "0.1.0"
