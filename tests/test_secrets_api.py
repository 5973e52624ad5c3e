"""Gateway passwords at rest, over the live API and the CLI, on SQLite and PostgreSQL:
the database holds no plaintext, sends still carry the right credentials, keys rotate,
and a key the process lacks fails a send cleanly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import sqlite3
import uuid

import httpx
import pytest

from api import secrets, webhook_endpoints, webhook_signing
from tests.servers import (
    create_postgres_database, drop_postgres_database, free_port, insert_webhook_endpoint, run_smsgw, start_api,
)

KEY_1, KEY_2, KEY_3 = (secrets.generate_key() for _ in range(3))
ID_1, ID_2, ID_3 = (secrets.keyring_from(key, None).current_id for key in (KEY_1, KEY_2, KEY_3))
ADMIN = "secrets-admin-key-" + "y" * 32


@contextlib.contextmanager
def own_database(database: dict[str, str], workdir):
    """Environment overrides naming a database no other test touches: rotation
    rewrites every gateway's password, which must not reach the shared one."""
    if "SMSGW_DATABASE_URL" not in database:
        yield {"SMSGW_DATABASE_URL": f"sqlite:///{workdir / 'own.db'}"}
        return
    url = create_postgres_database()
    try:
        yield {"SMSGW_DATABASE_URL": url}
    finally:
        drop_postgres_database(url)


def stored_password(env: dict[str, str], gateway_id: int, *, table: str = "sms_gateways",
                    column: str = "password") -> str | None:
    """The password column (or another secret's) exactly as the database holds it, read past the API."""
    url = env["SMSGW_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return db.execute(f"SELECT {column} FROM {table} WHERE id = ?", (gateway_id,)).fetchone()[0]

    async def read() -> str | None:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=5)
        try:
            return await connection.fetchval(f"SELECT {column} FROM {table} WHERE id = $1", gateway_id)
        finally:
            await connection.close()

    return asyncio.run(read())


def plain_env() -> dict[str, str]:
    """This process's environment without any SMSGW_SECRET_KEY*: a CLI run that sets its own."""
    return {name: value for name, value in os.environ.items() if not name.startswith("SMSGW_SECRET_KEY")}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def new_password() -> str:
    return "gw-pw-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def sealed(database, tmp_path_factory):
    """The API with SMSGW_SECRET_KEY set, on a database of its own."""
    workdir = tmp_path_factory.mktemp("sealed")
    with own_database(database, workdir) as db_env:
        api = start_api(workdir, SMSGW_SECRET_KEY=KEY_1, SMSGW_ADMIN_KEY=ADMIN, **db_env)
        try:
            yield api
        finally:
            api.process.stop()


@pytest.fixture
def admin(sealed):
    with httpx.Client(base_url=sealed.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10) as c:
        yield c


def send(client, gateway_id: int) -> httpx.Response:
    return client.post(f"/api/sms-gateways/{gateway_id}/send", json={"to_number": "+14155550123", "message": "hi"})


def test_a_password_is_sealed_at_rest_and_still_authenticates_the_send(sealed, admin, stub):
    stub.answer(200, {"data": 'Success "sealed-1'})
    first, second = new_password(), new_password()
    created = admin.post("/api/sms-gateways", json={
        "name": "sealed", "server_host": "127.0.0.1", "server_port": stub.port, "username": "user",
        "password": first, "default_sender_id": "ACME"})
    assert created.status_code == 201, created.text
    gateway_id = created.json()["data"]["id"]

    at_rest = stored_password(sealed.env, gateway_id)
    assert at_rest.startswith(f"aesgcm:v1:{ID_1}:") and first not in at_rest
    assert send(admin, gateway_id).status_code == 201
    assert stub.received[-1].headers["Authorization"] == basic("user", first)

    changed = admin.patch(f"/api/sms-gateways/{gateway_id}", json={"password": second})
    assert changed.status_code == 200, changed.text
    again = stored_password(sealed.env, gateway_id)
    assert again.startswith(f"aesgcm:v1:{ID_1}:") and second not in again and again != at_rest
    assert send(admin, gateway_id).status_code == 201
    assert stub.received[-1].headers["Authorization"] == basic("user", second)

    shown = admin.get(f"/api/sms-gateways/{gateway_id}").text + created.text + changed.text
    for secret in (first, second, at_rest, again, KEY_1):
        assert secret not in shown
        assert secret not in sealed.log


def test_a_password_sealed_with_a_key_the_api_lacks_fails_the_send_cleanly(sealed, admin, stub):
    password = new_password()
    # `smsgw demo` seals through the same code; run with another key, it leaves a row the API cannot open
    demo = run_smsgw({**sealed.env, "SMSGW_SECRET_KEY": KEY_3, "SMSGW_SIMULATOR_PORT": str(stub.port),
                      "SMSGW_SIMULATOR_PASSWORD": password}, "demo")
    gateway_id = int(demo.stdout.strip())
    assert stored_password(sealed.env, gateway_id).startswith(f"aesgcm:v1:{ID_3}:")

    response = send(admin, gateway_id)
    assert response.status_code == 503, response.text
    message = response.json()["data"]
    assert (message["delivery_status"], message["failure_code"]) == ("failed", "secret_unavailable")
    assert ID_3 in message["failure_reason"] and "SMSGW_SECRET_KEY" in message["failure_reason"]
    assert stub.received == []  # the gateway was never called with a wrong password
    log = sealed.log
    assert f"gateway {gateway_id}" in log and ID_3 in log
    assert "Traceback" not in log
    for secret in (password, KEY_1, KEY_3):
        assert secret not in log and secret not in response.text + demo.stdout + demo.stderr


def test_rotate_key_seals_plaintext_then_moves_every_password_to_the_new_key(database, tmp_path, stub):
    password = new_password()
    with own_database(database, tmp_path) as db_env:
        env = {**plain_env(), **db_env, "SMSGW_SIMULATOR_PORT": str(stub.port),
               "SMSGW_SIMULATOR_PASSWORD": password}
        run_smsgw(env, "migrate")
        gateway_id = int(run_smsgw(env, "demo").stdout.strip())
        assert stored_password(env, gateway_id) == password  # no key: plaintext, as before
        hook_secret = webhook_signing.new_secret()
        endpoint_id = insert_webhook_endpoint(env, "https://app.example.test/hooks", gateway_id, hook_secret)

        def hook_stored() -> str:
            return stored_password(env, endpoint_id, table="webhook_endpoints", column="secret")

        def rotate(current: str, *previous: str, check: bool = True):
            return run_smsgw({**env, "SMSGW_SECRET_KEY": current,
                              "SMSGW_SECRET_KEY_PREVIOUS": ",".join(previous)}, "secrets", "rotate-key", check=check)

        outputs = [rotate(KEY_1)]
        assert outputs[-1].stdout.startswith(f"2 of 2 stored secrets (gateway passwords, webhook signing "
                                             f"secrets) re-encrypted under key {ID_1}")
        assert stored_password(env, gateway_id).startswith(f"aesgcm:v1:{ID_1}:")
        assert hook_stored().startswith(f"aesgcm:v1:{ID_1}:")
        outputs.append(rotate(KEY_1))  # idempotent
        assert outputs[-1].stdout.startswith("0 of 2 ")

        outputs.append(rotate(KEY_2, KEY_3, KEY_1))
        assert outputs[-1].stdout.startswith("2 of 2 stored secrets")
        under_2 = stored_password(env, gateway_id)
        assert under_2.startswith(f"aesgcm:v1:{ID_2}:") and hook_stored().startswith(f"aesgcm:v1:{ID_2}:")
        assert secrets.unseal(secrets.keyring_from(KEY_2, None), hook_stored(),
                              webhook_endpoints.PURPOSE) == hook_secret

        outputs.append(rotate(KEY_3, check=False))  # the key that sealed it is missing: nothing changes
        assert outputs[-1].returncode == 1
        assert f"gateway {gateway_id}" in outputs[-1].stderr and ID_2 in outputs[-1].stderr
        assert stored_password(env, gateway_id) == under_2

        api = start_api(tmp_path, SMSGW_SECRET_KEY=KEY_2, SMSGW_ADMIN_KEY=ADMIN, **db_env)  # the new key alone
        try:
            with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10) as c:
                stub.answer(200, {"data": 'Success "rotated-1'})
                assert send(c, gateway_id).status_code == 201
            assert stub.received[-1].headers["Authorization"] == basic("demo", password)
        finally:
            api.process.stop()
        for secret in (password, KEY_1, KEY_2, KEY_3, hook_secret):
            assert secret not in api.log
            assert all(secret not in out.stdout + out.stderr for out in outputs)


def test_without_a_key_the_api_warns_once_that_passwords_are_plaintext(api, client, stub_gateway, sealed):
    client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550123", "message": "x"})
    warnings = [line for line in api.log.splitlines() if "SMSGW_SECRET_KEY" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "plaintext" in warnings[0]
    assert not [line for line in sealed.log.splitlines() if "WARNING" in line and "plaintext" in line]


def test_a_malformed_key_stops_the_api_at_start_without_echoing_it(tmp_path):
    bad = "not-a-key-" + uuid.uuid4().hex
    result = run_smsgw({**plain_env(), "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                        "SMSGW_API_PORT": str(free_port()), "SMSGW_SECRET_KEY": bad}, "api", check=False)
    assert result.returncode == 2
    assert "SMSGW_SECRET_KEY" in result.stderr and "generate-key" in result.stderr
    assert bad not in result.stderr + result.stdout


def test_generate_key_prints_a_usable_key():
    printed = run_smsgw(plain_env(), "secrets", "generate-key").stdout.strip()
    assert len(secrets.parse_key(printed)) == 32
    assert printed != run_smsgw(plain_env(), "secrets", "generate-key").stdout.strip()
