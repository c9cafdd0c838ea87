"""Plain data that every layer shares: webhook models, policies, incidents, outcomes. No I/O here."""
