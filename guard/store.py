"""Callback tokens, read from the API's database through a short-lived cache.

The guard only ever SELECTs. It reads every gateway's tokens in one query and
keeps them for ``ttl`` seconds: gateways are few, and a flood of receipts then
costs one query per ``ttl``. A gateway missing from a reload is gone.

The cache may be behind the database: a gateway created, or a token rotated, a
moment ago. So a refusal is never made on cached data alone: a well-formed
token the cache does not accept is checked against the database with a read of
that one gateway (``recheck``), unless the cache already holds a read begun
after the request arrived. The answer replaces the cached credentials (or drops
a deleted gateway). These reads are rationed, so a flood of bad tokens or
made-up ids cannot become a query each: ``RECHECKS_PER_SECOND_PER_GATEWAY`` (with
a burst of ``RECHECK_BURST``) per gateway id, and ``MISS_LOOKUPS_PER_SECOND`` in
all. When the ration is spent the store says UNCHECKED, and the guard answers a
retryable 503, never a 403 it did not check.

``ttl`` is how long a revocation (a rotation with no grace) or a delete takes to
reach the guard for a token that still matches its cache.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from databases import Database

from api import db
from api.tables import gateways
from guard import metrics
from guard.decision import UNCHECKED

DEFAULT_TTL = 5.0
# Single-gateway reads (a new gateway's id, a token the cache does not know), in all.
MISS_LOOKUPS_PER_SECOND = 20
# ... and per gateway id, so one gateway flooded with bad tokens costs about one read a second,
# while a few rotations in a row are still each seen at once.
RECHECKS_PER_SECOND_PER_GATEWAY = 1
RECHECK_BURST = 5
MAX_RATIONED_IDS = 10_000

COLUMNS = (gateways.c.callback_token, gateways.c.previous_callback_tokens)


@dataclass(frozen=True)
class Credentials:
    # Secrets: never in a repr (a log line, a traceback's locals, a debugger).
    current: str = field(repr=False)
    previous: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (token, expires_at) of earlier tokens


def credentials_of(values) -> Credentials:
    history = values["previous_callback_tokens"] or []
    return Credentials(values["callback_token"],
                       tuple((entry["token"], entry["expires_at"]) for entry in history))


class Ration:
    """A token bucket: ``rate`` reads a second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.left, self.at = float(burst), None

    def refill(self, now: float) -> None:
        if self.at is not None:
            self.left = min(self.burst, self.left + (now - self.at) * self.rate)
        self.at = now


class TokenStore:
    def __init__(self, database: Database, ttl: float = DEFAULT_TTL, clock=time.monotonic):
        self.database = database
        self.ttl = ttl
        self.clock = clock
        self._tokens: dict[int, Credentials] = {}
        self._read_by: dict[int, int] = {}  # id -> number of the read its credentials came from
        self._reads = 0  # database reads begun, numbered
        self._loaded_by = 0  # the number of the last full load
        self._fresh_until = float("-inf")
        self._in_all = Ration(MISS_LOOKUPS_PER_SECOND, MISS_LOOKUPS_PER_SECOND)
        self._per_id: dict[int, Ration] = {}
        self._lock = asyncio.Lock()
        self.queries = 0  # how often the database was asked; for tests and metrics

    def mark(self) -> int:
        """Taken when a request arrives: reads numbered above it began after it."""
        return self._reads

    async def credentials(self, gateway_id: int) -> Credentials | None:
        """The gateway's cached tokens, or None when the cache does not have it.
        Reloads every gateway first when the cache is older than ``ttl``. Raises on database errors."""
        stale = self.clock() >= self._fresh_until
        if stale:
            async with self._lock:  # one reload at a time; the others wait for it, then use it
                if self.clock() >= self._fresh_until:
                    await self._reload()
        found = self._tokens.get(gateway_id)
        (metrics.CACHE_MISS if stale or found is None else metrics.CACHE_HIT).inc()
        return found

    async def recheck(self, gateway_id: int, since: int):
        """The gateway's tokens as the database has them after ``since`` (a ``mark``):
        Credentials, None (no such gateway), or UNCHECKED when the ration of reads is spent."""
        if self._read_after(gateway_id, since):
            return self._tokens.get(gateway_id)
        if not self._may_read(gateway_id):
            return UNCHECKED
        self._reads += 1
        read = self._reads
        self.queries += 1
        metrics.DATABASE_READS.labels("recheck").inc()
        row = await self.database.fetch_one(sa.select(*COLUMNS).where(gateways.c.id == gateway_id))
        if row is None:
            self._tokens.pop(gateway_id, None)  # deleted (ids are never reused)
            self._read_by[gateway_id] = read
            return None
        found = self._tokens[gateway_id] = credentials_of(db.as_dict(row))
        self._read_by[gateway_id] = read
        return found

    def _read_after(self, gateway_id: int, since: int) -> bool:
        """Whether what the cache says of this id comes from a read begun after ``since``."""
        return max(self._loaded_by, self._read_by.get(gateway_id, 0)) > since

    def _may_read(self, gateway_id: int) -> bool:
        """Spend one read from this id's ration and from the ration in all, if both have one."""
        now = self.clock()
        mine = self._per_id.get(gateway_id)
        if mine is None:
            if len(self._per_id) >= MAX_RATIONED_IDS:
                self._per_id.clear()  # many made-up ids: the ration in all still caps them
            mine = self._per_id[gateway_id] = Ration(RECHECKS_PER_SECOND_PER_GATEWAY, RECHECK_BURST)
        mine.refill(now)
        self._in_all.refill(now)
        if mine.left < 1 or self._in_all.left < 1:
            return False
        mine.left -= 1
        self._in_all.left -= 1
        return True

    async def _reload(self) -> None:
        self._reads += 1
        read = self._reads
        self.queries += 1
        metrics.DATABASE_READS.labels("reload").inc()
        rows = await self.database.fetch_all(sa.select(gateways.c.id, *COLUMNS))
        self._tokens = {values["id"]: credentials_of(values) for values in map(db.as_dict, rows)}
        self._read_by = {}
        self._loaded_by = read
        self._fresh_until = self.clock() + self.ttl

    async def load(self) -> None:
        """Make sure every gateway's tokens are in the cache, loading them now if it is older
        than ``ttl``; raise on database errors (the guard's readiness: receipts can be judged)."""
        async with self._lock:
            if self.clock() >= self._fresh_until:
                await self._reload()

    async def ping(self) -> None:
        """Raise unless the gateways table can be read (the guard's health)."""
        await self.database.fetch_val(sa.select(gateways.c.id).limit(1))
