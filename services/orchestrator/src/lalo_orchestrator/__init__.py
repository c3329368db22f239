"""LALO orchestrator: durable multi-step agent workflows on Celery, Postgres and Redis."""
