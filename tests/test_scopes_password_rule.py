"""The write-only gateway password cannot be taken by re-pointing the gateway.

Before this rule any key could PATCH ``server_port`` to a listener of its own
and send one message: the gateway's password arrived there in Basic Auth.
Changing where or how smsgw talks to the gateway now needs the password in
the same request.
"""

from __future__ import annotations

import base64

import pytest

PASSWORD = "jasmin-secret-pw"


def send(client, gateway_id):
    return client.post(f"/api/sms-gateways/{gateway_id}/send",
                       json={"to_number": "+14155550123", "message": "hello"})


def basic_auth_passwords(stub) -> list[str]:
    seen = []
    for request in stub.received:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            seen.append(base64.b64decode(header[6:]).decode().partition(":")[2])
    return seen


def test_pointing_a_gateway_at_another_listener_without_the_password_is_refused(client, make_gateway, stub):
    # The attack: a gateway that listens elsewhere (port 9 here), re-pointed at
    # the attacker's listener (the stub), then one send.
    gateway = make_gateway(server_port=9, password=PASSWORD)
    stub.answer(200, {"data": 'Success "taken-1'})
    response = client.patch(f"/api/sms-gateways/{gateway['id']}", json={"server_port": stub.port})
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "The given data was invalid."
    assert list(body["errors"]) == ["password"]
    assert client.get(f"/api/sms-gateways/{gateway['id']}").json()["data"]["server_port"] == 9
    send(client, gateway["id"])
    assert PASSWORD not in basic_auth_passwords(stub)
    assert stub.received == []


@pytest.mark.parametrize("change", [
    {"server_host": "localhost"},
    {"use_ssl": True},
    {"api_path": "other/send"},
    {"provider_type": "http"},
    {"server_host": "localhost", "notes": "moved"},
])
def test_every_field_that_redirects_the_password_needs_it(client, make_gateway, change):
    gateway = make_gateway(password=PASSWORD)
    response = client.patch(f"/api/sms-gateways/{gateway['id']}", json=change)
    assert response.status_code == 422, response.text
    assert "password" in response.json()["errors"]
    shown = client.get(f"/api/sms-gateways/{gateway['id']}").json()["data"]
    assert {name: shown[name] for name in change} == {name: gateway[name] for name in change}


def test_the_same_values_again_are_no_change(client, make_gateway):
    gateway = make_gateway(password=PASSWORD)
    same = {name: gateway[name] for name in ("server_host", "server_port", "use_ssl", "api_path", "provider_type")}
    response = client.put(f"/api/sms-gateways/{gateway['id']}", json={**same, "notes": "echoed back"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["notes"] == "echoed back"


def test_with_the_password_the_gateway_moves_and_uses_it(client, make_gateway, stub):
    gateway = make_gateway(server_port=9, password=PASSWORD)
    stub.answer(200, {"data": 'Success "moved-1'})
    response = client.patch(f"/api/sms-gateways/{gateway['id']}",
                            json={"server_port": stub.port, "password": "the-new-password"})
    assert response.status_code == 200, response.text
    assert send(client, gateway["id"]).status_code == 201
    assert basic_auth_passwords(stub) == ["the-new-password"]


def test_other_fields_change_without_the_password(client, make_gateway):
    gateway = make_gateway(password=PASSWORD)
    response = client.patch(f"/api/sms-gateways/{gateway['id']}",
                            json={"name": "renamed", "is_active": False, "default_sender_id": "NEW"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["name"] == "renamed"
