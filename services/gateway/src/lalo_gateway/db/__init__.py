"""The gateway's own tables (API keys, audit events, stored secrets): SQLAlchemy 2 models,
engine set-up with start-up retry, Alembic migrations and repositories.

Postgres (psycopg 3) in clusters, SQLite in embedded mode. No other service reads these
tables; every table name starts with ``gateway_`` and Alembic keeps its own version table
(``gateway_alembic_version``), so services can share one database safely.
"""
