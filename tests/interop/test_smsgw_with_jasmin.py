"""smsgw against a real Jasmin 0.11.0: sending through both of its APIs, and its
receipts coming back through the guard, acknowledged so Jasmin never retries."""

from __future__ import annotations

import itertools
import re

import httpx
import pytest

from tests.servers import free_port, run_smsgw, start_api, start_guard, wait_until

_numbers = itertools.count(100)


def number(last_digit: int) -> str:
    """A new valid number, +1 415 555 nnn<last_digit>, as smsgw accepts them; the
    SMSC stand-in refuses a destination ending in 9."""
    return f"+1415555{next(_numbers):03d}{last_digit}"


def to_destination(to: str):
    """Matches the submit_sm for ``to``, with or without the + (Jasmin passes the
    number on; the SMSC sees digits)."""
    return lambda submit: submit.destination.lstrip("+") == to.lstrip("+")


@pytest.fixture(scope="module")
def smsgw(jasmin, tmp_path_factory):
    """The API and the guard; gateways are told to send receipts to the guard."""
    workdir = tmp_path_factory.mktemp("interop")
    guard_port = free_port()
    api = start_api(workdir, SMSGW_PUBLIC_URL=f"http://127.0.0.1:{guard_port}", SMSGW_GATEWAY_TIMEOUT="10")
    guard = start_guard(workdir, api.env, api.url, port=guard_port)
    key = run_smsgw(api.env, "apikey", "create", "--name", "interop").stdout.strip().splitlines()[-1]
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=15)
    rest_port = int(jasmin.rest_api_url.rsplit(":", 1)[1])
    http_port = int(jasmin.http_api_url.rsplit(":", 1)[1])
    common = {"server_host": "127.0.0.1", "username": jasmin.username, "password": jasmin.password,
              "default_sender_id": "smsgw"}
    gateways = {
        "jasmin-http": client.post("/api/sms-gateways", json={
            "name": "Jasmin HTTP API", "provider_type": "jasmin-http", "server_port": http_port, **common,
        }).json()["data"],
        "jasmin": client.post("/api/sms-gateways", json={
            "name": "Jasmin REST API", "provider_type": "jasmin", "server_port": rest_port,
            "api_path": "secure/send", **common,
        }).json()["data"],
    }
    yield {"api": api, "guard": guard, "client": client, "gateways": gateways}
    client.close()
    guard.process.stop()
    api.process.stop()


def send(smsgw, provider: str, to: str, text: str = "hello from smsgw") -> dict:
    gateway = smsgw["gateways"][provider]
    response = smsgw["client"].post(f"/api/sms-gateways/{gateway['id']}/send",
                                    json={"to_number": to, "message": text})
    assert response.status_code == 201, response.text
    message = response.json()["data"]
    # Jasmin answers /send while its SMPP submit runs: its level-1 receipt can
    # come before smsgw has stored the id, is kept, and is applied the moment the
    # id is recorded, so the send's own answer may already say "accepted".
    assert (message["state"], message["delivery_status"]) in (("submitted", "submitted"), ("accepted", "esme_rok"))
    assert re.fullmatch(r"[0-9a-f-]{36}", message["external_message_id"])
    return message


def settled(smsgw, message: dict, status: str) -> dict:
    def now():
        return smsgw["client"].get(f"/api/sms-messages/{message['id']}").json()["data"]
    wait_until(lambda: now()["delivery_status"] == status, timeout=20,
               what=f"message {message['id']} to become {status}")
    return now()


@pytest.mark.parametrize("provider", ["jasmin-http", "jasmin"])
def test_a_message_sent_through_jasmin_is_delivered(jasmin, smsgw, provider):
    to = number(0)
    message = send(smsgw, provider, to)
    submit = jasmin.smsc.wait_for_submit(to_destination(to), timeout=15)
    assert submit.data_coding == 0
    final = settled(smsgw, message, "delivrd")
    response = final["remote_response"]
    assert response["id"] == message["external_message_id"]
    assert response["level"] == "2" and response["message_status"] == "DELIVRD"
    for field in ("connector", "id_smsc", "sub", "dlvrd", "subdate", "donedate", "err", "text"):
        assert field in response, field
    assert final["delivered_at"] >= final["submitted_at"]


@pytest.mark.parametrize("provider", ["jasmin-http", "jasmin"])
def test_the_smscs_rejection_ends_undeliv(jasmin, smsgw, provider):
    to = number(9)  # the stand-in refuses numbers ending in 9
    message = send(smsgw, provider, to)
    final = settled(smsgw, message, "undeliv")
    assert final["remote_response"]["message_status"] == "UNDELIV"


def test_ucs2_text_reaches_the_smsc_intact(jasmin, smsgw):
    to = number(0)
    text = "Привет, мир! 😀"
    message = send(smsgw, "jasmin-http", to, text)
    assert (message["encoding"], message["segments"]) == ("ucs2", 1)
    submit = jasmin.smsc.wait_for_submit(to_destination(to), timeout=15)
    assert submit.data_coding == 8
    assert submit.short_message.decode("utf-16-be") == text
    settled(smsgw, message, "delivrd")


def test_receipts_came_through_the_guard_and_were_acknowledged_once(jasmin, smsgw):
    """Every receipt Jasmin threw was answered ACK/Jasmin: its thrower logs one
    success per receipt and never a failure or a retry."""
    to = number(0)
    message = send(smsgw, "jasmin", to)
    settled(smsgw, message, "delivrd")
    msgid = message["external_message_id"]
    log = jasmin.log_dir / "dlr-thrower.log"
    wait_until(lambda: log.read_text().count(f"Throwed DLR [msgid:{msgid}]") >= 2, timeout=10,
               what="Jasmin to log both receipts as thrown")
    text = log.read_text()
    assert text.count(f"Throwed DLR [msgid:{msgid}]") == 2  # level 1 and level 2, once each
    assert f"Throwing HTTP/DLR [msgid:{msgid}]" not in text  # no failed attempt, so no retry
    # they went to the guard, which admitted them on the canonical path
    gateway_id = smsgw["gateways"]["jasmin"]["id"]
    assert f'"POST /webhooks/jasmin/{gateway_id}/dlr" 200' in smsgw["guard"].log
    assert smsgw["gateways"]["jasmin"]["callback_token"] not in smsgw["guard"].log + smsgw["api"].log
