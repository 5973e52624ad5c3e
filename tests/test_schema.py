"""The migrations build exactly the schema ``api/tables.py`` describes, and run twice harmlessly."""

from __future__ import annotations

import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from api.tables import metadata
from tests.servers import run_smsgw


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
    from alembic import command

    from api.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0002")
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path,"
                   " callback_token, is_active, use_ssl, created_at, updated_at)"
                   " VALUES (1, 'g', 'jasmin', 'h', 1, 'p', 't', 1, 0, 'x', 'x')")
        for n, raw in enumerate(["delivrd", "esme_rok", "undeliv", "esme_rinvdstadr", "esme_rthrottled",
                                 "submitted", "weird"]):
            db.execute("INSERT INTO sms_messages (sms_gateway_id, to_number, from_sender, message, callback_url,"
                       " delivery_status, created_at, updated_at) VALUES (1, ?, 's', 'm', 'u', ?, 'x', 'x')",
                       (str(n), raw))
    command.upgrade(alembic_config(url), "head")
    with sqlite3.connect(tmp_path / "old.db") as db:
        states = dict(db.execute("SELECT delivery_status, state FROM sms_messages"))
    assert states == {"delivrd": "delivered", "esme_rok": "accepted", "undeliv": "failed",
                      "esme_rinvdstadr": "failed", "esme_rthrottled": "submitted", "submitted": "submitted",
                      "weird": "submitted"}
