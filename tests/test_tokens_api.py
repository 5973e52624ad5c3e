"""Callback tokens over the API, on SQLite and PostgreSQL: rotation's grace for each previous
token, what the API says of them (never their values), and ids never reused after a delete."""

from __future__ import annotations

from tests.servers import wait_until


def rotate(client, gateway_id: int, **body):
    return client.post(f"/api/sms-gateways/{gateway_id}/callback-token/rotate", json=body)


def test_each_rotation_keeps_every_previous_token_until_its_own_grace_ends(client, make_gateway):
    """Finding 5: a second rotation silently ended the first one's grace."""
    gateway = make_gateway()
    first = rotate(client, gateway["id"], grace_seconds=3600).json()["data"]
    second = rotate(client, gateway["id"], grace_seconds=60).json()["data"]
    expiries = second["callback_token_previous_expiries"]
    assert len(expiries) == 2 and expiries == sorted(expiries)
    assert expiries[1] == first["callback_token_previous_expires_at"]  # the first token's grace, untouched
    assert second["callback_token_previous_expires_at"] == expiries[1]  # the latest expiry, as before
    shown = client.get(f"/api/sms-gateways/{gateway['id']}")
    assert shown.json()["data"]["callback_token_previous_expiries"] == expiries
    listed = client.get("/api/sms-gateways").json()["data"]
    assert [g["callback_token_previous_expiries"] for g in listed if g["id"] == gateway["id"]] == [expiries]
    for text in (shown.text, rotate(client, gateway["id"], grace_seconds=5).text):
        # the previous tokens themselves are never shown
        assert gateway["callback_token"] not in text and first["callback_token"] not in text


def test_a_rotation_with_no_grace_revokes_every_previous_token(client, make_gateway):
    gateway = make_gateway()
    rotate(client, gateway["id"], grace_seconds=3600)
    rotate(client, gateway["id"], grace_seconds=3600)
    revoked = rotate(client, gateway["id"], grace_seconds=0).json()["data"]
    assert revoked["callback_token_previous_expiries"] == []
    assert revoked["callback_token_previous_expires_at"] is None
    fresh = make_gateway()
    assert fresh["callback_token_previous_expiries"] == [] and fresh["callback_token_previous_expires_at"] is None


def test_a_previous_token_whose_grace_ended_is_no_longer_listed(client, make_gateway):
    gateway = make_gateway()
    rotate(client, gateway["id"], grace_seconds=1)
    kept = rotate(client, gateway["id"], grace_seconds=3600).json()["data"]["callback_token_previous_expiries"]
    assert len(kept) == 2
    url = f"/api/sms-gateways/{gateway['id']}"
    wait_until(lambda: len(client.get(url).json()["data"]["callback_token_previous_expiries"]) == 1,
               timeout=30, what="the 1 s grace to end")
    assert client.get(url).json()["data"]["callback_token_previous_expiries"] == kept[1:]


def test_too_many_tokens_in_grace_is_a_409_that_says_how_to_get_out(client, make_gateway):
    from api.callback_tokens import MAX_PREVIOUS_TOKENS

    gateway = make_gateway()
    for _ in range(MAX_PREVIOUS_TOKENS):
        assert rotate(client, gateway["id"], grace_seconds=3600).status_code == 200
    refused = rotate(client, gateway["id"], grace_seconds=3600)
    assert refused.status_code == 409
    assert "grace_seconds" in refused.json()["errors"]
    before = client.get(f"/api/sms-gateways/{gateway['id']}").json()["data"]["callback_token"]
    assert refused.json().get("data") is None and before not in refused.text
    assert rotate(client, gateway["id"], grace_seconds=0).status_code == 200  # revoking always works


def test_a_deleted_gateway_s_id_is_never_given_to_a_new_one(client, make_gateway):
    """Finding 7: on SQLite the next gateway got the deleted one's id."""
    gateway = make_gateway()
    assert client.delete(f"/api/sms-gateways/{gateway['id']}").status_code == 200
    assert make_gateway()["id"] > gateway["id"]


def test_a_receipt_parked_for_a_deleted_gateway_is_never_applied_to_another(client, anonymous, make_gateway,
                                                                            stub):
    """Finding 7: receipts parked for the deleted gateway were applied to the messages of
    the new gateway that got its id."""
    old = make_gateway(server_port=stub.port)
    external = f"parked-for-{old['id']}"
    parked = anonymous.post(f"/webhooks/jasmin/{old['id']}/dlr", data={"id": external, "message_status": "DELIVRD"})
    assert parked.json() == {"message": "DLR received"}
    assert client.delete(f"/api/sms-gateways/{old['id']}").status_code == 200
    new = make_gateway(server_port=stub.port)
    stub.answer(200, {"data": f'Success "{external}'})
    sent = client.post(f"/api/sms-gateways/{new['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert sent.status_code == 201, sent.text
    message = client.get(f"/api/sms-messages/{sent.json()['data']['id']}").json()["data"]
    assert message["state"] != "delivered" and message["delivery_status"] != "delivrd"
    assert client.get(f"/api/sms-gateways/{new['id']}/unmatched-dlrs").json()["data"] == []
