"""The schema as SQLAlchemy Core tables: what queries are built from.

Migrations in ``api/migrations/versions`` create these tables; a migration is
frozen history, this module is the present. ``tests/test_schema.py`` checks the
two agree.

Timestamps are stored as fixed-width UTC text (``2026-11-26T21:40:53.123456Z``,
see ``api.clock``): they sort as text, read the same on SQLite and PostgreSQL,
and are already in the API's output form.
"""

from __future__ import annotations

import sqlalchemy as sa

from api.db import Id
from api.db import JsonDocument as Json

metadata = sa.MetaData()

Timestamp = sa.String(32)

gateways = sa.Table(
    "sms_gateways",
    metadata,
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

messages = sa.Table(
    "sms_messages",
    metadata,
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
    sa.Column("failure_code", sa.String(32)),
    sa.Column("encoding", sa.String(8)),
    sa.Column("segments", sa.Integer),
    sa.Column("remote_response", Json),
    sa.Column("submitted_at", Timestamp),
    sa.Column("delivered_at", Timestamp),
    sa.Column("failed_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index(
        "ux_sms_messages_gateway_external_id",
        "sms_gateway_id",
        "external_message_id",
        unique=True,
    ),
    sa.Index("ix_sms_messages_gateway_status_id", "sms_gateway_id", "delivery_status", "id"),
    sa.Index("ix_sms_messages_gateway_to_id", "sms_gateway_id", "to_number", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    # SHA-256 of the whole key. Keys carry 256 random bits, so a fast hash is
    # enough, and looking a key up by its hash never compares secrets in Python.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp),
)
