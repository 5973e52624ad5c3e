"""Callback tokens, read from the API's database through a short-lived cache.

The guard only ever SELECTs. It reads every gateway's tokens in one query and
keeps them for ``ttl`` seconds: gateways are few, and a flood of receipts — with
bad tokens, or for made-up gateway ids — then costs one query per ``ttl`` in
all, not one per id. ``ttl`` is also how long a rotation with no grace, or a
deleted gateway, takes to reach the guard.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import sqlalchemy as sa
from databases import Database

from api import db
from api.tables import gateways

DEFAULT_TTL = 5.0


@dataclass(frozen=True)
class Credentials:
    current: str
    previous: str | None
    previous_expires_at: str | None


class TokenStore:
    def __init__(self, database: Database, ttl: float = DEFAULT_TTL, clock=time.monotonic):
        self.database = database
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[int, Credentials] = {}
        self._fresh_until = float("-inf")
        self._lock = asyncio.Lock()
        self.queries = 0  # how often the database was asked; for tests and metrics

    async def credentials(self, gateway_id: int) -> Credentials | None:
        """The gateway's tokens, or None when there is no such gateway. Raises on database errors."""
        if self.clock() >= self._fresh_until:
            async with self._lock:  # one reload at a time; the others wait for it
                if self.clock() >= self._fresh_until:
                    await self._reload()
        return self._tokens.get(gateway_id)

    async def _reload(self) -> None:
        self.queries += 1
        rows = await self.database.fetch_all(
            sa.select(gateways.c.id, gateways.c.callback_token, gateways.c.previous_callback_token,
                      gateways.c.previous_callback_token_expires_at)
        )
        tokens = {}
        for row in rows:
            values = db.as_dict(row)
            tokens[values["id"]] = Credentials(values["callback_token"], values["previous_callback_token"],
                                               values["previous_callback_token_expires_at"])
        self._tokens = tokens
        self._fresh_until = self.clock() + self.ttl

    async def ping(self) -> None:
        """Raise unless the gateways table can be read (the guard's health)."""
        await self.database.fetch_val(sa.select(sa.literal(1)).select_from(gateways).limit(1))
