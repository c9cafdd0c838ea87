"""The store for several replicas: PostgreSQL through asyncpg (store.py), its schema and advisory-lock keys
(schema.py), and how intake's decisions are written (intake.py)."""

from remediator.store.postgres.store import PostgresStore as PostgresStore
