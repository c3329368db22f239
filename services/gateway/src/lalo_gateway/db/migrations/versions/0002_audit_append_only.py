"""Audit events are append-only: the database refuses UPDATE, DELETE (and TRUNCATE on
Postgres) on gateway_audit_events. A retention job run by the DBA disables the trigger
explicitly, which is itself visible in the database's own logs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "gateway_audit_events is append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION gateway_audit_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER gateway_audit_events_append_only BEFORE UPDATE OR DELETE "
            "ON gateway_audit_events FOR EACH ROW EXECUTE FUNCTION gateway_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER gateway_audit_events_no_truncate BEFORE TRUNCATE "
            "ON gateway_audit_events FOR EACH STATEMENT "
            "EXECUTE FUNCTION gateway_audit_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER gateway_audit_events_no_{action.lower()} BEFORE {action} "
                f"ON gateway_audit_events BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP TRIGGER IF EXISTS gateway_audit_events_no_truncate ON gateway_audit_events"
        )
        op.execute(
            "DROP TRIGGER IF EXISTS gateway_audit_events_append_only ON gateway_audit_events"
        )
        op.execute("DROP FUNCTION IF EXISTS gateway_audit_append_only()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS gateway_audit_events_no_{action}")
