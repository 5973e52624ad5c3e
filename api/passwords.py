"""Gateway passwords at rest: where api.secrets meets the gateways table.

Passwords are sealed on the way in (create, update, ``smsgw demo``) and opened
only where one is used, by ``api.gateway_call``; no response ever carries one. Without
SMSGW_SECRET_KEY they are stored as given, as before.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa

from api import db, secrets
from api.tables import gateways

PURPOSE = "sms_gateways.password"  # the authenticated data: a sealed password opens only here


class RotationFailed(Exception):
    """Some passwords cannot be opened with the keys given; nothing was changed."""


def sealed_values(keyring: secrets.Keyring, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for an INSERT or UPDATE of gateways, the password sealed when a key is set."""
    values = dict(values)
    if values.get("password") is not None:
        values["password"] = secrets.at_rest(keyring, values["password"], PURPOSE)
    return values


def opened(keyring: secrets.Keyring, gateway: Mapping[str, Any]) -> dict[str, Any]:
    """``gateway`` with its password readable, for ``api.gateway_call`` only; SecretUnavailable otherwise."""
    stored = gateway.get("password")
    return {**gateway, "password": secrets.unseal(keyring, stored, PURPOSE) if stored is not None else None}


def _sealed_columns():
    """Every column holding a secret sealed under SMSGW_SECRET_KEY: (table, column, purpose, what a row is)."""
    from api import webhook_endpoints as hooks

    return ((gateways, "password", PURPOSE, "gateway"),
            (hooks.webhook_endpoints, "secret", hooks.PURPOSE, "webhook endpoint"),
            (hooks.webhook_endpoints, "previous_secret", hooks.PURPOSE, "webhook endpoint"))


async def rotate(database, dialect: str, keyring: secrets.Keyring) -> tuple[int, int]:
    """Seal every stored secret under the current key, in one transaction: gateway
    passwords and webhook endpoints' signing secrets.

    Plaintext values and values sealed with an older key (found in the keyring's
    previous keys) are re-encrypted; values already under the current key are left
    alone, so running it again changes nothing. If any value cannot be opened, the
    transaction is rolled back and RotationFailed names the rows and why.
    Returns (values changed, values stored).
    """
    changed, total, problems = 0, 0, []
    async with db.write_transaction(database, dialect) as connection:
        for table, name, purpose, what in _sealed_columns():
            column = table.c[name]
            rows = await connection.fetch_all(
                sa.select(table.c.id, column).where(column.is_not(None)).order_by(table.c.id).with_for_update())
            total += len(rows)
            updates = {}
            for row in rows:
                try:
                    new = secrets.reseal(keyring, row[name], purpose)
                except secrets.SecretUnavailable as exc:
                    problems.append(f"{what} {row['id']}: {name} {exc}")
                    continue
                if new is not None:
                    updates[row["id"]] = new
            if problems:
                continue  # nothing is written; every problem is still found and named
            for row_id, new in updates.items():
                await connection.execute(table.update().where(table.c.id == row_id).values({name: new}))
            changed += len(updates)
        if problems:
            raise RotationFailed("; ".join(problems))
    return changed, total
