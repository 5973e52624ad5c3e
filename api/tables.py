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
    sa.Column("password", sa.Text),
    sa.Column("default_sender_id", sa.String(20)),
    sa.Column("callback_token", sa.String(255), nullable=False),
    # Tokens replaced by rotations whose grace has not ended (maybe ended: pruned on the next
    # rotation): a list of {"token", "expires_at"}. One column, so one query loads every token.
    sa.Column("previous_callback_tokens", Json, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("use_ssl", sa.Boolean, nullable=False),
    sa.Column("notes", sa.Text),
    sa.Column("meta", Json),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # How the dispatcher may use it (api.dispatcher, api.pacing).
    sa.Column("throughput_per_second", sa.Float),  # null: no limit
    sa.Column("max_in_flight", sa.Integer, nullable=False, server_default="16"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
    sa.Column("retry_ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("default_validity_seconds", sa.Integer),  # null: messages never expire
    # A deleted gateway's id is never handed out again (SQLite reuses the highest rowid
    # otherwise): receipts and cached tokens of the old gateway must not reach a new one.
    # A migration that rebuilds this table on SQLite must pass this again (batch
    # table_kwargs); reflection does not carry it over.
    sqlite_autoincrement=True,
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
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("status_conflict", sa.Boolean, nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("remote_response", Json),
    sa.Column("submitted_at", Timestamp),
    sa.Column("delivered_at", Timestamp),
    sa.Column("failed_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("client_reference", sa.String(64)),
    sa.Column("batch_id", Id),
    sa.Column("send_at", Timestamp),
    sa.Column("validity_period", sa.Integer),  # seconds
    sa.Column("expires_at", Timestamp),        # not handed to the gateway by then: failed, expired
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # gateway calls begun
    sa.Column("next_attempt_at", Timestamp),   # set only while it waits for the dispatcher
    sa.Column("claimed_at", Timestamp),        # set only while a gateway call for it may be under way
    sa.Column("canceled_at", Timestamp),
    # Grows by one with each change of state or status (api.notices): a status webhook
    # carries it, so an app can drop a stale one that arrives late.
    sa.Column("sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Index(
        "ux_sms_messages_gateway_external_id",
        "sms_gateway_id",
        "external_message_id",
        unique=True,
    ),
    # No index holds state or delivery_status whole: a receipt would rewrite it (see migration 0006).
    sa.Index("ix_sms_messages_gateway_id", "sms_gateway_id", "id"),
    sa.Index("ix_sms_messages_gateway_to_id", "sms_gateway_id", "to_number", "id"),
    sa.Index("ux_sms_messages_gateway_idempotency_key", "sms_gateway_id", "idempotency_key", unique=True),
    # Partial, so a receipt touches neither (see migration 0007).
    sa.Index("ix_sms_messages_due", "sms_gateway_id", "next_attempt_at",
             sqlite_where=sa.text("next_attempt_at IS NOT NULL"), postgresql_where=sa.text("next_attempt_at IS NOT NULL")),
    sa.Index("ix_sms_messages_claimed", "claimed_at",
             sqlite_where=sa.text("claimed_at IS NOT NULL"), postgresql_where=sa.text("claimed_at IS NOT NULL")),
    sa.Index("ix_sms_messages_gateway_reference", "sms_gateway_id", "client_reference", "id"),
    sa.Index("ix_sms_messages_batch_id", "batch_id", "id"),
)

# A batch send: its messages carry its id; its Idempotency-Key covers them all.
batches = sa.Table(
    "sms_batches",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("sms_gateway_id", Id, sa.ForeignKey("sms_gateways.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ux_sms_batches_gateway_idempotency_key", "sms_gateway_id", "idempotency_key", unique=True),
)

# Each gateway's token bucket (api.pacing), shared by every replica; made on first use.
pacing = sa.Table(
    "gateway_pacing",
    metadata,
    sa.Column("sms_gateway_id", Id, primary_key=True, autoincrement=False),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("refilled_at", Timestamp, nullable=False),
    sa.Column("paused_until", Timestamp),
)

# Every receipt and every state change, in order: a message's history.
events = sa.Table(
    "sms_message_events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("message_id", Id, sa.ForeignKey("sms_messages.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "receipt" or "state"
    sa.Column("raw_status", sa.String(32)),
    sa.Column("state_before", sa.String(16)),
    sa.Column("state_after", sa.String(16)),
    sa.Column("changed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", Json),
    sa.Column("source_address", sa.String(64)),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_sms_message_events_message_id", "message_id", "id"),
)

# Receipts whose message is not known (yet): kept, applied when it is, or expired.
unmatched_receipts = sa.Table(
    "unmatched_receipts",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("sms_gateway_id", Id, nullable=False),
    sa.Column("external_message_id", sa.String(255), nullable=False),
    sa.Column("raw_status", sa.String(32), nullable=False),
    sa.Column("payload", Json),
    sa.Column("source_address", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # pending, applied, expired
    sa.Column("message_id", Id),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp),
    sa.Index("ix_unmatched_receipts_lookup", "sms_gateway_id", "external_message_id", "status"),
    sa.Index("ix_unmatched_receipts_gateway_id", "sms_gateway_id", "id"),
    sa.Index("ix_unmatched_receipts_status_expires", "status", "expires_at"),
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
    # What the key may do (api.scopes): a JSON list of scope names; keys made
    # before scopes existed were given every scope by migration 0005.
    sa.Column("scopes", Json, nullable=False),
    # JSON list of gateway ids the key may use; NULL = every gateway.
    sa.Column("gateway_ids", Json),
    # JSON list of ISO 3166 alpha-2 destination countries; NULL = anywhere.
    sa.Column("allowed_countries", Json),
)

# The audit trail: append-only (no route changes or deletes a row), each row
# chained to the one before by ``hash`` (api.audit_chain), so an edited or
# missing row is found by ``smsgw audit verify``.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("actor_key_id", Id),  # NULL for the admin key and the CLI
    sa.Column("actor", sa.String(255), nullable=False),  # the key's name, "admin key" or "cli"
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target_type", sa.String(32)),
    sa.Column("target_id", Id),
    sa.Column("details", Json),
    sa.Column("source_address", sa.String(64)),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_events_action_id", "action", "id"),
    sqlite_autoincrement=True,  # an id is never handed out twice, even after a (forbidden) delete
)

# Where apps hear about their messages (api.webhook_endpoints): Standard Webhooks, signed.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.String(255)),
    sa.Column("events", Json, nullable=False),    # JSON list of event types (api.notices.EVENT_TYPES)
    sa.Column("gateway_ids", Json),               # JSON list of gateway ids; NULL = every gateway
    sa.Column("is_active", sa.Boolean, nullable=False),
    # whsec_... sealed like gateway passwords (api.secrets) when SMSGW_SECRET_KEY is set
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("previous_secret", sa.Text),        # still signs beside the new one until ...
    sa.Column("previous_secret_expires_at", Timestamp),
    sa.Column("failing_since", Timestamp),        # first failure since the last success; NULL: not failing
    sa.Column("disabled_at", Timestamp),          # set when smsgw disabled it (410 Gone, failing for days)
    sa.Column("disabled_reason", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sqlite_autoincrement=True,  # a deleted endpoint's id is never handed out again
)

# The outbox: each change of a message that some endpoint subscribes to, written in the
# same transaction as the change (api.batches). Its identity is (message, sequence).
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("sms_messages.id", ondelete="CASCADE"), primary_key=True,
              autoincrement=False),
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sms_gateway_id", Id, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    sa.Column("snapshot", Json, nullable=False),  # the message's changing columns, as the change left them
    sa.Index("ix_webhook_events_occurred_at", "occurred_at"),
)

# One event to one endpoint: tried until a 2xx, on the retry schedule (api.webhook_schedule).
# ``endpoint_id`` has no foreign key on purpose: a receipt's batch writes deliveries, and an
# endpoint deleted at that moment must not fail the receipt. Deleting an endpoint deletes its
# deliveries; one that slipped in meanwhile is never claimed (claims join active endpoints).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("endpoint_id", Id, nullable=False),  # no foreign key: see above
    sa.Column("message_id", Id, nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivering, succeeded, failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # when it is due: the next attempt's time, or while delivering the end of the
    # worker's lease (a worker that died leaves it due again); NULL once it has ended
    sa.Column("next_attempt_at", Timestamp),
    sa.Column("last_attempt_at", Timestamp),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_latency_ms", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("last_response", sa.Text),        # the first 4 KiB of the answer
    sa.Column("delivered_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # (message, sequence) first: housekeeping asks whether an event is still wanted by it
    sa.Index("ux_webhook_deliveries_event_endpoint", "message_id", "sequence", "endpoint_id", unique=True),
    sa.Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
    sa.Index("ix_webhook_deliveries_due", "next_attempt_at",
             sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
             postgresql_where=sa.text("next_attempt_at IS NOT NULL")),
    # deliveries that are not due (ended, or waiting for their endpoint), by age: housekeeping's
    # pruning; a new delivery is due, so a receipt's batch does not touch it
    sa.Index("ix_webhook_deliveries_not_due", "updated_at",
             sqlite_where=sa.text("next_attempt_at IS NULL"), postgresql_where=sa.text("next_attempt_at IS NULL")),
    sqlite_autoincrement=True,
)
