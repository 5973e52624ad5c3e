"""Callback tokens, read from the API's database through a short-lived cache.

The guard only ever SELECTs. It reads every gateway's tokens in one query and
keeps them for ``ttl`` seconds: gateways are few, and a flood of receipts — with
bad tokens — then costs one query per ``ttl``. An id it does not know is looked
up on its own, so a gateway created a moment ago is found at once; the answer
is remembered for ``ttl``, and such lookups are capped at
``MISS_LOOKUPS_PER_SECOND`` in all, so made-up ids cannot become a query each.
``ttl`` is how long a rotation with no grace, or a deleted gateway, takes to
reach the guard.
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
# An id not in the cache may be a gateway created since the last load: it is
# looked up on its own (then remembered either way for ``ttl``), at most this
# many such lookups a second in all, so made-up ids cannot become a query each.
MISS_LOOKUPS_PER_SECOND = 20
MAX_REMEMBERED_MISSES = 10_000


@dataclass(frozen=True)
class Credentials:
    current: str
    previous: tuple[tuple[str, str], ...] = ()  # (token, expires_at) of earlier tokens


def credentials_of(values) -> Credentials:
    history = values["previous_callback_tokens"] or []
    return Credentials(values["callback_token"],
                       tuple((entry["token"], entry["expires_at"]) for entry in history))


class TokenStore:
    def __init__(self, database: Database, ttl: float = DEFAULT_TTL, clock=time.monotonic):
        self.database = database
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[int, Credentials] = {}
        self._fresh_until = float("-inf")
        self._misses: dict[int, float] = {}  # id -> until when "no such gateway" holds
        self._window, self._window_lookups = float("-inf"), 0
        self._lock = asyncio.Lock()
        self.queries = 0  # how often the database was asked; for tests and metrics

    async def credentials(self, gateway_id: int) -> Credentials | None:
        """The gateway's tokens, or None when there is no such gateway. Raises on database errors."""
        if self.clock() >= self._fresh_until:
            async with self._lock:  # one reload at a time; the others wait for it, then use it
                if self.clock() >= self._fresh_until:
                    await self._reload()
        found = self._tokens.get(gateway_id)
        if found is None and self._may_look_up(gateway_id):
            found = await self._look_up(gateway_id)
        return found

    def _may_look_up(self, gateway_id: int) -> bool:
        now = self.clock()
        if self._misses.get(gateway_id, float("-inf")) > now:
            return False  # known not to exist, for now
        if now - self._window >= 1.0:
            self._window, self._window_lookups = now, 0
        if self._window_lookups >= MISS_LOOKUPS_PER_SECOND:
            return False  # a flood of unknown ids: refused without a query
        self._window_lookups += 1
        return True

    async def _look_up(self, gateway_id: int) -> Credentials | None:
        """One gateway, by id: one created since the last load is found at once."""
        self.queries += 1
        row = await self.database.fetch_one(
            sa.select(gateways.c.callback_token, gateways.c.previous_callback_tokens)
            .where(gateways.c.id == gateway_id))
        if row is None:
            if len(self._misses) >= MAX_REMEMBERED_MISSES:
                self._misses.clear()
            self._misses[gateway_id] = self.clock() + self.ttl
            return None
        found = self._tokens[gateway_id] = credentials_of(db.as_dict(row))
        return found

    async def _reload(self) -> None:
        self.queries += 1
        rows = await self.database.fetch_all(
            sa.select(gateways.c.id, gateways.c.callback_token, gateways.c.previous_callback_tokens)
        )
        self._tokens = {values["id"]: credentials_of(values) for values in map(db.as_dict, rows)}
        self._misses.clear()
        self._fresh_until = self.clock() + self.ttl

    async def ping(self) -> None:
        """Raise unless the gateways table can be read (the guard's health)."""
        await self.database.fetch_val(sa.select(gateways.c.id).limit(1))
