"""Notifiers that hand an incident to a human, behind one protocol."""
