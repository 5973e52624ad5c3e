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
    if keyring.current is not None and values.get("password") is not None:
        values["password"] = secrets.seal(keyring, values["password"], PURPOSE)
    return values


def opened(keyring: secrets.Keyring, gateway: Mapping[str, Any]) -> dict[str, Any]:
    """``gateway`` with its password readable, for ``api.gateway_call`` only; SecretUnavailable otherwise."""
    stored = gateway.get("password")
    return {**gateway, "password": secrets.unseal(keyring, stored, PURPOSE) if stored is not None else None}


async def rotate(database, dialect: str, keyring: secrets.Keyring) -> tuple[int, int]:
    """Seal every stored password under the current key, in one transaction.

    Plaintext rows and rows sealed with an older key (found in the keyring's
    previous keys) are re-encrypted; rows already under the current key are left
    alone, so running it again changes nothing. If any row cannot be opened, the
    transaction is rolled back and RotationFailed names the gateways and why.
    Returns (rows changed, rows with a password).
    """
    async with db.write_transaction(database, dialect) as connection:
        rows = await connection.fetch_all(
            sa.select(gateways.c.id, gateways.c.password).where(gateways.c.password.is_not(None))
            .order_by(gateways.c.id).with_for_update())
        changes, problems = {}, []
        for row in rows:
            try:
                new = secrets.reseal(keyring, row["password"], PURPOSE)
            except secrets.SecretUnavailable as exc:
                problems.append(f"gateway {row['id']}: password {exc}")
                continue
            if new is not None:
                changes[row["id"]] = new
        if problems:
            raise RotationFailed("; ".join(problems))
        for gateway_id, new in changes.items():
            await connection.execute(gateways.update().where(gateways.c.id == gateway_id).values(password=new))
    return len(changes), len(rows)
