"""Policies: loading YAML into validated, read-only objects, and matching alerts to them (pure functions)."""
