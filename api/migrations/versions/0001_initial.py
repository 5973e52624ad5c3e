"""Gateways, messages and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# 64-bit ids; SQLite's rowid alias must be spelt INTEGER, and is 64-bit already.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "sms_gateways",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("provider_type", sa.String(32), nullable=False),
        sa.Column("server_host", sa.String(255), nullable=False),
        sa.Column("server_port", sa.Integer, nullable=False),
        sa.Column("api_path", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255)),
        sa.Column("password", sa.String(255)),
        sa.Column("default_sender_id", sa.String(20)),
        sa.Column("callback_token", sa.String(255), nullable=False),
        sa.Column("previous_callback_token", sa.String(255)),
        sa.Column("previous_callback_token_expires_at", Timestamp),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("use_ssl", sa.Boolean, nullable=False),
        sa.Column("notes", sa.Text),
        sa.Column("meta", Json),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_table(
        "sms_messages",
        sa.Column("id", Id, primary_key=True),
        sa.Column(
            "sms_gateway_id",
            Id,
            sa.ForeignKey("sms_gateways.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("to_number", sa.String(30), nullable=False),
        sa.Column("from_sender", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("callback_url", sa.String(2048), nullable=False),
        sa.Column("delivery_status", sa.String(32), nullable=False),
        sa.Column("external_message_id", sa.String(255)),
        sa.Column("failure_reason", sa.Text),
        sa.Column("remote_response", Json),
        sa.Column("submitted_at", Timestamp),
        sa.Column("delivered_at", Timestamp),
        sa.Column("failed_at", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index(
        "ux_sms_messages_gateway_external_id",
        "sms_messages",
        ["sms_gateway_id", "external_message_id"],
        unique=True,
    )
    op.create_index(
        "ix_sms_messages_gateway_status_id",
        "sms_messages",
        ["sms_gateway_id", "delivery_status", "id"],
    )
    op.create_index(
        "ix_sms_messages_gateway_to_id", "sms_messages", ["sms_gateway_id", "to_number", "id"]
    )
    op.create_table(
        "api_keys",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("sms_messages")
    op.drop_table("sms_gateways")
