"""A database smsgw never migrated: every command and the health check say so, in words
(`smsgw migrate`), never with a driver's traceback; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import httpx
import pytest

from api.db import NO_SCHEMA
from tests.servers import run_smsgw, start_api


@pytest.mark.parametrize("command", [["apikey", "create", "--name", "me"], ["apikey", "list"], ["demo"],
                                     ["audit", "verify"], ["api"]])
def test_a_command_on_an_unmigrated_database_says_run_migrate(empty_database, command):
    done = run_smsgw({**os.environ, "SMSGW_DATABASE_URL": empty_database, "SMSGW_API_PORT": "9"}, *command,
                     check=False)
    assert done.returncode == 2, done.stderr
    assert f"smsgw: {NO_SCHEMA}" in done.stderr and "Traceback" not in done.stderr


def test_health_says_why_when_the_schema_is_gone(empty_database, tmp_path):
    api = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database)
    try:
        assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
        drop_version_table(empty_database)
        response = httpx.get(f"{api.url}/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "reason": NO_SCHEMA}
    finally:
        api.process.stop()


def drop_version_table(url: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute("DROP TABLE alembic_version")
        return

    async def drop() -> None:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=5)
        try:
            await connection.execute("DROP TABLE alembic_version")
        finally:
            await connection.close()

    asyncio.run(drop())
