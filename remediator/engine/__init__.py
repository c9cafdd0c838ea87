"""The engine: intake of alert events, the escalation outbox, and the step runner that walks a policy's ladder."""
