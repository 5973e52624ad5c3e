"""The state-change pipeline: request → plan → batch → commit → answer.

Every change to a message's state (``api.changes``) is submitted here and
waits. One task takes everything waiting (up to ``max_batch``), has it applied
in one transaction (``api.batches``: a handful of statements, whatever the
batch's size), and answers every caller only once that transaction has
committed: a receipt acknowledged is a receipt stored.

A commit costs far more than the statements before it (on SQLite, a WAL
write; measured here: ~4,500 single-row commits/s against ~200,000 rows/s
batched), so the more changes wait, the more share one commit.

If a batch fails, its changes are retried one transaction each, so one bad
change cannot fail the others; each caller gets its own outcome.

Two drivers run a batch's steps, and nothing else: ``SqliteBatches`` on its
own thread over sqlite3 (a thread hop per batch, not per statement), and
``PostgresBatches`` over asyncpg, which retries a batch that lost a deadlock or
a serialization conflict to another replica (locks are taken in a fixed order,
so this is rare), so a caller never sees one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from api import batches, clock, db, metrics
from api.webhook_batches import is_webhook_change
from api.changes import Change

log = logging.getLogger("smsgw.pipeline")

# A batch of this many changes other than the webhook worker's means they come in faster
# than one commit at a time can take them: the worker then leaves room (api.webhook_worker).
PRESSED_BATCH = 8
Commit = Callable[[list[Change]], Awaitable[list[Any]]]  # a batch -> each change's outcome, committed


@dataclass
class Waiting:
    """A change waiting for its batch's commit."""

    change: Change
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Pipeline:
    def __init__(self, commit: Commit, max_batch: int = 256, pressure_hold: float = 1.0):
        self.commit = commit
        self.max_batch = max_batch
        self.queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.stopped = False
        self.drained = asyncio.Event()  # nothing queued and no batch under way
        # Told each committed batch's changes, after its callers are answered (the webhook
        # worker: a change of a message may have made deliveries). Each must be quick.
        self.listeners: list[Callable[[list[Change]], None]] = []
        # Until when the pipeline counts as pressed: a batch full of other changes than the webhook
        # worker's was seen less than ``pressure_hold`` seconds ago. Held, not read off each batch:
        # one small batch in a rush would otherwise let the worker take a whole slate at once.
        self.pressure_hold = pressure_hold
        self._pressed_until = 0.0
        self._current: list[Waiting] = []

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pressed(self) -> bool:
        """Are changes other than the webhook worker's coming in faster than one commit at a
        time takes them (now, or less than ``pressure_hold`` seconds ago)?"""
        return time.monotonic() < self._pressed_until

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Refuse new changes, let what is queued commit (for at most ``drain_timeout``
        seconds), then stop: a caller is never told "failed" about a change that commits."""
        self.stopped = True
        if self.task is not None and not self.task.done():
            try:
                await asyncio.wait_for(self.drained.wait(), drain_timeout)
            except TimeoutError:
                log.warning("stopping with %d changes not committed", self.queue.qsize() + len(self._current))
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        left = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        self._fail(left, RuntimeError("the state-change pipeline stopped"))  # nobody waits forever

    async def submit(self, change: Change) -> Any:
        """Queue ``change`` and wait until it is committed; return its outcome (``Plan.outcome``)."""
        if self.stopped or self.task is None or self.task.done():
            raise RuntimeError("the state-change pipeline is not running")
        waiting = Waiting(change)
        await self.queue.put(waiting)
        return await waiting.done

    async def _run(self) -> None:
        try:
            while True:
                self._current = []
                if self.queue.empty():
                    self.drained.set()
                batch = self._current = [await self.queue.get()]
                self.drained.clear()
                while len(batch) < self.max_batch and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                self.batches += 1
                metrics.WAITING_CHANGES.set(self.queue.qsize())  # once a batch: the backlog it leaves
                if len(batch) >= PRESSED_BATCH and sum(
                        1 for w in batch if not is_webhook_change(w.change)) >= PRESSED_BATCH:
                    self._pressed_until = time.monotonic() + self.pressure_hold
                try:
                    outcomes = await self.commit([w.change for w in batch])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if db.is_unavailable(exc):
                        # The database could do nothing (away, locked, full): one by one would
                        # only wait as long again for each change. Every caller hears it now.
                        log.warning("a batch of %d changes could not be stored: the database is unavailable "
                                    "(%s)", len(batch), type(exc).__name__)
                        self._fail(batch, exc)
                        continue
                    log.error("a batch of %d changes failed; applying them one by one", len(batch),
                              exc_info=exc)
                    await self._one_by_one(batch)
                    continue
                for waiting, outcome in zip(batch, outcomes):
                    if not waiting.done.done():
                        waiting.done.set_result(outcome)
                self._tell([w.change for w in batch])
        finally:
            # Stopped (or broken): nobody waits forever on a change taken off the queue.
            self._fail(self._current, RuntimeError("the state-change pipeline stopped"))

    @staticmethod
    def _fail(batch: list[Waiting], exc: BaseException) -> None:
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_exception(exc)

    async def _one_by_one(self, batch: list[Waiting]) -> None:
        for waiting in batch:
            try:
                outcome = (await self.commit([waiting.change]))[0]
            except Exception as exc:
                self._fail([waiting], exc)
            else:
                if not waiting.done.done():
                    waiting.done.set_result(outcome)
                self._tell([waiting.change])

    def _tell(self, committed: list[Change]) -> None:
        for listener in self.listeners:
            try:
                listener(committed)
            except Exception:  # a listener's fault never stops the pipeline
                log.exception("a pipeline listener failed")


# --- the drivers ---------------------------------------------------------------------


def run_batch(connection: sa.Connection, batch: list[Change], unmatched_ttl: float,
              entered: Counter | None = None) -> list[Any]:
    """Run one batch's steps (``api.batches.apply``) on ``connection``, inside its transaction.

    Written once for both databases: SQLite's driver calls it on its own thread,
    PostgreSQL's through ``AsyncConnection.run_sync`` (asyncpg underneath). The
    drivers count a batch (``api.metrics.committed``) only once it has committed.
    """
    flow, result = batches.apply(batch, clock.now_iso(), unmatched_ttl, connection.dialect.name, entered), None
    while True:
        try:
            step = flow.send(result)
        except StopIteration as done:
            return done.value
        result = None
        if isinstance(step, batches.Read):
            result = db.fetch_all(connection, step.statement, step.params)
        elif isinstance(step, batches.Write):
            db.execute_many(connection, step.statement, step.rows)
        elif connection.dialect.name == "postgresql":
            connection.execute(db.lock_keys(step.keys))
        # else a Lock on SQLite: the write lock, taken at BEGIN, already covers every key


class SqliteBatches:
    """Batches on a SQLite file: each one whole on this driver's thread and connection.

    ``BEGIN IMMEDIATE`` takes the write lock before the batch reads, so nothing
    changes its rows between the read and the write; ``synchronous`` is as
    ``api.db.sqlite_synchronous`` says (NORMAL: a commit is in the WAL, safe from
    any crash of smsgw).
    """

    def __init__(self, url: str, unmatched_ttl: float):
        self.unmatched_ttl = unmatched_ttl
        self.engine = db.sqlite_sync_engine(url)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smsgw-batches")
        self.checkpoints = db.WalCheckpoints(db.sqlite_file(url))
        self.checkpoints.start()

    async def commit(self, batch: list[Change]) -> list[Any]:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self.thread, self._commit, batch)
        if self.checkpoints.long:  # after the callers are answered, before the next batch
            loop.run_in_executor(self.thread, self._finish_checkpoint)
        return outcomes

    def _commit(self, batch: list[Change]) -> list[Any]:
        entered, started = Counter(), time.perf_counter()
        with self.engine.begin() as connection:
            outcomes = run_batch(connection, batch, self.unmatched_ttl, entered)
        metrics.committed(batch, outcomes, entered, time.perf_counter() - started)
        return outcomes

    def _finish_checkpoint(self) -> None:
        with self.engine.connect() as connection:  # between transactions, as a checkpoint must be
            self.checkpoints.finish(connection.connection.dbapi_connection)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self.engine.dispose)
        self.thread.shutdown()
        await asyncio.get_running_loop().run_in_executor(None, self.checkpoints.stop)


class PostgresBatches:
    """Batches on PostgreSQL, on a connection of the driver's own; a batch that lost
    a deadlock or a serialization conflict to another replica runs again."""

    ATTEMPTS = 8

    def __init__(self, url: str, unmatched_ttl: float):
        self.unmatched_ttl = unmatched_ttl
        self.engine = create_async_engine(db.connect_url(url), pool_size=1, max_overflow=1, pool_pre_ping=True,
                                          hide_parameters=True)  # an error never carries a receipt's fields

    async def commit(self, batch: list[Change]) -> list[Any]:
        for attempt in range(1, self.ATTEMPTS + 1):
            entered, started = Counter(), time.perf_counter()
            try:
                async with self.engine.begin() as connection:
                    outcomes = await connection.run_sync(run_batch, batch, self.unmatched_ttl, entered)
                metrics.committed(batch, outcomes, entered, time.perf_counter() - started)
                return outcomes
            except sa.exc.DBAPIError as exc:
                if not db.is_retryable_conflict(exc) or attempt == self.ATTEMPTS:
                    raise
                log.info("a batch of %d changes lost a lock conflict (attempt %d); retrying", len(batch), attempt)
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.engine.dispose()


def open_batches(url: str, unmatched_ttl: float) -> SqliteBatches | PostgresBatches:
    if db.dialect_of(url) == "sqlite":
        return SqliteBatches(url, unmatched_ttl)
    return PostgresBatches(url, unmatched_ttl)
