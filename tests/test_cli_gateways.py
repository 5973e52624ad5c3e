"""``smsgw gateway ...`` run as an operator runs it, against a database a real API serves,
on SQLite and on PostgreSQL: what the CLI writes is what the API would have written (the
same checks, the same audit trail, actor "cli"), and it shows a gateway as the API does."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests.servers import ROOT, SMSGW, start_api

ADMIN = "cli-gateways-admin-key-" + "y" * 24
PASSWORD = "gateway-password-the-cli-never-prints"


def smsgw(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SMSGW, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          input=stdin if stdin is not None else "")


@pytest.fixture
def api(empty_database, tmp_path):
    server = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database, SMSGW_ADMIN_KEY=ADMIN)
    yield server
    server.process.stop()


@pytest.fixture
def admin(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as client:
        yield client


def audit_rows(admin: httpx.Client) -> list[dict]:
    return admin.get("/api/audit-events", params={"order": "oldest"}).json()["data"]


def test_create_show_list_update_rotate_deactivate(api, admin):
    created = smsgw(api.env, "gateway", "create", "--name", "Acme Jasmin", "--server-host", "jasmin.example.com",
                    "--server-port", "8990", "--username", "acme", "--use-ssl", "true", "--meta", '{"team": "ops"}',
                    "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    first_line = created.stdout.splitlines()[0]
    assert first_line.startswith("SMS gateway ") and first_line.endswith(" created.")
    gateway_id = int(first_line.split()[2])
    token = created.stdout.strip().splitlines()[-1]

    # The API sees what the CLI wrote: the same fields, the token it printed, the password kept.
    over_api = admin.get(f"/api/sms-gateways/{gateway_id}").json()["data"]
    assert over_api["callback_token"] == token
    assert (over_api["server_host"], over_api["server_port"], over_api["use_ssl"], over_api["meta"]) == \
        ("jasmin.example.com", 8990, True, {"team": "ops"})

    # show --json is the API's view, without the callback token; the table view neither
    shown = smsgw(api.env, "gateway", "show", str(gateway_id), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {k: v for k, v in over_api.items() if k != "callback_token"}
    plain = smsgw(api.env, "gateway", "show", str(gateway_id))
    assert "server_host:" in plain.stdout and "jasmin.example.com" in plain.stdout
    assert token not in plain.stdout + shown.stdout

    listed = smsgw(api.env, "gateway", "list")
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["ID", "NAME", "TYPE", "HOST", "PORT", "TLS", "ACTIVE", "MESSAGES", "CREATED"]
    assert row.split()[:3] == [str(gateway_id), "Acme", "Jasmin"] and "jasmin.example.com" in row
    as_json = json.loads(smsgw(api.env, "gateway", "list", "--json").stdout)
    assert [g["id"] for g in as_json] == [gateway_id] and "callback_token" not in as_json[0]
    assert json.loads(smsgw(api.env, "gateway", "list", "--json", "--search", "nothing-like-it").stdout) == []

    # Moving it needs the password again, as over the API; with it, it moves
    refused = smsgw(api.env, "gateway", "update", str(gateway_id), "--server-host", "elsewhere.example.com")
    assert refused.returncode == 2
    api_says = admin.patch(f"/api/sms-gateways/{gateway_id}", json={"server_host": "elsewhere.example.com"})
    assert api_says.status_code == 422
    assert f"--password-stdin: {api_says.json()['errors']['password'][0]}" in refused.stderr
    moved = smsgw(api.env, "gateway", "update", str(gateway_id), "--server-host", "elsewhere.example.com",
                  "--notes", "moved by ops", "--password-stdin", stdin=PASSWORD + "-new")
    assert moved.returncode == 0, moved.stderr
    assert admin.get(f"/api/sms-gateways/{gateway_id}").json()["data"]["server_host"] == "elsewhere.example.com"

    rotated = smsgw(api.env, "gateway", "rotate-token", str(gateway_id), "--grace-seconds", "600")
    assert rotated.returncode == 0, rotated.stderr
    new_token = rotated.stdout.strip().splitlines()[-1]
    now = admin.get(f"/api/sms-gateways/{gateway_id}").json()["data"]
    assert new_token == now["callback_token"] != token
    assert f"accepted until {now['callback_token_previous_expires_at']}" in rotated.stdout

    off = smsgw(api.env, "gateway", "deactivate", str(gateway_id), "--json")
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["is_active"] is False
    assert admin.get(f"/api/sms-gateways/{gateway_id}").json()["data"]["is_active"] is False

    # every write is in the audit trail, as the CLI's, naming fields and never a value
    trail = [(row["actor"], row["actor_key_id"], row["action"], row["details"]) for row in audit_rows(admin)]
    assert trail == [
        ("cli", None, "gateway.created", {"name": "Acme Jasmin", "fields": [
            "meta", "name", "password", "server_host", "server_port", "use_ssl", "username"]}),
        ("cli", None, "gateway.changed", {"fields": ["notes", "password", "server_host"]}),
        ("cli", None, "gateway.token_rotated", {"grace_seconds": 600}),
        ("cli", None, "gateway.changed", {"fields": ["is_active"]}),
    ]
    everything = "".join(r.stdout + r.stderr for r in (created, shown, plain, listed, refused, moved, rotated, off))
    assert PASSWORD not in everything


def test_bad_values_get_the_api_s_messages_and_exit_2(api, admin):
    body = {"name": "bad", "server_host": "http://no-scheme.example", "server_port": "70000",
            "provider_type": "smoke-signals", "max_attempts": "0"}
    api_errors = admin.post("/api/sms-gateways", data=body).json()["errors"]  # a form body: strings, as the CLI
    done = smsgw(api.env, "gateway", "create", "--name", "bad", "--server-host", body["server_host"],
                 "--server-port", "70000", "--provider-type", "smoke-signals", "--max-attempts", "0")
    assert done.returncode == 2
    assert set(api_errors) == {"server_host", "server_port", "provider_type", "max_attempts"}
    for field, problems in api_errors.items():
        for problem in problems:
            assert f"--{field.replace('_', '-')}: {problem}" in done.stderr
    assert "Traceback" not in done.stderr
    assert admin.get("/api/sms-gateways").json()["data"] == []  # nothing was stored

    not_json = smsgw(api.env, "gateway", "create", "--name", "x", "--server-host", "h.example", "--meta", "[1, 2]")
    assert not_json.returncode == 2 and "--meta: The meta must be a JSON object." in not_json.stderr
    for meta in ('{"x": NaN}', '{"x": Infinity}', "[" * 100_000):  # what the API's body reader refuses too
        refused = smsgw(api.env, "gateway", "create", "--name", "x", "--server-host", "h.example", "--meta", meta)
        assert refused.returncode == 2 and "--meta: The meta must be a JSON object." in refused.stderr, refused.stderr
    assert admin.get("/api/sms-gateways").json()["data"] == []  # nothing was stored, and the list still reads
    too_long = smsgw(api.env, "gateway", "list", "--search", "x" * 256)
    api_says = admin.get("/api/sms-gateways", params={"search": "x" * 256}).json()["errors"]["search"][0]
    assert too_long.returncode == 2 and f"--search: {api_says}" in too_long.stderr, too_long.stderr
    nothing = smsgw(api.env, "gateway", "update", "1")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


def test_a_missing_gateway_exits_1_naming_the_id(empty_database):
    env = {**os.environ, "SMSGW_DATABASE_URL": empty_database}
    assert smsgw(env, "migrate").returncode == 0
    for action, extra in (("show", []), ("update", ["--notes", "x"]), ("rotate-token", []), ("deactivate", [])):
        done = smsgw(env, "gateway", action, "424242", *extra)
        assert done.returncode == 1, (action, done.stderr)
        assert done.stderr.strip() == "smsgw: no SMS gateway has id 424242"


def test_gateway_commands_on_an_unmigrated_database_say_run_migrate(empty_database):
    from api.db import NO_SCHEMA

    env = {**os.environ, "SMSGW_DATABASE_URL": empty_database}
    for args in (["gateway", "list"], ["message", "show", "1"]):
        done = smsgw(env, *args)
        assert done.returncode == 2, done.stderr
        assert f"smsgw: {NO_SCHEMA}" in done.stderr and "Traceback" not in done.stderr
