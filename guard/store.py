"""Callback tokens, read from the API's database through a short-lived cache.

The guard only ever SELECTs. Every answer — a gateway's tokens, or that no
such gateway exists — is kept for ``ttl`` seconds, so a flood of receipts (or
of bad tokens) for one gateway costs one query per ``ttl``. That is also how
long a rotation with no grace, or a deleted gateway, takes to reach the guard.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa
from databases import Database

from api import db
from api.tables import gateways

DEFAULT_TTL = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Credentials:
    current: str
    previous: str | None
    previous_expires_at: str | None


class TokenStore:
    def __init__(self, database: Database, ttl: float = DEFAULT_TTL, max_entries: int = MAX_ENTRIES,
                 clock=time.monotonic):
        self.database = database
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[int, tuple[float, Credentials | None]] = OrderedDict()
        self.queries = 0  # how often the database was asked; for tests and metrics

    async def credentials(self, gateway_id: int) -> Credentials | None:
        """The gateway's tokens, or None when there is no such gateway. Raises on database errors."""
        now = self.clock()
        cached = self._cache.get(gateway_id)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(gateway_id)
            return cached[1]
        self.queries += 1
        row = await self.database.fetch_one(
            sa.select(gateways.c.callback_token, gateways.c.previous_callback_token,
                      gateways.c.previous_callback_token_expires_at)
            .where(gateways.c.id == gateway_id)
        )
        found = None
        if row is not None:
            values = db.as_dict(row)
            found = Credentials(values["callback_token"], values["previous_callback_token"],
                                values["previous_callback_token_expires_at"])
        self._cache[gateway_id] = (now + self.ttl, found)
        self._cache.move_to_end(gateway_id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return found

    async def ping(self) -> None:
        """Raise unless the gateways table can be read (the guard's health)."""
        await self.database.fetch_val(sa.select(sa.literal(1)).select_from(gateways).limit(1))
