"""``smsgw message show`` run as an operator runs it, beside a real API sending to a stub
gateway, on SQLite and on PostgreSQL: it shows what ``GET /api/sms-messages/{id}`` shows,
its events as the events route does, and --watch follows it to its end or to Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import pytest

from tests.servers import ROOT, SMSGW, start_api, wait_until
from tests.test_cli_gateways import smsgw

ADMIN = "cli-messages-admin-key-" + "z" * 24
NUMBER = "+14155550123"


@pytest.fixture
def sent(empty_database, tmp_path, stub):
    """(api, admin client, message) for a message a stub gateway accepted: "submitted", no receipt yet."""
    api = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database, SMSGW_ADMIN_KEY=ADMIN)
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        gateway = admin.post("/api/sms-gateways", json={
            "name": "stub", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "username": "u", "password": "p", "default_sender_id": "ACME"}).json()["data"]
        stub.answer(200, {"data": 'Success "ext-cli-1'})
        reply = admin.post(f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": NUMBER, "message": "hi"})
        assert reply.status_code == 201, reply.text
        yield api, admin, reply.json()["data"]
    finally:
        admin.close()
        api.process.stop()


def deliver(api_url: str, gateway_id: int) -> None:
    done = httpx.post(f"{api_url}/webhooks/jasmin/{gateway_id}/dlr", data={"id": "ext-cli-1",
                                                                          "message_status": "DELIVRD"})
    assert done.status_code == 200, done.text


def test_show_is_what_the_api_shows_with_the_number_in_full(sent):
    api, admin, message = sent
    over_api = admin.get(f"/api/sms-messages/{message['id']}").json()["data"]
    as_json = smsgw(api.env, "message", "show", str(message["id"]), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == over_api

    plain = smsgw(api.env, "message", "show", str(message["id"]))
    assert plain.returncode == 0, plain.stderr
    lines = dict(line.split(":", 1) for line in plain.stdout.splitlines())
    assert lines["to_number"].strip() == NUMBER and lines["state"].strip() == "submitted"

    deliver(api.url, message["sms_gateway_id"])
    wait_until(lambda: admin.get(f"/api/sms-messages/{message['id']}").json()["data"]["state"] == "delivered",
               timeout=30, what="the receipt to be applied")
    events = admin.get(f"/api/sms-messages/{message['id']}/events").json()["data"]
    both = json.loads(smsgw(api.env, "message", "show", str(message["id"]), "--events", "--json").stdout)
    assert both == {"message": admin.get(f"/api/sms-messages/{message['id']}").json()["data"], "events": events}
    table = smsgw(api.env, "message", "show", str(message["id"]), "--events").stdout
    header = table.split("Events:")[1].strip().splitlines()[0]
    assert header.split() == ["ID", "RECORDED", "KIND", "RAW", "STATUS", "STATE", "CHANGED", "REASON", "FROM"]
    assert "delivrd" in table.split("Events:")[1]


def test_watch_follows_a_message_to_its_end(sent):
    api, admin, message = sent
    watch = subprocess.Popen([*SMSGW, "message", "show", str(message["id"]), "--watch", "--events",
                              "--interval", "0.2"], env=api.env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("Watching") for line in lines):
            line = watch.stdout.readline()
            assert line, watch.stderr.read()
            lines.append(line)
        deliver(api.url, message["sms_gateway_id"])
        rest, errors = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, errors
    assert "state submitted -> delivered" in rest
    assert "delivery_status submitted -> delivrd" in rest
    assert rest.strip().endswith(f"Message {message['id']} is delivered.")


def test_watch_json_prints_a_line_a_change_and_ctrl_c_exits_0(sent):
    api, admin, message = sent
    watch = subprocess.Popen([*SMSGW, "message", "show", str(message["id"]), "--watch", "--json",
                              "--interval", "0.2"], env=api.env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(watch.stdout.readline())
        assert first["state"] == "submitted" and first["to_number"] == NUMBER
        watch.send_signal(signal.SIGINT)  # Ctrl-C: the operator has seen enough
        rest, errors = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, errors
    assert "Traceback" not in errors


def test_a_missing_message_exits_1(empty_database):
    env = {**os.environ, "SMSGW_DATABASE_URL": empty_database}
    assert smsgw(env, "migrate").returncode == 0
    for extra in ([], ["--events"], ["--watch"]):
        done = smsgw(env, "message", "show", "424242", *extra)
        assert done.returncode == 1
        assert done.stderr.strip() == "smsgw: no SMS message has id 424242"
