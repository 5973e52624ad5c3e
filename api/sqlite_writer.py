"""The receipt hot path on SQLite: a whole batch in one thread, on one connection.

Through ``databases``, every statement is compiled by SQLAlchemy and hops to an
aiosqlite thread: about 2 ms a receipt, whatever the commit costs. Here a batch
of receipts runs as plain sqlite3 calls on the writer's own thread — the same
decision (``api.states.decide``) and the same rows as ``api.delivery`` and
``api.unmatched.park`` write through ``databases`` (the PostgreSQL path, also
used by sends), with statements prepared once. ``BEGIN IMMEDIATE`` ... ``COMMIT``
around the batch, with ``synchronous`` as ``api.db.sqlite_synchronous`` says
(NORMAL: a receipt acknowledged is in the WAL, safe from any crash of smsgw).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from api import clock, states

SELECT_MESSAGE = ("SELECT id, state, delivery_status, status_conflict, remote_response FROM sms_messages "
                  "WHERE sms_gateway_id = ? AND external_message_id = ?")
# remote_response is merged here in Python, shallow, as PostgreSQL's || does
# (see api.db.json_merged): the batch holds SQLite's write lock, so nothing can
# change the row between this read and this write. (json_patch in SQL costs
# three times as much.)
UPDATE_CHANGED = ("UPDATE sms_messages SET state = ?, delivery_status = ?, delivered_at = ?, updated_at = ?, "
                  "failed_at = ?, "
                  "status_conflict = status_conflict OR ?, remote_response = ? WHERE id = ?")
FLAG_CONFLICT = "UPDATE sms_messages SET status_conflict = 1 WHERE id = ? AND status_conflict = 0"
INSERT_EVENT = ("INSERT INTO sms_message_events (message_id, kind, raw_status, state_before, state_after, changed, "
                "reason, payload, source_address, received_at, created_at) VALUES (?, 'receipt', ?, ?, ?, ?, ?, ?, ?, ?, ?)")
GATEWAY_EXISTS = "SELECT 1 FROM sms_gateways WHERE id = ?"
INSERT_UNMATCHED = ("INSERT INTO unmatched_receipts (sms_gateway_id, external_message_id, raw_status, payload, "
                    "source_address, status, received_at, expires_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)")


class SqliteReceiptBatches:
    def __init__(self, path: Path, unmatched_ttl: float, synchronous: str = "NORMAL"):
        self.path = path
        self.synchronous = synchronous
        self.unmatched_ttl = unmatched_ttl
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smsgw-receipts")
        self.connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.connection is None:
            self.connection = sqlite3.connect(self.path, timeout=15, isolation_level=None,
                                              check_same_thread=False)
            self.connection.execute(f"PRAGMA synchronous={self.synchronous}")
        return self.connection

    async def commit(self, works: list) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self.apply_batch, works)

    def apply_batch(self, works: list) -> list[str]:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            results = [self._apply(connection, work) for work in works]
            connection.execute("COMMIT")
        except BaseException:
            # Whatever failed, the COMMIT included (disk full, I/O error), leave no
            # transaction open: it would hold the write lock and refuse every next BEGIN.
            try:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            except sqlite3.Error:
                connection.close()
                self.connection = None
            raise
        return results

    def _apply(self, connection: sqlite3.Connection, work) -> str:
        incoming = work.incoming
        payload = json.dumps(incoming.payload, separators=(",", ":"))
        row = connection.execute(SELECT_MESSAGE, (work.gateway_id, work.external_id)).fetchone()
        if row is None:
            if connection.execute(GATEWAY_EXISTS, (work.gateway_id,)).fetchone() is None:
                return "ignored"
            connection.execute(INSERT_UNMATCHED, (
                work.gateway_id, work.external_id, incoming.status, payload, incoming.source_address,
                incoming.received_at, clock.iso_after(self.unmatched_ttl)))
            return "parked"
        message_id, state, delivery_status, conflicted, stored = row
        decision = states.decide(state, delivery_status, incoming.status)
        if decision.changed:
            merged = {**(json.loads(stored) if stored else {}), **incoming.payload}
            failed = decision.state == states.FAILED
            connection.execute(UPDATE_CHANGED, (
                decision.state, decision.delivery_status, incoming.received_at, clock.now_iso(),
                incoming.received_at if failed else None, decision.conflict,
                json.dumps(merged, separators=(",", ":")), message_id))
        elif decision.conflict and not conflicted:
            connection.execute(FLAG_CONFLICT, (message_id,))
        connection.execute(INSERT_EVENT, (
            message_id, incoming.status, state, decision.state, decision.changed, decision.reason, payload,
            incoming.source_address, incoming.received_at, clock.now_iso()))
        return "applied"

    def close(self) -> None:
        def shut():
            if self.connection is not None:
                self.connection.close()
        self.thread.submit(shut).result()
        self.thread.shutdown()
