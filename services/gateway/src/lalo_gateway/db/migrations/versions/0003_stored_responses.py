"""Stored Responses API answers (GET /v1/responses/{id}, previous_response_id).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(255), nullable=False, server_default=""),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
    )
    op.create_index("ix_gateway_responses_tenant", "gateway_responses", ["tenant"])
    op.create_index("ix_gateway_responses_created_at", "gateway_responses", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_responses_created_at", table_name="gateway_responses")
    op.drop_index("ix_gateway_responses_tenant", table_name="gateway_responses")
    op.drop_table("gateway_responses")
