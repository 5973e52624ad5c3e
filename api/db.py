"""The database: connecting, and every line that differs between SQLite and PostgreSQL.

Queries elsewhere are plain SQLAlchemy Core and run on both. What cannot be
written once for both — URL forms, a list bound as one parameter, advisory
locks, recognising a unique violation or a lost lock conflict, SQLite's
transactions and checkpoints — lives here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from databases import Database
from databases.backends.sqlite import SQLitePool
from sqlalchemy.dialects.postgresql.asyncpg import dialect as AsyncpgDialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as PysqliteDialect
from sqlalchemy.dialects import postgresql as postgresql_dialect, sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

log = logging.getLogger("smsgw.db")

# How long a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_S = 15.0
_sqlite_write_locks: dict[int, asyncio.Lock] = {}


def dialect_of(url: str) -> str:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ValueError(
        f"SMSGW_DATABASE_URL must start with sqlite:/// or postgresql://, not {scheme}://"
    )


def sqlite_file(url: str) -> Path | None:
    """The database file a ``sqlite:///`` URL names (relative to the working directory)."""
    if dialect_of(url) != "sqlite":
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def connect_url(url: str) -> str:
    """The driver-qualified URL, for ``databases`` and for SQLAlchemy's async engine
    (alembic migrates through it): asyncpg for PostgreSQL, aiosqlite for SQLite."""
    if dialect_of(url) == "postgresql":
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return "sqlite+aiosqlite://" + url.split("://", 1)[1]


class KeptSQLitePool(SQLitePool):
    """``databases``' SQLite pool, with at most ``SIZE`` connections, kept between queries.

    The stock pool opens a new aiosqlite connection, with its own thread, for every
    query made outside a transaction, and closes it after: measured in make bench,
    that was most of a synchronous send's CPU and of the dispatcher's rounds. Here
    a query waits for one of ``SIZE`` connections instead; one left in a transaction
    (never, once ``databases`` has committed or rolled back) or broken is closed and
    replaced. ``close`` ends the idle ones: their threads are not daemons, so a
    connection left open would keep the process from exiting.
    """

    SIZE = 16

    def __init__(self, url, **options: Any):
        super().__init__(url, **options)
        self._idle: list = []
        self._slots: asyncio.Semaphore | None = None

    async def acquire(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.SIZE)
        await self._slots.acquire()
        try:
            return self._idle.pop() if self._idle else await super().acquire()
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection) -> None:
        try:
            if connection._connection is not None and not connection.in_transaction:
                self._idle.append(connection)
            else:
                await super().release(connection)
        finally:
            self._slots.release()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await super().release(connection)


class SQLiteDatabase(Database):
    """A ``databases.Database`` on SQLite whose connections are kept (``KeptSQLitePool``)."""

    def __init__(self, url: str, **options: Any):
        super().__init__(url, **options)
        self._backend._pool = KeptSQLitePool(self._backend._database_url, **self._backend._options)

    async def disconnect(self) -> None:
        await super().disconnect()
        await self._backend._pool.close()


def make_database(url: str) -> Database:
    if dialect_of(url) == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return SQLiteDatabase(connect_url(url), timeout=SQLITE_BUSY_TIMEOUT_S)
    return Database(connect_url(url))


@contextlib.asynccontextmanager
async def connected(url: str):
    """The database and its dialect, for one command; disconnected however the command ends."""
    database = make_database(url)
    await database.connect()
    try:
        yield database, dialect_of(url)
    finally:
        await database.disconnect()


def sqlite_file_gone(url: str) -> bool:
    """Is the SQLite file gone from its path? (Kept connections would still read the
    deleted file: a health check asks this too.)"""
    path = sqlite_file(url)
    return path is not None and not path.exists()


def make_readonly_database(url: str) -> Database:
    """A database handle that can only read, for the guard.

    SQLite: the file is opened with ``mode=ro`` (a URI filename), so a wrong path
    is an error on first use instead of a new, empty database created there (and
    no directory is made). PostgreSQL: every transaction is read-only by default.
    """
    if dialect_of(url) == "postgresql":
        return Database(connect_url(url), server_settings={"default_transaction_read_only": "on"})
    path = sqlite_file(url)
    if path is None:  # in-memory: nothing to protect, nothing to read either
        return make_database(url)
    # ``databases`` unquotes the URL's path once; the URI filename keeps its own escapes.
    uri = quote(path.absolute().as_uri() + "?mode=ro", safe="/:?=")
    return SQLiteDatabase("sqlite+aiosqlite:///" + uri, timeout=SQLITE_BUSY_TIMEOUT_S, uri=True)


# The dialects ``read`` compiles for: the drivers' own parameter styles (? and $1).
_SQLITE = PysqliteDialect(paramstyle="qmark")
_ASYNCPG = AsyncpgDialect()

# 64-bit ids (the API accepts ids up to 2**63 - 1). On SQLite the rowid alias
# must be spelt INTEGER, which is 64-bit there already.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MAX_ID = 2**63 - 1


def is_row_id(value: int) -> bool:
    """Whether ``value`` can be a row's id: a larger number would overflow PostgreSQL's bigint
    before the database could say "not found"."""
    return 0 < value <= MAX_ID


class JsonDocument(sa.types.TypeDecorator):
    """A JSON object column: JSON text on SQLite, JSONB on PostgreSQL.

    Read back as Python values on both: through ``databases``, asyncpg hands
    JSONB over as text (no codec is set on its connections), so text is parsed here.
    """

    impl = sa.JSON(none_as_null=True)  # Python None is SQL NULL, not the JSON text 'null'
    cache_ok = True

    def load_dialect_impl(self, dialect):
        kind = JSONB if dialect.name == "postgresql" else sa.JSON
        return dialect.type_descriptor(kind(none_as_null=True))

    def process_result_value(self, value, dialect):
        return json.loads(value) if isinstance(value, str) else value


@contextlib.asynccontextmanager
async def write_transaction(database: Database, dialect: str):
    """A transaction that writes, on one connection, yielded.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front, so the reads in
    the transaction already see what no other writer can change. PostgreSQL:
    an ordinary transaction; rows are locked with ``FOR UPDATE`` and keys with
    ``lock_key``.
    """
    if dialect == "sqlite":
        # One ``databases`` writer at a time in this process: waiting here costs nothing,
        # while SQLite's own busy handler would sleep in growing steps on each conflict.
        # (The pipeline's thread writes on a connection of its own, so it and these
        # writers — gateway and key changes, a send's first row — do meet in that
        # handler; they are few beside receipts.)
        lock = _sqlite_write_locks.setdefault(id(database), asyncio.Lock())
        await lock.acquire()
    try:
        async with _write_connection(database, dialect) as connection:
            yield connection
    finally:
        if dialect == "sqlite":
            lock.release()


@contextlib.asynccontextmanager
async def _write_connection(database: Database, dialect: str):
    async with database.connection() as connection:
        if dialect == "sqlite":
            await connection.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")
        else:
            async with connection.transaction():
                yield connection


async def lock_key(connection, dialect: str, *parts: Any) -> None:
    """Serialise transactions about the same thing (e.g. the audit chain) until
    commit, even when no row exists yet to lock. SQLite's write lock already
    serialises every writer."""
    if dialect != "postgresql":
        return
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_id(parts))))


def _lock_id(parts: tuple) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


LOCK_KEYS = sa.text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
)


def lock_keys(keys) -> sa.TextClause:
    """PostgreSQL: one statement that takes the locks of ``lock_key`` for every key
    (each a tuple), in ascending order of lock id: two transactions that lock
    overlapping sets this way wait for each other instead of deadlocking."""
    return LOCK_KEYS.bindparams(keys=sorted({_lock_id(tuple(key)) for key in keys}))


NO_SCHEMA = "the database has no schema: run `smsgw migrate`"


def is_missing_schema(exc: BaseException) -> bool:
    """A query found no table: the database was never migrated (SQLite's "no such table",
    PostgreSQL's undefined_table, as the drivers or SQLAlchemy raise them)."""
    error = getattr(exc, "orig", None) or exc
    return ("no such table" in str(error) or getattr(error, "sqlstate", None) == "42P01"
            or type(error).__name__ == "UndefinedTableError")


async def has_schema(url: str) -> bool:
    """Has ``smsgw migrate`` run on this database? (Other failures, e.g. no server, raise.)"""
    database = make_database(url)
    await database.connect()
    try:
        await database.fetch_val("SELECT version_num FROM alembic_version")
    except Exception as exc:
        if is_missing_schema(exc):
            return False
        raise
    finally:
        await database.disconnect()
    return True


def is_unavailable(exc: BaseException) -> bool:
    """The database could not do the work at all — unreachable, connection lost,
    locked past the busy timeout, out of space — rather than refusing one change."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sqlite3.OperationalError)):
        return True
    return type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__


def is_retryable_conflict(exc: BaseException) -> bool:
    """A PostgreSQL deadlock (40P01) or serialization failure (40001): the
    transaction was rolled back and may simply run again."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "sqlstate", None) in ("40P01", "40001") or \
                getattr(exc, "pgcode", None) in ("40P01", "40001"):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


def sqlite_sync_engine(url: str) -> sa.Engine:
    """A plain (thread-bound) SQLAlchemy engine on a SQLite file, for the
    pipeline's own thread: its transactions begin ``BEGIN IMMEDIATE`` (the write
    lock first, so what they read cannot change before they write), with
    ``synchronous`` as ``sqlite_synchronous`` says."""
    path = sqlite_file(url)
    if path is None:
        raise ValueError("SMSGW_DATABASE_URL must name a SQLite file (an in-memory database is not shared)")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
                              hide_parameters=True)  # an error never carries a receipt's fields
    # its commits never copy the WAL back into the file: WalCheckpoints does, beside it
    _begin_sqlite_with(engine, "BEGIN IMMEDIATE", f"PRAGMA synchronous={sqlite_synchronous()}",
                       "PRAGMA wal_autocheckpoint=0")
    return engine


class WalCheckpoints:
    """Copies SQLite's write-ahead log back into the database file, on a thread of its own.

    A commit that crosses ``wal_autocheckpoint`` pages does that copy (and, with
    ``synchronous=NORMAL``, its fsync) before it returns: measured here, a third of
    the pipeline's commit time. The pipeline's connection turns that off
    (``sqlite_sync_engine``) and this thread checkpoints every ``interval``
    seconds (``PASSIVE``: it never waits for, nor blocks, a writer or a reader).

    The log restarts from its beginning only once a checkpoint has copied all
    of it; under steady load the writer always adds frames while this thread
    copies, so the writer finishes the job itself (``finish``) once the log
    holds ``restart_frames`` pages: little is left to copy by then, and the log
    stays bounded instead of growing with every receipt.
    """

    def __init__(self, path: Path, interval: float = 0.25, restart_frames: int = 4096):
        self.path = path
        self.interval = interval
        self.restart_frames = restart_frames
        self.long = False  # the log has grown past restart_frames (set by this thread)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="smsgw-checkpoints", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def finish(self, dbapi_connection) -> None:
        """On the writer's connection, between its transactions: when the log is
        long, copy what is left of it, so that the next write restarts it."""
        if not self.long:
            return
        try:
            _busy, frames, copied = dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint skipped (%s)", exc)
            return
        self.long = frames != copied  # all copied: the log restarts at the next write

    def _run(self) -> None:
        failures = 0
        connection = None
        while not self.stopping.wait(self.interval):
            try:
                if connection is None:
                    connection = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
                _busy, frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # e.g. busy: the next round does it
                failures += 1
                if failures % 40 == 1:  # said once, then every ~10 s while it lasts
                    log.warning("the SQLite log could not be checkpointed (%s); it grows until it can",
                                type(exc).__name__)
            else:
                failures = 0
                self.long = frames >= self.restart_frames
        if connection is not None:
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # the next start's checkpoints copy it
            connection.close()


def _begin_sqlite_with(engine: sa.Engine, begin: str, *pragmas: str) -> None:
    """Let the sqlite3 driver start no transaction itself and emit ``begin`` when the
    engine begins one (SQLAlchemy's documented recipe): DDL and reads then belong to it."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        for pragma in pragmas:
            dbapi_connection.execute(pragma)

    @sa.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql(begin)


def execute_many(connection: sa.Connection, statement: sa.Insert | sa.Update, rows: list[dict[str, Any]]) -> None:
    """``statement`` once for each of ``rows`` (all with the same keys), as one
    ``executemany`` on the driver.

    The batch hot path: SQLAlchemy compiles the statement once per dialect and
    set of columns, and its per-row parameter processing — about 60 µs a
    receipt here, more than the SQL — is replaced by serialising the JSON
    columns, the only ones whose Python values the drivers do not take as they are.
    """
    sql, order, json_columns = _compiled_many(connection.dialect, statement, tuple(rows[0]))
    connection.exec_driver_sql(sql, [
        tuple(_json_text(row[name]) if name in json_columns else row[name] for name in order) for row in rows])


@functools.lru_cache(maxsize=64)
def _compiled_many(dialect: sa.Dialect, statement, names: tuple[str, ...]):
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    table = statement.table
    json_columns = frozenset(
        name for name in names if name in table.c and isinstance(table.c[name].type, JsonDocument))
    return compiled.string, tuple(compiled.positiontup), json_columns


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def fetch_all(connection: sa.Connection, statement: sa.Select, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``statement`` as dicts, read through the driver directly (compiled
    once per dialect), JSON columns parsed: the batch's reads, without SQLAlchemy's
    per-row result processing."""
    sql, order, fixed, names, json_positions = _compiled_read(connection.dialect, statement)
    given = {**fixed, **params}
    rows = connection.exec_driver_sql(sql, tuple(given[name] for name in order)).fetchall()
    return _as_dicts(rows, names, json_positions)


def _as_dicts(rows, names: tuple[str, ...], json_positions: tuple[int, ...]) -> list[dict[str, Any]]:
    """Driver rows as dicts of ``names``, the JSON columns' text parsed."""
    out = []
    for row in rows:
        values = list(row)
        for i in json_positions:
            if isinstance(values[i], str):
                values[i] = json.loads(values[i])
        out.append(dict(zip(names, values)))
    return out


@functools.lru_cache(maxsize=64)
def _compiled_read(dialect: sa.Dialect, statement: sa.Select):
    compiled = statement.compile(dialect=dialect)
    columns = list(statement.selected_columns)
    json_positions = tuple(i for i, column in enumerate(columns) if isinstance(column.type, JsonDocument))
    # the statement's own values (e.g. status = 'pending'); the lists are given per batch
    fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
    return compiled.string, tuple(compiled.positiontup), fixed, tuple(c.name for c in columns), json_positions


# Lists a statement looks up, bound as ONE parameter whatever their length: one
# prepared statement serves every batch. SQLite reads a JSON array (json_each);
# PostgreSQL arrays (unnest).


def key_list(dialect: str):
    """A list of (gateway id, external id) pairs as a table: (it, gateway id, external id)."""
    if dialect == "postgresql":
        keys = sa.func.unnest(sa.bindparam("key_gateways", type_=ARRAY(sa.BigInteger)),
                              sa.bindparam("key_externals", type_=ARRAY(sa.Text))
                              ).table_valued("gateway_id", "external_id").render_derived(name="k")
        return keys, keys.c.gateway_id, keys.c.external_id
    keys = sa.func.json_each(sa.bindparam("keys")).table_valued("value").alias("k")
    return (keys, sa.func.json_extract(keys.c.value, sa.literal_column("'$[0]'")),
            sa.func.json_extract(keys.c.value, sa.literal_column("'$[1]'")))


def key_params(dialect: str, keys) -> dict[str, Any]:
    keys = sorted(keys)
    if dialect == "postgresql":
        return {"key_gateways": [k[0] for k in keys], "key_externals": [k[1] for k in keys]}
    return {"keys": json.dumps(keys)}


def id_list(dialect: str):
    """A list of ids as a table: (it, id)."""
    if dialect == "postgresql":
        ids = sa.func.unnest(sa.bindparam("ids", type_=ARRAY(sa.BigInteger))).table_valued("value").render_derived(
            name="i")
    else:
        ids = sa.func.json_each(sa.bindparam("ids")).table_valued("value").alias("i")
    return ids, ids.c.value


def id_params(dialect: str, ids) -> dict[str, Any]:
    ids = sorted(ids)
    return {"ids": ids if dialect == "postgresql" else json.dumps(ids)}


def next_ids(dialect: str, table: sa.Table) -> sa.Select:
    """A read that reserves ids for ``:n`` new rows of ``table`` (see ``reserved``), so a
    batch can insert them with executemany and know their ids: PostgreSQL takes them
    from the table's sequence; SQLite, whose write lock the batch holds, gives a
    rowid table max(id) + 1 next, so it reads max(id)."""
    if dialect == "postgresql":
        sequence = sa.func.pg_get_serial_sequence(table.name, "id")
        return sa.select(sa.func.nextval(sequence).label("id")).select_from(
            sa.func.generate_series(1, sa.bindparam("n", type_=sa.Integer)))
    return sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0).label("id"))


def reserved(dialect: str, rows: list[dict[str, Any]], n: int) -> list[int]:
    """The ``n`` ids ``next_ids`` read gives."""
    if dialect == "postgresql":
        return sorted(row["id"] for row in rows)
    return list(range(rows[0]["id"] + 1, rows[0]["id"] + n + 1))


def upsert(dialect: str, table: sa.Table) -> sa.Insert:
    """Insert a row, or replace the one with its primary key (``ON CONFLICT ... DO UPDATE``)."""
    insert = (postgresql_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)
    key = [column.name for column in table.primary_key]
    return insert.on_conflict_do_update(index_elements=key, set_={
        column.name: insert.excluded[column.name] for column in table.c if column.name not in key})


async def read(database: Database, statement: sa.Select, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``statement`` as dicts, JSON columns parsed: the API's hot reads.

    ``databases`` compiles every query anew (SQLAlchemy builds the SQL and labels
    each column on each call: most of a synchronous send's reads). Here the SQL is
    compiled once per statement and run on the driver's own connection (aiosqlite
    or asyncpg), as ``fetch_all`` does for the pipeline. ``statement`` must be a
    module-level constant with named bind parameters.
    """
    postgres = database.url.scheme.startswith("postgresql")
    sql, order, fixed, names, json_positions = _compiled_read(_ASYNCPG if postgres else _SQLITE, statement)
    given = {**fixed, **params}
    args = tuple(given[name] for name in order)
    async with database.connection() as connection:
        raw = connection.raw_connection
        if postgres:
            rows = [tuple(record) for record in await raw.fetch(sql, *args)]
        else:
            async with raw.execute(sql, args) as cursor:
                rows = await cursor.fetchall()
    return _as_dicts(rows, names, json_positions)


async def read_one(database: Database, statement: sa.Select, params: dict[str, Any]) -> dict[str, Any] | None:
    rows = await read(database, statement, params)
    return rows[0] if rows else None


def as_dict(row: Any) -> dict[str, Any]:
    """A ``databases`` row as a dict of processed values.

    ``row._mapping`` holds the driver's raw values (asyncpg's JSONB as text);
    indexing the row applies the column types' result processing.
    """
    return {key: row[key] for key in row._mapping.keys()}


def is_unique_violation(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE" in str(exc)
    return type(exc).__name__ == "UniqueViolationError"  # asyncpg, imported only when used


def sqlite_synchronous() -> str:
    """When a SQLite commit returns: ``NORMAL`` (default) — in the WAL, so it survives
    any crash of smsgw (kill -9 included), and an OS crash or power cut may lose
    the last moments; ``FULL`` — synced to disk, every commit paying a sync
    (SMSGW_SQLITE_SYNCHRONOUS)."""
    value = os.environ.get("SMSGW_SQLITE_SYNCHRONOUS", "NORMAL").upper()
    return value if value in ("NORMAL", "FULL") else "NORMAL"


def sqlite_pragmas() -> list[str]:
    """Set once on the file by ``smsgw migrate``: WAL persists in the database file,
    and lets readers (the API's GETs, later the guard) run beside the writer."""
    return ["PRAGMA journal_mode=WAL"]


def transactional_sqlite_ddl(engine) -> None:
    """Make SQLite's DDL part of the engine's transactions, as PostgreSQL's is.

    Python's sqlite3 (and aiosqlite over it) opens a transaction only before
    DML, so each CREATE, ALTER or DROP commits on its own: a run of migrations
    that fails half-way leaves the steps before it done. SQLAlchemy's documented
    remedy: let the driver start nothing itself, and emit BEGIN when the engine
    begins. ``engine`` is an async engine (the migrations run through one)."""

    _begin_sqlite_with(engine.sync_engine, "BEGIN")
