"""Indexes a receipt does not have to update.

A receipt changes a message's ``state`` and ``delivery_status``. Every index
holding one of those columns is rewritten by it: measured on SQLite, the two
such indexes cost 47 of 75 µs of each receipt's SQL. So:

- ``ix_sms_messages_state_created (state, created_at)`` becomes partial, ``WHERE
  state = 'queued'``: housekeeping (and a dispatcher) look for queued messages
  only, and a receipt never touches a queued message's entry.
- ``ix_sms_messages_gateway_status_id`` goes. A gateway's messages are listed
  through the new ``ix_sms_messages_gateway_id (sms_gateway_id, id)``, which no
  change rewrites; a filter on state or status reads that index newest first
  and skips what does not match.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUED = sa.text("state = 'queued'")


def upgrade() -> None:
    op.drop_index("ix_sms_messages_state_created", table_name="sms_messages")
    op.create_index("ix_sms_messages_queued_created", "sms_messages", ["created_at"],
                    sqlite_where=QUEUED, postgresql_where=QUEUED)
    op.drop_index("ix_sms_messages_gateway_status_id", table_name="sms_messages")
    op.create_index("ix_sms_messages_gateway_id", "sms_messages", ["sms_gateway_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_sms_messages_gateway_id", table_name="sms_messages")
    op.create_index("ix_sms_messages_gateway_status_id", "sms_messages", ["sms_gateway_id", "delivery_status", "id"])
    op.drop_index("ix_sms_messages_queued_created", table_name="sms_messages")
    op.create_index("ix_sms_messages_state_created", "sms_messages", ["state", "created_at"])
