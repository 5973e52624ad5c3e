"""Gateway ids are never reused; every previous callback token is kept until its own grace ends;
room for encrypted passwords.

- SQLite reuses the highest rowid after a delete unless the table says AUTOINCREMENT: a new
  gateway would get a deleted one's id (and, for a while, its cached token and its parked
  receipts). The table is recreated with AUTOINCREMENT, rows and ids kept, and its counter
  starts above every gateway id still named anywhere (messages, parked receipts), not only
  above the ids still present: a gateway deleted before the upgrade keeps its id too.
  PostgreSQL's sequences never hand an id out twice already.
- ``previous_callback_token`` / ``previous_callback_token_expires_at`` held one previous token,
  so a second rotation silently ended the first one's grace. They become one JSON list
  ``previous_callback_tokens`` of ``{"token", "expires_at"}``: still one column, so the guard
  loads every gateway's tokens in one query.
- ``password`` becomes Text: AES-GCM ciphertext is longer than 255 characters. The downgrade
  refuses while a password is sealed or longer than 255: older code would send the sealed
  text as the password, and PostgreSQL cannot shorten the column.

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
# Frozen copy of the sealed form's prefix (api.secrets.PREFIX) as of this migration.
SEALED_PREFIX = "aesgcm:v1:"
OLD_PASSWORD_LENGTH = 255


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
    if bind.dialect.name == "sqlite":
        _start_ids_above_every_known_gateway(bind)


def _start_ids_above_every_known_gateway(bind) -> None:
    """The rebuild seeded the AUTOINCREMENT counter from the ids still present; a gateway
    deleted before the upgrade may still be named by its messages or parked receipts, and
    its id must not come back. (api_keys.gateway_ids and audit_events come with 0005.)"""
    highest = bind.execute(sa.text(
        "SELECT max(id) FROM (SELECT max(id) AS id FROM sms_gateways"
        " UNION ALL SELECT max(sms_gateway_id) FROM sms_messages"
        " UNION ALL SELECT max(sms_gateway_id) FROM unmatched_receipts)")).scalar()
    if highest is not None:
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'sms_gateways'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('sms_gateways', :seq)"),
                     {"seq": highest})


def _refuse_passwords_older_code_cannot_use(bind) -> None:
    """Before any change: a sealed password would be sent to the gateway as it is by the code
    before 0004, and one over 255 characters does not fit its column (PostgreSQL fails half-way)."""
    table = sa.table("sms_gateways", sa.column("id"), sa.column("password"))
    ids = bind.execute(sa.select(table.c.id).where(sa.or_(
        table.c.password.startswith(SEALED_PREFIX, autoescape=True),
        sa.func.length(table.c.password) > OLD_PASSWORD_LENGTH)).order_by(table.c.id)).scalars().all()
    if ids:
        which = f"gateway {ids[0]} has" if len(ids) == 1 else f"gateways {', '.join(map(str, ids))} have"
        raise RuntimeError(
            f"cannot downgrade below 0004: {which} a password that is encrypted or longer than "
            f"{OLD_PASSWORD_LENGTH} characters, which the code before 0004 would send as it is or cannot "
            "store. Set those passwords again (at most 255 characters) with SMSGW_SECRET_KEY unset, then "
            "downgrade. The passwords and the gateways table are untouched.")


def downgrade() -> None:
    """Back to one previous token: the one whose grace ends last survives."""
    bind = op.get_bind()
    _refuse_passwords_older_code_cannot_use(bind)
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
