"""/readyz (fit for traffic) beside /healthz (alive): a real API on each database, whose
schema is moved behind and ahead of the code's; and the decision itself, called directly."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx

from api import migrate
from api.app import not_ready
from api.db import NO_SCHEMA
from tests.servers import start_api, start_guard
from tests.test_no_schema import drop_version_table

HEAD, KNOWN = migrate.revisions()
OLDER = next(revision for revision in KNOWN if revision != HEAD)


def set_version(url: str, version: str) -> None:
    statement = f"UPDATE alembic_version SET version_num = '{version}'"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute(statement)
        return

    async def update() -> None:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(update())


def test_readyz_follows_the_schema_version_while_healthz_says_alive(empty_database, tmp_path):
    api = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database)
    try:
        ready = httpx.get(f"{api.url}/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ok"})

        set_version(empty_database, OLDER)  # code newer than the schema: a migration is due
        ready = httpx.get(f"{api.url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "reason": f"the database schema is at revision {OLDER}, "
                                                                   f"this smsgw needs {HEAD}: run `smsgw migrate`"}
        assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}  # alive all the same

        set_version(empty_database, "9999_from_the_future")  # an older smsgw on a newer schema
        reason = httpx.get(f"{api.url}/readyz").json()["reason"]
        assert "newer than this smsgw knows" in reason and "upgrade smsgw" in reason

        set_version(empty_database, HEAD)
        assert httpx.get(f"{api.url}/readyz").status_code == 200

        drop_version_table(empty_database)
        for route in ("/readyz", "/healthz"):
            response = httpx.get(f"{api.url}{route}")
            assert response.status_code == 503
            assert response.json() == {"status": "unavailable", "reason": NO_SCHEMA}
    finally:
        api.process.stop()
    assert "readiness check: the database schema is at revision" in api.log


def test_readyz_when_the_database_is_gone(tmp_path):
    api = start_api(tmp_path)
    try:
        assert httpx.get(f"{api.url}/readyz").status_code == 200
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"smsgw.db{suffix}").unlink(missing_ok=True)
        response = httpx.get(f"{api.url}/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable", "reason": "the database did not answer"}
    finally:
        api.process.stop()


def test_not_ready_names_what_is_wrong():
    workers = {"state-change pipeline": True, "dispatcher": True, "webhook worker": True}
    assert not_ready(HEAD, HEAD, KNOWN, workers, stopping=False) is None
    assert not_ready(HEAD, HEAD, KNOWN, workers, stopping=True) == "the process is shutting down"
    assert not_ready(None, HEAD, KNOWN, workers, stopping=False) == NO_SCHEMA
    assert not_ready(HEAD, HEAD, KNOWN, {**workers, "dispatcher": False}, stopping=False) == \
        "the dispatcher is not running"
    assert not_ready(OLDER, HEAD, KNOWN, {**workers, "dispatcher": False}, stopping=False).endswith(
        "run `smsgw migrate`")  # the schema first: what the operator must do


def test_the_guard_is_ready_once_it_holds_every_gateway_s_tokens(tmp_path):
    api = start_api(tmp_path)
    guard = start_guard(tmp_path, api.env, api.url)
    broken_env = {**api.env, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.db'}"}
    broken = start_guard(tmp_path, broken_env, api.url)
    try:
        ready = httpx.get(f"{guard.url}/_guard/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
        assert httpx.get(f"{guard.url}/_guard/health").status_code == 200
        # a guard whose database cannot give it the tokens is neither healthy nor ready, and says why
        assert httpx.get(f"{broken.url}/_guard/health").status_code == 503
        refused = httpx.get(f"{broken.url}/_guard/ready")
        assert refused.status_code == 503
        assert refused.json() == {"status": "unavailable",
                                  "reason": "the guard cannot load the callback tokens from its database"}
    finally:
        broken.process.stop()
        guard.process.stop()
        api.process.stop()
    assert "readiness check: the guard cannot load the callback tokens" in broken.log
