"""Gateway ids are never reused; every previous callback token is kept until its own grace ends;
room for encrypted passwords.

- SQLite reuses the highest rowid after a delete unless the table says AUTOINCREMENT: a new
  gateway would get a deleted one's id (and, for a while, its cached token and its parked
  receipts). The table is recreated with AUTOINCREMENT, rows and ids kept. PostgreSQL's
  sequences never hand an id out twice already.
- ``previous_callback_token`` / ``previous_callback_token_expires_at`` held one previous token,
  so a second rotation silently ended the first one's grace. They become one JSON list
  ``previous_callback_tokens`` of ``{"token", "expires_at"}``: still one column, so the guard
  loads every gateway's tokens in one query.
- ``password`` becomes Text: AES-GCM ciphertext is longer than 255 characters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Timestamp = sa.String(32)


def _recreate(bind) -> dict:
    """Batch arguments: on SQLite the table is rebuilt, with AUTOINCREMENT (reflection does not
    carry the keyword over, so every later rebuild of this table must pass it again)."""
    if bind.dialect.name == "sqlite":
        return {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    return {}


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("sms_gateways") as batch:
        batch.add_column(sa.Column("previous_callback_tokens", Json, nullable=False,
                                   server_default=sa.text("'[]'")))
    old = sa.table("sms_gateways", sa.column("id"), sa.column("previous_callback_token"),
                   sa.column("previous_callback_token_expires_at"),
                   sa.column("previous_callback_tokens", Json))
    rows = bind.execute(sa.select(old.c.id, old.c.previous_callback_token,
                                  old.c.previous_callback_token_expires_at)
                        .where(old.c.previous_callback_token.is_not(None),
                               old.c.previous_callback_token_expires_at.is_not(None))).all()
    for gateway_id, token, expires_at in rows:
        bind.execute(old.update().where(old.c.id == gateway_id).values(
            previous_callback_tokens=[{"token": token, "expires_at": expires_at}]))
    with op.batch_alter_table("sms_gateways", **_recreate(bind)) as batch:
        batch.alter_column("password", existing_type=sa.String(255), type_=sa.Text)
        batch.drop_column("previous_callback_token")
        batch.drop_column("previous_callback_token_expires_at")


def downgrade() -> None:
    """Back to one previous token: the one whose grace ends last survives."""
    bind = op.get_bind()
    with op.batch_alter_table("sms_gateways") as batch:
        batch.add_column(sa.Column("previous_callback_token", sa.String(255)))
        batch.add_column(sa.Column("previous_callback_token_expires_at", Timestamp))
    new = sa.table("sms_gateways", sa.column("id"), sa.column("previous_callback_tokens"),
                   sa.column("previous_callback_token"), sa.column("previous_callback_token_expires_at"))
    for gateway_id, history in bind.execute(sa.select(new.c.id, new.c.previous_callback_tokens)).all():
        history = json.loads(history) if isinstance(history, str) else (history or [])
        if history:
            last = max(history, key=lambda entry: entry["expires_at"])
            bind.execute(new.update().where(new.c.id == gateway_id).values(
                previous_callback_token=last["token"], previous_callback_token_expires_at=last["expires_at"]))
    with op.batch_alter_table("sms_gateways") as batch:
        batch.drop_column("previous_callback_tokens")
        batch.alter_column("password", existing_type=sa.Text, type_=sa.String(255))
