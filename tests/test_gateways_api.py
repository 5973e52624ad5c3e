"""Gateway records over HTTP: the contract's fields, validation, search, update, delete, rotation."""

from __future__ import annotations

import pytest

from tests.conftest import PUBLIC_URL


def test_create_returns_the_record_without_the_password(client, make_gateway):
    gateway = make_gateway(name="Primary Jasmin", notes="rack 4", meta={"region": "eu"})
    assert gateway["name"] == "Primary Jasmin"
    assert gateway["provider_type"] == "jasmin"
    assert gateway["server_host"] == "127.0.0.1"
    assert gateway["api_path"] == "secure/send"
    assert gateway["username"] == "jasmin-user"
    assert "password" not in gateway
    assert gateway["is_active"] is True and gateway["use_ssl"] is False
    assert gateway["notes"] == "rack 4" and gateway["meta"] == {"region": "eu"}
    assert gateway["messages_count"] == 0
    assert gateway["created_at"].endswith("Z") and gateway["updated_at"].endswith("Z")
    shown = client.get(f"/api/sms-gateways/{gateway['id']}").json()
    assert shown["message"] == "SMS gateway fetched successfully."
    assert shown["data"] == gateway
    assert "jasmin-secret-pw" not in client.get("/api/sms-gateways").text


def test_generated_callback_token_is_long_and_unique(make_gateway):
    tokens = {make_gateway()["callback_token"] for _ in range(5)}
    assert len(tokens) == 5
    # token_urlsafe(32): 43 characters of base64url, 256 bits.
    assert all(len(token) >= 43 for token in tokens)


def test_given_callback_token_is_kept(make_gateway):
    token = "my-own-token-" + "a" * 30
    assert make_gateway(callback_token=token)["callback_token"] == token


@pytest.mark.parametrize("provider_type, use_ssl, path, port", [
    ("jasmin", False, "secure/send", 8080),      # Jasmin's REST API
    ("jasmin-http", False, "send", 1401),        # Jasmin's HTTP API
    ("http", False, "send", 80),
    ("http", True, "send", 443),
])
def test_defaults_follow_the_provider_type(client, provider_type, use_ssl, path, port):
    response = client.post("/api/sms-gateways", json={"name": "minimal", "server_host": "gw.example.com",
                                                      "provider_type": provider_type, "use_ssl": use_ssl})
    assert response.status_code == 201
    gateway = response.json()["data"]
    assert (gateway["api_path"], gateway["server_port"]) == (path, port)


def test_jasmin_is_the_default_provider_type(client):
    gateway = client.post("/api/sms-gateways", json={"name": "n", "server_host": "h"}).json()["data"]
    assert gateway["provider_type"] == "jasmin"


def test_a_form_body_creates_a_gateway_too(client):
    response = client.post("/api/sms-gateways", data={
        "name": "from a form", "server_host": "10.0.0.5", "server_port": "1401",
        "use_ssl": "false", "provider_type": "http",
    })
    assert response.status_code == 201, response.text
    gateway = response.json()["data"]
    assert (gateway["server_port"], gateway["use_ssl"], gateway["provider_type"]) == (1401, False, "http")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"server_host": "h"}, "name"),
        ({"name": "", "server_host": "h"}, "name"),
        ({"name": "x" * 256, "server_host": "h"}, "name"),
        ({"name": 5, "server_host": "h"}, "name"),
        ({"name": "n"}, "server_host"),
        ({"name": "n", "server_host": "http://gw.example.com/send"}, "server_host"),
        ({"name": "n", "server_host": "h", "server_port": "80"}, "server_port"),
        ({"name": "n", "server_host": "h", "server_port": 0}, "server_port"),
        ({"name": "n", "server_host": "h", "server_port": 70000}, "server_port"),
        ({"name": "n", "server_host": "h", "server_port": True}, "server_port"),
        ({"name": "n", "server_host": "h", "provider_type": "smpp-magic"}, "provider_type"),
        ({"name": "n", "server_host": "h", "is_active": "yes"}, "is_active"),
        ({"name": "n", "server_host": "h", "meta": [1, 2]}, "meta"),
        ({"name": "n", "server_host": "h", "callback_token": "short"}, "callback_token"),
        ({"name": "n", "server_host": "h", "callback_token": "a b" * 20}, "callback_token"),
        ({"name": "n", "server_host": "h", "api_path": "send?x=1"}, "api_path"),
        ({"name": "n", "server_host": "h", "default_sender_id": "x" * 21}, "default_sender_id"),
        ({"name": "n", "server_host": "h", "nmae": "typo"}, "nmae"),
    ],
)
def test_invalid_gateway_fields_are_422_naming_the_field(client, body, field):
    before = client.get("/api/sms-gateways").json()["data"]
    response = client.post("/api/sms-gateways", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["message"] == "The given data was invalid."
    assert list(payload["errors"]) == [field]
    assert all(isinstance(text, str) and text for text in payload["errors"][field])
    assert client.get("/api/sms-gateways").json()["data"] == before


@pytest.mark.parametrize(
    "content, content_type, status",
    [
        (b'{"name": "x", ', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"", "application/json", 400),
        (b"name=x", "text/plain", 415),
        (b"\x89PNG\r\n", "image/png", 415),
    ],
)
def test_bodies_that_are_not_a_json_object_or_form_are_4xx(client, content, content_type, status):
    response = client.post("/api/sms-gateways", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["message"]
    assert isinstance(response.json()["errors"], dict)


def test_a_body_over_the_limit_is_413(client):
    response = client.post("/api/sms-gateways", json={"name": "n", "server_host": "h", "notes": "x" * 70_000})
    assert response.status_code == 413
    assert "limit" in response.json()["message"]
    assert response.json()["errors"] == {"body": ["At most 65536 bytes are accepted."]}


def test_search_matches_name_host_and_provider_type_case_insensitively(client, make_gateway):
    a = make_gateway(name="Nairobi Primary", server_host="smsc-ke.example.net")
    b = make_gateway(name="Lagos", server_host="10.20.30.40", provider_type="http")
    c = make_gateway(name="100%_literal")

    def ids(term: str) -> set[int]:
        response = client.get("/api/sms-gateways", params={"search": term})
        assert response.status_code == 200
        return {g["id"] for g in response.json()["data"]}

    assert a["id"] in ids("nairobi") and b["id"] not in ids("nairobi")
    assert a["id"] in ids("SMSC-KE") and b["id"] not in ids("smsc-ke")
    assert b["id"] in ids("HTTP") and a["id"] not in ids("http")
    assert b["id"] in ids("30.40")
    # % and _ are matched literally, not as wildcards.
    assert ids("0%_") == {c["id"]}
    assert a["id"] not in ids("%")


def test_list_envelope_and_messages_count(client, stub_gateway):
    client.post(f"/api/sms-gateways/{stub_gateway['id']}/send", json={"to_number": "+14155550111", "message": "a"})
    listing = client.get("/api/sms-gateways").json()
    assert listing["message"] == "SMS gateways fetched successfully."
    mine = next(g for g in listing["data"] if g["id"] == stub_gateway["id"])
    assert mine["messages_count"] == 1


def test_unknown_ids_are_404(client):
    for path in ("/api/sms-gateways/999999", "/api/sms-gateways/99999999999999999999999",
                 "/api/sms-gateways/abc", "/api/sms-messages/999999"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["message"]
    assert client.patch("/api/sms-gateways/999999", json={"name": "x"}).status_code == 404
    assert client.delete("/api/sms-gateways/999999").status_code == 404
    assert client.post("/api/sms-gateways/999999/callback-token/rotate").status_code == 404


def test_patch_changes_only_the_given_fields(client, make_gateway):
    gateway = make_gateway(notes="old")
    response = client.patch(f"/api/sms-gateways/{gateway['id']}", json={"notes": None, "server_port": 2775,
                                                                   "password": "jasmin-secret-pw"})
    assert response.status_code == 200
    updated = response.json()["data"]
    assert updated["notes"] is None and updated["server_port"] == 2775
    assert updated["name"] == gateway["name"] and updated["callback_token"] == gateway["callback_token"]
    assert updated["updated_at"] > gateway["updated_at"]
    # PUT behaves the same; read-only fields echoed from a GET are ignored.
    echoed = {**updated, "name": "renamed"}
    response = client.put(f"/api/sms-gateways/{gateway['id']}", json=echoed)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["name"] == "renamed"
    assert response.json()["data"]["messages_count"] == 0


def test_patch_rejects_bad_values_and_keeps_the_record(client, make_gateway):
    gateway = make_gateway()
    response = client.patch(f"/api/sms-gateways/{gateway['id']}", json={"name": "", "server_port": -1})
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"name", "server_port"}
    assert client.get(f"/api/sms-gateways/{gateway['id']}").json()["data"] == gateway


def test_password_is_write_only_but_used(client, make_gateway, stub):
    stub.answer(200, {"data": 'Success "pw-1'})
    gateway = make_gateway(server_port=stub.port)
    client.patch(f"/api/sms-gateways/{gateway['id']}", json={"password": "rotated-pw"})
    shown = client.get(f"/api/sms-gateways/{gateway['id']}").text
    assert "rotated-pw" not in shown and "password" not in shown
    client.post(f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    import base64
    assert stub.received[-1].headers["Authorization"] == "Basic " + base64.b64encode(
        b"jasmin-user:rotated-pw").decode()


def test_delete_removes_a_gateway_without_messages(client, make_gateway):
    gateway = make_gateway()
    response = client.delete(f"/api/sms-gateways/{gateway['id']}")
    assert response.status_code == 200
    assert response.json()["data"] == {"id": gateway["id"]}
    assert client.get(f"/api/sms-gateways/{gateway['id']}").status_code == 404


def test_delete_keeps_a_gateway_with_messages(client, stub_gateway):
    sent = client.post(f"/api/sms-gateways/{stub_gateway['id']}/send",
                       json={"to_number": "+14155550112", "message": "keep me"}).json()["data"]
    response = client.delete(f"/api/sms-gateways/{stub_gateway['id']}")
    assert response.status_code == 409
    assert "deactivate" in response.json()["message"]
    assert client.get(f"/api/sms-gateways/{stub_gateway['id']}").status_code == 200
    assert client.get(f"/api/sms-messages/{sent['id']}").json()["data"]["message"] == "keep me"


def test_rotate_gives_a_new_token_and_a_grace_period(client, make_gateway):
    gateway = make_gateway()
    response = client.post(f"/api/sms-gateways/{gateway['id']}/callback-token/rotate")
    assert response.status_code == 200
    rotated = response.json()["data"]
    assert rotated["callback_token"] != gateway["callback_token"]
    assert len(rotated["callback_token"]) >= 43
    expires = rotated["callback_token_previous_expires_at"]
    assert expires is not None and expires.endswith("Z")
    # default grace: 24 h after the rotation
    from datetime import datetime, timedelta
    at = datetime.fromisoformat(rotated["updated_at"].replace("Z", "+00:00"))
    until = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) < until - at <= timedelta(hours=24, seconds=1)
    # the previous token itself is never shown
    assert gateway["callback_token"] not in response.text


def test_rotate_with_no_grace_revokes_at_once(client, make_gateway):
    gateway = make_gateway()
    rotated = client.post(f"/api/sms-gateways/{gateway['id']}/callback-token/rotate",
                          json={"grace_seconds": 0}).json()["data"]
    assert rotated["callback_token_previous_expires_at"] is None
    bad = client.post(f"/api/sms-gateways/{gateway['id']}/callback-token/rotate", json={"grace_seconds": -5})
    assert bad.status_code == 422 and "grace_seconds" in bad.json()["errors"]


def test_default_callback_url_uses_the_public_url(client, make_gateway, stub):
    stub.answer(200, {"data": 'Success "cb-1'})
    jasmin = make_gateway(server_port=stub.port)
    client.post(f"/api/sms-gateways/{jasmin['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert stub.received[-1].json()["dlr-url"] == (
        f"{PUBLIC_URL}/webhooks/jasmin/{jasmin['id']}/dlr?token={jasmin['callback_token']}")
    stub.answer(200, {"message_id": "cb-2"})
    generic = make_gateway(server_port=stub.port, provider_type="http", api_path="send")
    client.post(f"/api/sms-gateways/{generic['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert stub.received[-1].json()["dlr-url"] == (
        f"{PUBLIC_URL}/api/sms-gateways/{generic['id']}/dlr?token={generic['callback_token']}")
