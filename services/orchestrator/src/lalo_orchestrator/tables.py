"""The orchestrator's tables (owned by it alone; changed only through Alembic migrations)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Times are Unix seconds (float) so SQLite and Postgres behave the same.
workflows = Table(
    "orch_workflows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(255), nullable=False, index=True),
    Column("state", String(32), nullable=False),
    Column("request", JSON, nullable=False),  # messages, allowed_tools, model, request_id
    Column("budgets", JSON, nullable=False),
    Column("plan_version", Integer, nullable=False, default=0),
    Column("steps_used", Integer, nullable=False, default=0),
    Column("tokens_used", Integer, nullable=False, default=0),
    Column("replans", Integer, nullable=False, default=0),
    # Failures that made the planner plan again, shown to it on the next attempt.
    Column("history", JSON, nullable=False),
    Column("final_answer", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("event_seq", BigInteger, nullable=False, default=0),
    # The worker lease: one worker at a time moves a workflow forward.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    # Earliest time of the next attempt (transient-failure backoff).
    Column("not_before", Float, nullable=False, default=0.0),
    Column("nudged_at", Float, nullable=False, default=0.0),
    # Token of the one live chain of ``advance`` tasks; a message carrying another
    # token is a stale duplicate (a re-delivery after the chain moved on) and is dropped.
    Column("dispatch", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deadline_at", Float, nullable=False),
    Index("ix_orch_workflows_owner_created", "owner", "created_at"),
    Index("ix_orch_workflows_state", "state"),
)

steps = Table(
    "orch_steps",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "workflow_id",
        String(36),
        ForeignKey("orch_workflows.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("plan_version", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("tool", String(128), nullable=True),
    Column("arguments", JSON, nullable=True),
    Column("prompt", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("result_text", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("tokens", Integer, nullable=False, default=0),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("workflow_id", "plan_version", "position", name="uq_orch_steps_position"),
)

events = Table(
    "orch_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "workflow_id",
        String(36),
        ForeignKey("orch_workflows.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", BigInteger, nullable=False),
    Column("type", String(32), nullable=False),
    Column("workflow_state", String(32), nullable=False),
    Column("step_id", String(36), nullable=True),
    Column("step_state", String(16), nullable=True),
    Column("data", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("workflow_id", "seq", name="uq_orch_events_seq"),
)
