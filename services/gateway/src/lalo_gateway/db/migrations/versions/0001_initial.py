"""API keys, audit events and stored secrets.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tpm", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("store_content", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.UniqueConstraint("key_hash", name="uq_gateway_api_keys_key_hash"),
    )
    op.create_index("ix_gateway_api_keys_prefix", "gateway_api_keys", ["prefix"])
    op.create_index("ix_gateway_api_keys_owner", "gateway_api_keys", ["owner"])

    op.create_table(
        "gateway_audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("route", sa.String(255), nullable=False, server_default=""),
        sa.Column("subject", sa.String(255), nullable=False, server_default=""),
        sa.Column("principal_kind", sa.String(16), nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False, server_default=""),
        sa.Column("key_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("key_prefix", sa.String(32), nullable=False, server_default=""),
        sa.Column("model", sa.String(255), nullable=False, server_default=""),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens_out", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Float(), nullable=False, server_default="0"),
        sa.Column("client_addr", sa.String(64), nullable=False, server_default=""),
        sa.Column("error_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("content", sa.JSON(), nullable=True),
    )
    op.create_index("ix_gateway_audit_events_ts", "gateway_audit_events", ["ts"])
    op.create_index("ix_gateway_audit_events_request_id", "gateway_audit_events", ["request_id"])
    op.create_index("ix_gateway_audit_events_subject", "gateway_audit_events", ["subject"])
    op.create_index("ix_gateway_audit_events_key_id", "gateway_audit_events", ["key_id"])
    op.create_index("ix_gateway_audit_events_status", "gateway_audit_events", ["status"])

    op.create_table(
        "gateway_secrets",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_secrets")
    op.drop_table("gateway_audit_events")
    op.drop_table("gateway_api_keys")
