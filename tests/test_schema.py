"""The migrations build exactly the schema ``api/tables.py`` describes, and run twice harmlessly."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from api.tables import metadata
from tests.servers import drop_postgres_database, postgres_database_or_skip, run_smsgw


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Upgrade (or downgrade) the database at ``url`` to ``revision``, as alembic does."""
    from alembic import command

    from api.migrate import alembic_config
    (command.downgrade if down else command.upgrade)(alembic_config(url), revision)


def insert_new_gateway(db: sqlite3.Connection, n: int) -> int:
    """A gateway made the way the API makes one (no id given); its id."""
    db.execute("INSERT INTO sms_gateways (name, provider_type, server_host, server_port, api_path,"
               " callback_token, is_active, use_ssl, created_at, updated_at)"
               f" VALUES ('new {n}', 'jasmin', 'h', 1, 'p', 't{n}', 1, 0, 'x', 'x')")
    return db.execute("SELECT max(id) FROM sms_gateways").fetchone()[0]


def head() -> str:
    from alembic.script import ScriptDirectory

    from api.migrate import alembic_config
    return ScriptDirectory.from_config(alembic_config("sqlite:///x.db")).get_current_head()


def test_migrations_match_the_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    run_smsgw({"SMSGW_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, "migrate")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_migrate_is_idempotent_and_turns_on_wal(tmp_path):
    path = tmp_path / "nested" / "dir" / "smsgw.db"
    env = {"SMSGW_DATABASE_URL": f"sqlite:///{path}", "PATH": "/usr/bin:/bin"}
    first = run_smsgw(env, "migrate")
    second = run_smsgw(env, "migrate")
    assert "up to date" in first.stdout and "up to date" in second.stdout
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(head(),)]


def test_a_bad_setting_stops_the_command_with_its_name(tmp_path):
    result = run_smsgw({"SMSGW_DATABASE_URL": "mysql://x/y", "PATH": "/usr/bin:/bin"}, "migrate", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("smsgw: SMSGW_DATABASE_URL must start with sqlite:/// or postgresql://")
    result = run_smsgw({"SMSGW_API_PORT": "eighty", "PATH": "/usr/bin:/bin"}, "api", check=False)
    assert result.returncode == 2 and "SMSGW_API_PORT" in result.stderr


def test_old_rows_get_the_state_their_raw_status_means(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, "0002")
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path,"
                   " callback_token, is_active, use_ssl, created_at, updated_at)"
                   " VALUES (1, 'g', 'jasmin', 'h', 1, 'p', 't', 1, 0, 'x', 'x')")
        for n, raw in enumerate(["delivrd", "esme_rok", "undeliv", "esme_rinvdstadr", "esme_rthrottled",
                                 "submitted", "weird"]):
            db.execute("INSERT INTO sms_messages (sms_gateway_id, to_number, from_sender, message, callback_url,"
                       " delivery_status, created_at, updated_at) VALUES (1, ?, 's', 'm', 'u', ?, 'x', 'x')",
                       (str(n), raw))
    migrate(url, "head")
    with sqlite3.connect(tmp_path / "old.db") as db:
        states = dict(db.execute("SELECT delivery_status, state FROM sms_messages"))
    assert states == {"delivrd": "delivered", "esme_rok": "accepted", "undeliv": "failed",
                      "esme_rinvdstadr": "failed", "esme_rthrottled": "submitted", "submitted": "submitted",
                      "weird": "submitted"}


OLD_GATEWAY = ("INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path,"
               " callback_token, previous_callback_token, previous_callback_token_expires_at, is_active,"
               " use_ssl, created_at, updated_at) VALUES ({id}, 'g', 'jasmin', 'h', 1, 'p', 'tok-{id}', {prev},"
               " {expires}, {true}, {false}, 'x', 'x')")


def old_gateway(gateway_id: int, previous: bool, true: str = "1", false: str = "0") -> str:
    return OLD_GATEWAY.format(id=gateway_id, prev=f"'old-{gateway_id}'" if previous else "NULL",
                              expires="'2030-01-01T00:00:00.000000Z'" if previous else "NULL",
                              true=true, false=false)


def sqlite_migrated_from_0003(path, gateway_ids: tuple[int, int]) -> None:
    """A SQLite file at 0003 with two gateways (the second with a previous token), migrated to head."""
    migrate(f"sqlite:///{path}", "0003")
    with sqlite3.connect(path) as db:
        for gateway_id in gateway_ids:
            db.execute(old_gateway(gateway_id, previous=gateway_id == gateway_ids[1]))
    migrate(f"sqlite:///{path}", "head")


def test_sqlite_gateway_ids_are_kept_and_never_reused_after_migrating(tmp_path):
    """Finding 7: SQLite handed a deleted gateway's id to the next one created."""
    path = tmp_path / "old.db"
    sqlite_migrated_from_0003(path, (3, 4))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id, callback_token FROM sms_gateways ORDER BY id").fetchall() == [
            (3, "tok-3"), (4, "tok-4")]
        db.execute("DELETE FROM sms_gateways WHERE id = 4")
        assert insert_new_gateway(db, 1) == 5  # not 4 again


def test_sqlite_keeps_the_previous_token_when_migrating(tmp_path):
    path = tmp_path / "old.db"
    sqlite_migrated_from_0003(path, (3, 7))
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, previous_callback_tokens FROM sms_gateways ORDER BY id").fetchall()
    assert [(i, json.loads(h)) for i, h in rows] == [
        (3, []), (7, [{"token": "old-7", "expires_at": "2030-01-01T00:00:00.000000Z"}])]


def test_postgresql_keeps_every_gateway_and_its_previous_token_when_migrating():
    url = postgres_database_or_skip()
    try:
        migrate(url, "0003")
        asyncio.run(_postgres(url, old_gateway(3, False, "true", "false"), old_gateway(7, True, "true", "false")))
        migrate(url, "head")
        rows = asyncio.run(_postgres(url, "SELECT id, callback_token, previous_callback_tokens::text"
                                          " FROM sms_gateways ORDER BY id"))
        assert [(r[0], r[1], json.loads(r[2])) for r in rows] == [
            (3, "tok-3", []), (7, "tok-7", [{"token": "old-7", "expires_at": "2030-01-01T00:00:00.000000Z"}])]
    finally:
        drop_postgres_database(url)


async def _postgres(url: str, *statements: str) -> list:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=5)
    try:
        rows = []
        for statement in statements:
            rows = await connection.fetch(statement)
        return rows
    finally:
        await connection.close()


def test_sqlite_ids_deleted_before_migrating_are_never_reused(tmp_path):
    """Before AUTOINCREMENT, deleting the newest gateway freed its id; the rebuild seeded the
    id counter from the ids still present, so the deleted ids came back after the upgrade,
    and receipts still parked under them appeared under the new gateway."""
    path = tmp_path / "old.db"
    migrate(f"sqlite:///{path}", "0003")
    with sqlite3.connect(path) as db:
        for gateway_id in (3, 9, 12):
            db.execute(old_gateway(gateway_id, previous=False))
        db.execute("INSERT INTO unmatched_receipts (sms_gateway_id, external_message_id, raw_status, status,"
                   " received_at, expires_at) VALUES (12, 'parked-for-12', 'DELIVRD', 'pending', 'x', 'y')")
        db.execute("DELETE FROM sms_gateways WHERE id IN (9, 12)")
    migrate(f"sqlite:///{path}", "head")
    with sqlite3.connect(path) as db:
        created = [insert_new_gateway(db, n) for n in range(2)]
    assert created == [13, 14]  # never 4, 9 or 12 again


SEALED = "aesgcm:v1:0123abcd:" + "A" * 60  # the shape api.secrets seals a password in


def _at_0004_with_passwords(url: str, run, true: str, false: str) -> None:
    migrate(url, "0004")
    for gateway_id, password in ((3, "plain-pw"), (4, SEALED), (5, "p" * 300)):
        run(f"INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path, password,"
            f" callback_token, is_active, use_ssl, created_at, updated_at) VALUES ({gateway_id}, 'g', 'jasmin',"
            f" 'h', 1, 'p', '{password}', 'tok-{gateway_id}', {true}, {false}, 'x', 'x')")


def _downgrade_refuses_then_succeeds(url: str, run) -> None:
    """Code before 0004 would send a sealed password as it is, and PostgreSQL cannot shorten a
    long one: the downgrade refuses, naming the gateways, and changes nothing."""
    with pytest.raises(Exception, match=r"gateways 4, 5 .*encrypted or longer than 255"):
        migrate(url, "0003", down=True)
    assert run("SELECT version_num FROM alembic_version") == [("0004",)]
    assert [tuple(r) for r in run("SELECT id, password FROM sms_gateways ORDER BY id")] == [
        (3, "plain-pw"), (4, SEALED), (5, "p" * 300)]
    run("UPDATE sms_gateways SET password = 'set-again' WHERE id IN (4, 5)")
    migrate(url, "0003", down=True)
    assert [tuple(r) for r in run("SELECT id, password FROM sms_gateways ORDER BY id")] == [
        (3, "plain-pw"), (4, "set-again"), (5, "set-again")]


def test_sqlite_downgrade_below_0004_refuses_while_a_password_is_sealed_or_long(tmp_path):
    path = tmp_path / "sealed.db"

    def run(statement: str) -> list:
        with sqlite3.connect(path) as db:
            return db.execute(statement).fetchall()

    _at_0004_with_passwords(f"sqlite:///{path}", run, "1", "0")
    _downgrade_refuses_then_succeeds(f"sqlite:///{path}", run)


def test_postgresql_downgrade_below_0004_refuses_while_a_password_is_sealed_or_long():
    url = postgres_database_or_skip()
    try:
        def run(statement: str) -> list:
            return [tuple(r) for r in asyncio.run(_postgres(url, statement))]

        _at_0004_with_passwords(url, run, "true", "false")
        _downgrade_refuses_then_succeeds(url, run)
    finally:
        drop_postgres_database(url)


def test_a_sqlite_migration_run_that_fails_changes_nothing(tmp_path):
    """A run of migrations is one transaction on SQLite, as on PostgreSQL: a downgrade
    from head that 0004 refuses leaves 0005's tables (the audit trail) in place, not
    dropped by a step that had already committed."""
    path = tmp_path / "head.db"

    def run(statement: str) -> list:
        with sqlite3.connect(path) as db:
            return db.execute(statement).fetchall()

    migrate(f"sqlite:///{path}", "head")
    run("INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path, password,"
        " callback_token, is_active, use_ssl, created_at, updated_at)"
        f" VALUES (4, 'g', 'jasmin', 'h', 1, 'p', '{SEALED}', 'tok-4', 1, 0, 'x', 'x')")
    with pytest.raises(Exception, match=r"encrypted or longer than 255"):
        migrate(f"sqlite:///{path}", "0003", down=True)
    assert run("SELECT version_num FROM alembic_version") == [(head(),)]
    assert run("SELECT name FROM sqlite_master WHERE name = 'audit_events'") == [("audit_events",)]
