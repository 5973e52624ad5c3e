"""Keys made before scopes existed keep full access after `smsgw migrate` (migration 0005)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3

import httpx
import pytest
from alembic import command

from api.migrate import alembic_config
from tests.servers import (
    drop_postgres_database,
    postgres_database_or_skip,
    run_smsgw,
    start_api,
)

OLD_KEY = "smsgw_" + "k" * 43
OLD_KEY_HASH = hashlib.sha256(OLD_KEY.encode()).hexdigest()
INSERT = ("INSERT INTO api_keys (name, key_hash, key_prefix, created_at)"
          f" VALUES ('made before scopes', '{OLD_KEY_HASH}', 'smsgw_kkkkkk', '2026-11-01T00:00:00.000000Z')")


def postgres_url() -> str:
    return postgres_database_or_skip()


async def on_postgres(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_old_key_keeps_every_scope(kind, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}" if kind == "sqlite" else postgres_url()
    try:
        command.upgrade(alembic_config(url), "0004")
        if kind == "sqlite":
            with sqlite3.connect(tmp_path / "old.db") as connection:
                connection.execute(INSERT)
        else:
            asyncio.run(on_postgres(url, INSERT))
        api = start_api(tmp_path, SMSGW_DATABASE_URL=url)  # runs `smsgw migrate` first
        try:
            headers = {"Authorization": f"Bearer {OLD_KEY}"}
            with httpx.Client(base_url=api.url, headers=headers, timeout=10) as old:
                assert old.get("/api/api-keys").status_code == 200
                made = old.post("/api/sms-gateways", json={"name": "g", "server_host": "h"})
                assert made.status_code == 201
                assert "callback_token" in made.json()["data"]
            listing = run_smsgw(api.env, "apikey", "list").stdout
            assert re.search(r"made before scopes\s.*\ball\s+all\s+any\s", listing)
        finally:
            api.process.stop()
    finally:
        if kind == "postgresql":
            drop_postgres_database(url)
