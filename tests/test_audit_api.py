"""The audit trail over the live API and CLI, on SQLite and PostgreSQL: what is recorded,
what never is (secrets), and that `smsgw audit verify` finds an edited or removed row."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading

import httpx

from api import audit_chain
from tests.conftest import ADMIN_KEY
from tests.servers import run_smsgw, start_api


def run_sql(api, *statements: str) -> list[tuple]:
    """Statements straight on the API's database, as someone with the database file would;
    returns the last one's rows."""
    url = api.env["SMSGW_DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as connection:
            rows = []
            for statement in statements:
                rows = connection.execute(statement).fetchall()
            return rows

    async def run():
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            rows = []
            for statement in statements:
                rows = [tuple(r) for r in await connection.fetch(statement)]
            return rows
        finally:
            await connection.close()

    return asyncio.run(run())


def all_events(client, **params) -> list[dict]:
    events, cursor = [], None
    while True:
        query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/audit-events", params=query)
        assert response.status_code == 200, response.text
        events += response.json()["data"]
        cursor = response.json()["meta"]["next_cursor"]
        if cursor is None:
            return events


def about(events, target_type, target_id) -> list[tuple[str, dict]]:
    return [(e["action"], e) for e in events if (e["target_type"], e["target_id"]) == (target_type, target_id)]


def key_id_of(cli_output: str) -> int:
    return int(re.search(r"API key (\d+) ", cli_output).group(1))


def verify(api):
    return run_smsgw(api.env, "audit", "verify", check=False)


def test_every_action_is_recorded_with_who_what_when_and_where(api, client, anonymous, stub):
    # keys: one from the CLI, one over HTTP by the admin key, both revoked the other way
    out = run_smsgw(api.env, "apikey", "create", "--name", "audited cli key", "--scope", "messages:read").stdout
    cli_key_id = key_id_of(out)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    made = anonymous.post("/api/api-keys", headers=admin, json={"name": "audited http key", "scopes": ["all"]})
    http_key = made.json()["data"]
    assert anonymous.delete(f"/api/api-keys/{cli_key_id}", headers=admin).status_code == 200
    run_smsgw(api.env, "apikey", "revoke", str(http_key["id"]))
    # a gateway's life, by the tests' key
    gateway = client.post("/api/sms-gateways", json={"name": "audited", "server_host": "127.0.0.1",
                                                     "password": "audited-secret-pw"}).json()["data"]
    gid = gateway["id"]
    client.patch(f"/api/sms-gateways/{gid}", json={"notes": "n", "server_port": stub.port, "name": "audited",
                                                   "password": "audited-new-pw"})
    client.patch(f"/api/sms-gateways/{gid}", json={"notes": "n"})  # no change: no row
    client.post(f"/api/sms-gateways/{gid}/callback-token/rotate", json={"grace_seconds": 60})
    assert client.delete(f"/api/sms-gateways/{gid}").status_code == 200

    events = all_events(client, order="oldest")
    keys_made = about(events, "api_key", cli_key_id) + about(events, "api_key", http_key["id"])
    assert [(action, e["actor"], e["actor_key_id"]) for action, e in keys_made] == [
        ("key.created", "cli", None), ("key.revoked", "admin key", None),
        ("key.created", "admin key", None), ("key.revoked", "cli", None)]
    assert keys_made[0][1]["details"] == {"name": "audited cli key", "scopes": ["messages:read"],
                                          "gateway_ids": None, "allowed_countries": None}
    assert keys_made[0][1]["source_address"] is None                 # the CLI has no address
    assert keys_made[1][1]["source_address"] == "127.0.0.1"
    life = about(events, "sms_gateway", gid)
    assert [action for action, _ in life] == ["gateway.created", "gateway.changed", "gateway.token_rotated",
                                              "gateway.deleted"]
    assert life[1][1]["details"] == {"fields": ["notes", "password", "server_port"]}
    assert life[2][1]["details"] == {"grace_seconds": 60}
    tests_key_id = next(k["id"] for k in client.get("/api/api-keys").json()["data"] if k["name"] == "tests")
    assert {(e["actor"], e["actor_key_id"], e["source_address"]) for _, e in life} == {
        ("tests", tests_key_id, "127.0.0.1")}
    assert all(e["occurred_at"].endswith("Z") for _, e in life)
    assert events == sorted(events, key=lambda e: e["id"])
    newest = client.get("/api/audit-events", params={"limit": 2}).json()["data"]
    assert [e["id"] for e in newest] == sorted((e["id"] for e in events), reverse=True)[:2]


def test_no_secret_reaches_any_row_or_the_log(api, client, stub):
    gateway = client.post("/api/sms-gateways", json={"name": "secretive", "server_host": "127.0.0.1",
                                                     "password": "first-secret-pw"}).json()["data"]
    gid = gateway["id"]
    client.patch(f"/api/sms-gateways/{gid}", json={"server_port": stub.port, "password": "second-secret-pw",
                                                   "callback_token": "chosen-token-" + "z" * 30})
    rotated = client.post(f"/api/sms-gateways/{gid}/callback-token/rotate").json()["data"]["callback_token"]
    key = client.post("/api/api-keys", json={"name": "secret key", "scopes": ["all"]}).json()["data"]["key"]
    httpx.get(api.url + "/api/audit-events", headers={"Authorization": f"Bearer {key}"})
    stored = json.dumps(run_sql(api, "SELECT * FROM audit_events"), default=str)
    served = json.dumps(all_events(client))
    for secret in ("first-secret-pw", "second-secret-pw", gateway["callback_token"], "chosen-token-" + "z" * 30,
                   rotated, key, ADMIN_KEY):
        assert secret not in stored and secret not in served and secret not in api.log


def test_a_refused_request_is_recorded_once_a_minute_per_key_and_route(api, anonymous, make_gateway):
    gid = make_gateway()["id"]
    out = run_smsgw(api.env, "apikey", "create", "--name", "refused often", "--scope", "messages:send").stdout
    key_id, key = key_id_of(out), out.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.9"}
    for _ in range(25):
        assert anonymous.get("/api/sms-gateways", headers=headers).status_code == 403
    assert anonymous.get(f"/api/sms-gateways/{gid}/messages", headers=headers).status_code == 403
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    with admin:
        denied = [e for e in all_events(admin, action="scope.denied", order="oldest") if e["actor_key_id"] == key_id]
    assert [(e["details"]["method"], e["details"]["route"]) for e in denied] == [
        ("GET", "/api/sms-gateways"), ("GET", "/api/sms-gateways/{id:int}/messages")]
    assert denied[0]["actor"] == "refused often"
    assert denied[0]["details"]["reason"] == "This key may not read SMS gateways."
    # The test client is on loopback, as the guard and nginx are, so its X-Forwarded-For is the
    # client address (api.peer.client_address, the rule receipts use too).
    assert denied[0]["source_address"] == "203.0.113.9"


def test_audit_verify_finds_an_edited_and_a_removed_row(api, client, make_gateway):
    for n in range(3):
        make_gateway(name=f"verify {n}")
    result = verify(api)
    assert result.returncode == 0, result.stderr
    count = int(re.search(r"OK: (\d+) audit events", result.stdout).group(1))
    assert count >= 3
    [(middle,)] = run_sql(api, "SELECT id FROM audit_events ORDER BY id DESC LIMIT 1 OFFSET 1")
    [(after,)] = run_sql(api, f"SELECT MIN(id) FROM audit_events WHERE id > {middle}")
    run_sql(api, "DROP TABLE IF EXISTS audit_keep",
            f"CREATE TABLE audit_keep AS SELECT * FROM audit_events WHERE id = {middle}")
    try:
        run_sql(api, f"UPDATE audit_events SET actor = 'someone else' WHERE id = {middle}")
        edited = verify(api)
        assert edited.returncode == 1
        assert f"BROKEN at audit event {middle}:" in edited.stderr and "edited" in edited.stderr
        run_sql(api, f"DELETE FROM audit_events WHERE id = {middle}")
        removed = verify(api)
        assert removed.returncode == 1
        assert f"BROKEN at audit event {after}:" in removed.stderr
    finally:
        run_sql(api, f"DELETE FROM audit_events WHERE id = {middle}",
                "INSERT INTO audit_events SELECT * FROM audit_keep", "DROP TABLE audit_keep")
    assert verify(api).returncode == 0


HASHED = ", ".join(("id",) + audit_chain.FIELDS)


def test_an_anchor_finds_a_trail_rewritten_with_correct_hashes(api, make_gateway):
    """The chain is plain SHA-256 over public code: whoever can write the database can edit a row
    and recompute every later hash, and `verify` alone says OK. A hash noted earlier does not move."""
    for n in range(3):
        make_gateway(name=f"anchored {n}")
    noted = verify(api)
    assert noted.returncode == 0, noted.stderr
    anchor = re.search(r"--anchor (\d+:[0-9a-f]{64})", noted.stdout).group(1)
    anchor_id = int(anchor.split(":")[0])
    [(edited,)] = run_sql(api, f"SELECT MAX(id) FROM audit_events WHERE id < {anchor_id}")
    kept = run_sql(api, f"SELECT id, actor, prev_hash, hash FROM audit_events WHERE id >= {edited}")
    try:
        run_sql(api, f"UPDATE audit_events SET actor = 'someone else' WHERE id = {edited}")
        [(prev,)] = run_sql(api, f"SELECT prev_hash FROM audit_events WHERE id = {edited}")
        relink = []
        for values in run_sql(api, f"SELECT {HASHED} FROM audit_events WHERE id >= {edited} ORDER BY id"):
            row = dict(zip(("id",) + audit_chain.FIELDS, values))
            row["details"] = json.loads(row["details"]) if row["details"] is not None else None
            new_hash = audit_chain.link(prev, row)
            relink.append(f"UPDATE audit_events SET prev_hash = '{prev}', hash = '{new_hash}' WHERE id = {row['id']}")
            prev = new_hash
        run_sql(api, *relink)
        assert verify(api).returncode == 0  # the chain alone cannot tell
        anchored = run_smsgw(api.env, "audit", "verify", "--anchor", anchor, check=False)
        assert anchored.returncode == 1
        assert f"BROKEN at audit event {anchor_id}:" in anchored.stderr and "anchor" in anchored.stderr
    finally:
        run_sql(api, *(f"UPDATE audit_events SET actor = '{actor}', prev_hash = '{prev_hash}', hash = '{hash_}'"
                       f" WHERE id = {row_id}" for row_id, actor, prev_hash, hash_ in kept))
    assert run_smsgw(api.env, "audit", "verify", "--anchor", anchor, check=False).returncode == 0


def test_a_malformed_anchor_is_refused_with_exit_2(api):
    result = run_smsgw(api.env, "audit", "verify", "--anchor", "12:not-a-hash", check=False)
    assert result.returncode == 2 and "ID:HASH" in result.stderr


def test_no_route_changes_or_deletes_an_audit_row(client):
    for method in ("PATCH", "PUT", "DELETE", "POST"):
        assert client.request(method, "/api/audit-events").status_code == 405
    assert client.delete("/api/audit-events/1").status_code == 404


def test_two_api_processes_appending_at_once_keep_one_chain(api, client, make_gateway, tmp_path):
    """Two replicas on one database: each append reads the last hash and inserts under one
    lock, so no two rows claim the same predecessor."""
    second = start_api(tmp_path, SMSGW_DATABASE_URL=api.env["SMSGW_DATABASE_URL"])
    try:
        ids = [make_gateway(name=f"replica {n}")["id"] for n in range(4)]
        headers = client.headers

        def hammer(url: str, gateway_id: int) -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                for n in range(10):
                    assert c.patch(f"/api/sms-gateways/{gateway_id}", json={"notes": f"{url} {n}"}).status_code == 200

        threads = [threading.Thread(target=hammer, args=(url, gid))
                   for gid, url in zip(ids, [api.url, second.url] * 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        second.process.stop()
    changed = [e for e in all_events(client, action="gateway.changed") if e["target_id"] in ids]
    assert len(changed) == 40
    [(forks,)] = run_sql(api, "SELECT COUNT(*) - COUNT(DISTINCT prev_hash) FROM audit_events")
    assert forks == 0
    result = verify(api)
    assert result.returncode == 0, result.stderr
