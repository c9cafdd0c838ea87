"""Persistence behind one protocol: the inbox, incidents, steps, the audit trail and the escalation outbox."""
