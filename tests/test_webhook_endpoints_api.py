"""Status webhook endpoints over the live API, on SQLite and PostgreSQL: the secret is shown
once and stored sealed, what is refused (events, gateways, fields, unsafe URLs), PATCH
re-enabling an endpoint smsgw disabled, DELETE taking its deliveries along, secret
rotation and its grace, and the webhooks:admin scope."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import sqlite3
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from api import secrets
from api.webhook_endpoints import signing_secrets
from tests.servers import create_postgres_database, drop_postgres_database, error_body, start_api

# The tuple api.notices.EVENT_TYPES holds, as a user reads it in the issue.
EVENT_TYPES = ("message.queued", "message.submitted", "message.delivered", "message.failed", "message.expired",
               "message.canceled", "message.status_updated")
HOOKS_ADMIN = "hooks-admin-key-" + "z" * 32
SECRET_KEY = secrets.generate_key()
KEYRING = secrets.keyring_from(SECRET_KEY, None)
SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{43}=")
RECEIVER = "http://127.0.0.1:9/hooks"  # nothing listens: an attempt fails at once, never succeeds
_names = itertools.count(1)


@pytest.fixture(scope="session")
def hooks_api(database, tmp_path_factory):
    """An API that may call local http:// endpoints (SMSGW_WEBHOOK_ALLOW_HTTP/PRIVATE), seals
    secrets (SMSGW_SECRET_KEY) and retries a failed delivery only after an hour, on a
    database of its own: its endpoints and deliveries never meet another test's."""
    workdir = tmp_path_factory.mktemp("hooks")
    own = {"SMSGW_DATABASE_URL": create_postgres_database()} if "SMSGW_DATABASE_URL" in database else {}
    try:
        api = start_api(workdir, SMSGW_ADMIN_KEY=HOOKS_ADMIN, SMSGW_SECRET_KEY=SECRET_KEY,
                        SMSGW_WEBHOOK_ALLOW_HTTP="1", SMSGW_WEBHOOK_ALLOW_PRIVATE="1",
                        SMSGW_WEBHOOK_RETRY_SCHEDULE="0,3600", **own)
        try:
            yield api
        finally:
            api.process.stop()
    finally:
        if own:
            drop_postgres_database(own["SMSGW_DATABASE_URL"])


@pytest.fixture
def hooks(hooks_api):
    with httpx.Client(base_url=hooks_api.url, headers={"Authorization": f"Bearer {HOOKS_ADMIN}"}, timeout=30) as c:
        yield c


def run_sql(api, statement: str) -> list[tuple]:
    """One statement straight on the API's database (past the API); its rows."""
    url = api.env["SMSGW_DATABASE_URL"]
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1], timeout=30) as connection:
            return connection.execute(statement).fetchall()

    async def run():
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await connection.fetch(statement)]
        finally:
            await connection.close()

    return asyncio.run(run())


def make_gateway(client) -> int:
    response = client.post("/api/sms-gateways", json={"name": f"hooks gateway {next(_names)}",
                                                       "server_host": "127.0.0.1", "server_port": 9})
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def make_endpoint(client, **fields) -> dict:
    body = {"url": RECEIVER, "events": list(EVENT_TYPES), **fields}
    response = client.post("/api/webhook-endpoints", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def refused(response, field: str) -> str:
    """The contract's 422 naming ``field``; its message."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] and field in body["errors"], body
    return " ".join(body["errors"][field])


def iso_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def test_create_shows_the_secret_once_and_never_again(hooks_api, hooks):
    gateway = make_gateway(hooks)
    response = hooks.post("/api/webhook-endpoints", json={
        "url": RECEIVER, "events": ["message.failed", "message.delivered"], "description": "billing app",
        "gateway_ids": [gateway]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert "only this once" in body["message"]
    created = body["data"]
    secret = created.pop("secret")
    assert SECRET.fullmatch(secret) and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["url"] == RECEIVER and created["description"] == "billing app"
    assert created["events"] == ["message.delivered", "message.failed"]  # in the documented order
    assert created["gateway_ids"] == [gateway] and created["is_active"] is True
    assert created["failing_since"] is None and created["disabled_at"] is None and created["disabled_reason"] is None
    assert created["rotation_grace_ends_at"] is None and created["created_at"] and created["updated_at"]
    shown = hooks.get(f"/api/webhook-endpoints/{created['id']}")
    assert shown.status_code == 200 and shown.json()["data"] == created
    listed = hooks.get("/api/webhook-endpoints")
    assert [e for e in listed.json()["data"] if e["id"] == created["id"]] == [created]
    ids = [e["id"] for e in listed.json()["data"]]
    assert ids == sorted(ids)
    for text in (shown.text, listed.text, hooks.get("/api/audit-events").text, hooks_api.log):
        assert secret not in text
    # stored sealed under SMSGW_SECRET_KEY, and it opens to the secret shown
    stored = run_sql(hooks_api, f"SELECT secret FROM webhook_endpoints WHERE id = {created['id']}")[0][0]
    assert secrets.is_sealed(stored) and secret not in stored
    assert secrets.unseal(KEYRING, stored, "webhook_endpoints.secret") == secret
    second = make_endpoint(hooks)
    assert second["id"] > created["id"] and make_endpoint(hooks)["gateway_ids"] is None


def test_what_is_refused_is_a_422_naming_each_field(hooks_api, hooks):
    gateway = make_gateway(hooks)
    cases = [
        ({"url": RECEIVER, "events": []}, "events", "non-empty list"),
        ({"url": RECEIVER, "events": "message.failed"}, "events", "non-empty list"),
        ({"url": RECEIVER, "events": ["message.sent"]}, "events", "'message.sent'"),
        ({"url": RECEIVER, "events": ["message.failed", "message.failed"]}, "events", "must not repeat"),
        ({"url": RECEIVER}, "events", "required"),
        ({"events": ["message.failed"]}, "url", "required"),
        ({"url": RECEIVER, "events": ["message.failed"], "gateway_ids": [gateway, 987654321]},
         "gateway_ids", "987654321"),
        ({"url": RECEIVER, "events": ["message.failed"], "gateway_ids": []}, "gateway_ids", "non-empty"),
        ({"url": RECEIVER, "events": ["message.failed"], "secret": "whsec_mine"}, "secret", "not a known field"),
        ({"url": RECEIVER, "events": ["message.failed"], "is_active": False}, "is_active", "not a known field"),
        ({"url": "ftp://127.0.0.1/hooks", "events": ["message.failed"]}, "url", ""),
        ({"url": "not a url", "events": ["message.failed"]}, "url", ""),
        ({"url": "http://" + "a" * 2050, "events": ["message.failed"]}, "url", "2048"),
    ]
    for body, field, said in cases:
        message = refused(hooks.post("/api/webhook-endpoints", json=body), field)
        assert said in message, (body, message)
    # every problem at once
    both = hooks.post("/api/webhook-endpoints", json={"url": "ftp://x", "events": [], "colour": "red"})
    assert set(both.json()["errors"]) == {"url", "events", "colour"}
    assert hooks.post("/api/webhook-endpoints", content=b"[1]", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert hooks.post("/api/webhook-endpoints", data={"url": RECEIVER}).status_code == 415
    assert all(e["gateway_ids"] != [gateway] for e in hooks.get("/api/webhook-endpoints").json()["data"])


def test_a_local_or_plain_http_url_is_refused_without_the_settings(client):
    """The shared test API runs without SMSGW_WEBHOOK_ALLOW_HTTP / _PRIVATE."""
    plain = refused(client.post("/api/webhook-endpoints", json={"url": "http://127.0.0.1:9/x",
                                                                "events": ["message.failed"]}), "url")
    assert "https" in plain.lower()
    private = refused(client.post("/api/webhook-endpoints", json={"url": "https://127.0.0.1:9/x",
                                                                  "events": ["message.failed"]}), "url")
    assert "127.0.0.1" in private or "private" in private.lower() or "loopback" in private.lower()


def test_patch_changes_fields_and_re_enabling_clears_why_it_was_disabled(hooks_api, hooks):
    endpoint = make_endpoint(hooks)
    url = f"/api/webhook-endpoints/{endpoint['id']}"
    gateway = make_gateway(hooks)
    changed = hooks.patch(url, json={"events": ["message.delivered"], "description": "ops", "gateway_ids": [gateway],
                                     "url": "http://127.0.0.1:9/other"})
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["events"], data["description"], data["gateway_ids"], data["url"]) == (
        ["message.delivered"], "ops", [gateway], "http://127.0.0.1:9/other")
    assert "secret" not in data and data["updated_at"] >= endpoint["updated_at"]
    assert hooks.patch(url, json={"gateway_ids": None}).json()["data"]["gateway_ids"] is None
    # smsgw disabled it (410 Gone): the user enables it again
    run_sql(hooks_api, "UPDATE webhook_endpoints SET is_active = false, disabled_at = '2026-01-01T00:00:00.000000Z', "
                       "disabled_reason = 'The endpoint answered 410 Gone.', "
                       f"failing_since = '2025-12-27T00:00:00.000000Z' WHERE id = {endpoint['id']}")
    off = hooks.get(url).json()["data"]
    assert off["is_active"] is False and off["disabled_reason"] == "The endpoint answered 410 Gone."
    on = hooks.patch(url, json={"is_active": True}).json()["data"]
    assert on["is_active"] is True
    assert (on["disabled_at"], on["disabled_reason"], on["failing_since"]) == (None, None, None)
    assert hooks.patch(url, json={"is_active": False}).json()["data"]["is_active"] is False
    # what a GET shows may be sent back; anything else, and a bad value, is a 422
    assert hooks.patch(url, json={"id": endpoint["id"], "created_at": "x", "is_active": True}).status_code == 200
    refused(hooks.patch(url, json={"secret": "whsec_x"}), "secret")
    refused(hooks.patch(url, json={"events": ["nope"]}), "events")
    refused(hooks.patch(url, json={"url": "ftp://127.0.0.1/"}), "url")
    refused(hooks.patch(url, json={"url": None}), "url")
    refused(hooks.patch(url, json={"gateway_ids": [987654321]}), "gateway_ids")
    refused(hooks.patch(url, json={"is_active": "yes"}), "is_active")
    assert hooks.get(url).json()["data"]["url"] == "http://127.0.0.1:9/other"  # nothing of a refused PATCH stays
    assert error_body(hooks.patch("/api/webhook-endpoints/987654321", json={"is_active": True})) == {
        "message": "Webhook endpoint not found."}
    actions = [e["action"] for e in hooks.get("/api/audit-events").json()["data"] if e["target_id"] == endpoint["id"]]
    assert "webhook.changed" in actions and "webhook.created" in actions


def test_delete_removes_the_endpoint_and_its_deliveries(hooks_api, hooks):
    endpoint = make_endpoint(hooks)
    kept = make_endpoint(hooks)
    stamp = "2026-01-01T00:00:00.000000Z"
    for endpoint_id in (endpoint["id"], kept["id"]):
        run_sql(hooks_api, "INSERT INTO webhook_deliveries (endpoint_id, message_id, sequence, event_type, status, "
                           "attempts, created_at, updated_at) VALUES "
                           f"({endpoint_id}, 1, 1, 'message.queued', 'succeeded', 1, '{stamp}', '{stamp}')")
    url = f"/api/webhook-endpoints/{endpoint['id']}"
    deleted = hooks.delete(url)
    assert deleted.status_code == 200 and deleted.json()["data"] == {"id": endpoint["id"]}
    assert hooks.get(url).status_code == 404 and error_body(hooks.get(url)) == {"message": "Webhook endpoint not found."}
    assert hooks.delete(url).status_code == 404
    assert hooks.get(url + "/deliveries").status_code == 404
    left = run_sql(hooks_api, "SELECT endpoint_id FROM webhook_deliveries WHERE endpoint_id IN "
                              f"({endpoint['id']}, {kept['id']})")
    assert left == [(kept["id"],)]
    assert hooks.get(f"/api/webhook-endpoints/{2**63}").status_code == 404


def test_rotation_gives_a_new_secret_and_the_old_one_signs_until_the_grace_ends(hooks_api, hooks):
    created = hooks.post("/api/webhook-endpoints", json={"url": RECEIVER, "events": ["message.failed"]}).json()
    old = created["data"]["secret"]
    url = f"/api/webhook-endpoints/{created['data']['id']}"
    before = iso_in(0)
    rotated = hooks.post(url + "/secret/rotate", json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    assert "only this once" in rotated.json()["message"]
    new = rotated.json()["data"]["secret"]
    assert SECRET.fullmatch(new) and new != old
    grace_end = rotated.json()["data"]["rotation_grace_ends_at"]
    assert before + timedelta(seconds=3590) < datetime.fromisoformat(grace_end) < iso_in(3610)
    shown = hooks.get(url)
    assert shown.json()["data"]["rotation_grace_ends_at"] == grace_end
    listed = hooks.get("/api/webhook-endpoints").text
    for text in (shown.text, listed, hooks.get("/api/audit-events").text, hooks_api.log):
        assert old not in text and new not in text
    # what the worker signs with: both secrets now, only the new one after the grace
    columns = ("secret", "previous_secret", "previous_secret_expires_at")
    row = dict(zip(columns, run_sql(hooks_api, f"SELECT {', '.join(columns)} FROM webhook_endpoints "
                                               f"WHERE id = {created['data']['id']}")[0]))
    assert secrets.is_sealed(row["secret"]) and secrets.is_sealed(row["previous_secret"])
    assert signing_secrets(row, KEYRING, iso_in(0)) == [new, old]
    assert signing_secrets(row, KEYRING, iso_in(3700)) == [new]
    # no grace: the old secret stops at once
    newest = hooks.post(url + "/secret/rotate", json={"grace_seconds": 0}).json()["data"]
    assert newest["rotation_grace_ends_at"] is None
    row = dict(zip(columns, run_sql(hooks_api, f"SELECT {', '.join(columns)} FROM webhook_endpoints "
                                               f"WHERE id = {created['data']['id']}")[0]))
    assert signing_secrets(row, KEYRING, iso_in(0)) == [newest["secret"]]
    # no body: the default grace (24 h)
    default = hooks.post(url + "/secret/rotate").json()["data"]["rotation_grace_ends_at"]
    assert iso_in(24 * 3600 - 60) < datetime.fromisoformat(default) < iso_in(24 * 3600 + 60)
    refused(hooks.post(url + "/secret/rotate", json={"grace_seconds": 31 * 24 * 3600}), "grace_seconds")
    refused(hooks.post(url + "/secret/rotate", json={"grace_seconds": -1}), "grace_seconds")
    assert hooks.post("/api/webhook-endpoints/987654321/secret/rotate").status_code == 404
    rotations = [e for e in hooks.get("/api/audit-events", params={"action": "webhook.secret_rotated"}).json()["data"]
                 if e["target_id"] == created["data"]["id"]]
    assert [e["details"]["grace_seconds"] for e in rotations] == [86400, 0, 3600]


def test_signing_secrets_reads_plaintext_rows_too():
    """Rows stored before SMSGW_SECRET_KEY was set hold the secrets as they are."""
    row = {"secret": "whsec_new", "previous_secret": "whsec_old",
           "previous_secret_expires_at": "2030-01-01T00:00:00.000000Z"}
    assert signing_secrets(row, secrets.Keyring(), "2029-12-31T23:59:59.000000Z") == ["whsec_new", "whsec_old"]
    assert signing_secrets(row, secrets.Keyring(), "2030-01-01T00:00:00.000000Z") == ["whsec_new"]
    assert signing_secrets({**row, "previous_secret": None}, secrets.Keyring(), "2000-01-01T00:00:00.000000Z") == [
        "whsec_new"]


def test_a_key_without_webhooks_admin_is_refused_every_webhook_route(hooks_api, hooks):
    endpoint = make_endpoint(hooks)
    gateway = make_gateway(hooks)
    weak = hooks.post("/api/api-keys", json={"name": "no hooks", "scopes": ["messages:read", "gateways:admin"]})
    limited = hooks.post("/api/api-keys", json={"name": "one gateway", "scopes": ["all"], "gateway_ids": [gateway]})
    assert weak.status_code == 201 and limited.status_code == 201
    routes = [("GET", "/api/webhook-endpoints"), ("POST", "/api/webhook-endpoints"),
              ("GET", f"/api/webhook-endpoints/{endpoint['id']}"),
              ("PATCH", f"/api/webhook-endpoints/{endpoint['id']}"),
              ("DELETE", f"/api/webhook-endpoints/{endpoint['id']}"),
              ("POST", f"/api/webhook-endpoints/{endpoint['id']}/secret/rotate"),
              ("GET", f"/api/webhook-endpoints/{endpoint['id']}/deliveries"),
              ("POST", f"/api/webhook-endpoints/{endpoint['id']}/replay?since=2020-01-01T00:00:00Z"),
              ("POST", "/api/webhook-deliveries/1/retry")]
    for key, said in ((weak.json()["data"]["key"], "This key may not manage webhook endpoints."),
                      (limited.json()["data"]["key"], "limited to some gateways")):
        for method, path in routes:
            response = hooks.request(method, path, headers={"Authorization": f"Bearer {key}"},
                                     json={"url": RECEIVER, "events": ["message.failed"]})
            assert response.status_code == 403 and said in response.json()["message"], (method, path, response.text)
    assert hooks.get(f"/api/webhook-endpoints/{endpoint['id']}").json()["data"]["is_active"] is True
    assert hooks.get("/api/webhook-endpoints", headers={"Authorization": "Bearer nope"}).status_code == 401
