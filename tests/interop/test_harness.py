"""The harness against the real Jasmin, without smsgw: send through both APIs, get both receipt levels.

A tiny HTTP server on a free loopback port records what Jasmin's DLR thrower
posts and answers ``ACK/Jasmin``, as a receiver must.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from .jasmin import jasmin_smsc_id

SEND_REPLY = re.compile(r'^Success "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"$')
REST_REPLY = re.compile(r'^Success "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$')
USER_AGENT = re.compile(r"^Jasmin gateway/1\.0 ")
DEADLINE = 15.0


@dataclass(frozen=True)
class Receipt:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    fields: dict[str, str]


class DlrRecorder:
    """Records every request; answers 200 ``ACK/Jasmin``."""

    def __init__(self):
        self.received: list[Receipt] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                fields = dict(query)
                if self.command == "POST":
                    fields = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
                receipt = Receipt(self.command, url.path, query,
                                  {k.lower(): v for k, v in self.headers.items()}, body, fields)
                with recorder.lock:
                    recorder.received.append(receipt)
                reply = b"ACK/Jasmin"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = handle_one

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "DlrRecorder":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def for_id(self, message_id: str) -> list[Receipt]:
        with self.lock:
            return [r for r in self.received if r.fields.get("id") == message_id]

    def wait_levels(self, message_id: str, levels=("1", "2"), timeout: float = DEADLINE) -> dict[str, Receipt]:
        """Wait until a receipt of each level arrived for ``message_id``; return them by level."""
        deadline = time.monotonic() + timeout
        while True:
            got = {r.fields.get("level"): r for r in self.for_id(message_id)}
            if all(level in got for level in levels):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"receipts for {message_id}: wanted levels {levels}, got {sorted(got)}")
            time.sleep(0.01)


@pytest.fixture
def recorder():
    server = DlrRecorder().start()
    yield server
    server.stop()


def check_receipts(jasmin, receipts: dict[str, Receipt], message_id: str, submit, stat: str, token: str) -> None:
    level1, level2 = receipts["1"], receipts["2"]
    for receipt in (level1, level2):
        assert receipt.method == "POST"
        assert receipt.path == "/dlr"
        assert receipt.query == {"token": token}, "the dlr-url's query string is kept"
        assert USER_AGENT.match(receipt.headers.get("user-agent", "")), receipt.headers
        assert receipt.headers.get("content-type") == "application/x-www-form-urlencoded"
        assert receipt.fields["id"] == message_id

    assert level1.fields == {"id": message_id, "level": "1", "message_status": "ESME_ROK",
                             "connector": jasmin.connector_id}

    fields = level2.fields
    assert fields["level"] == "2"
    assert fields["message_status"] == stat
    # Jasmin keys receipts on the SMSC id upper-cased with leading zeros stripped; `connector`
    # carries the id as the SMSC's receipt spelt it.
    assert fields["id_smsc"] == jasmin_smsc_id(submit.message_id)
    assert fields["connector"] == submit.message_id
    assert fields["sub"] == "001"
    assert fields["dlvrd"] == ("001" if stat == "DELIVRD" else "000")
    assert fields["err"] == ("000" if stat == "DELIVRD" else "001")
    assert re.fullmatch(r"\d{10}", fields["subdate"]) and re.fullmatch(r"\d{10}", fields["donedate"])
    assert set(fields) == {"id", "level", "message_status", "connector", "id_smsc", "sub", "dlvrd",
                           "subdate", "donedate", "err", "text"}


def test_http_api_send_gets_both_receipt_levels(jasmin, recorder):
    token = "tok-http"
    reply = httpx.post(f"{jasmin.http_api_url}/send", timeout=10, data={
        "username": jasmin.username, "password": jasmin.password,
        "to": "15551234567", "from": "smsgw", "content": "hello over http",
        "dlr-url": f"{recorder.url}/dlr?token={token}", "dlr-level": "3", "dlr-method": "POST",
    })
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/plain"
    match = SEND_REPLY.match(reply.text)
    assert match, reply.text
    message_id = match.group(1)

    submit = jasmin.smsc.wait_for_submit(lambda s: s.short_message == b"hello over http", DEADLINE)
    assert (submit.source, submit.destination, submit.data_coding) == ("smsgw", "15551234567", 0)
    assert submit.registered_delivery & 0x01, "Jasmin asks the SMSC for a receipt"

    receipts = recorder.wait_levels(message_id)
    check_receipts(jasmin, receipts, message_id, submit, "DELIVRD", token)
    assert len(recorder.for_id(message_id)) == 2, "one receipt per level, both acknowledged"
    assert receipts["2"].fields["text"] == "hello over http"


def test_rest_api_send_gets_undeliv_for_a_number_ending_in_9(jasmin, recorder):
    token = "tok-rest"
    reply = httpx.post(f"{jasmin.rest_api_url}/secure/send", timeout=10,
                       headers={"Authorization": jasmin.basic_auth}, json={
                           "to": "15551234569", "from": "smsgw", "content": "hello over rest",
                           "dlr-url": f"{recorder.url}/dlr?token={token}", "dlr-level": 3,
                           "dlr-method": "POST",
                       })
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"data"}
    match = REST_REPLY.match(body["data"])  # Jasmin strips only the trailing quote
    assert match, body
    message_id = match.group(1)

    submit = jasmin.smsc.wait_for_submit(lambda s: s.short_message == b"hello over rest", DEADLINE)
    assert (submit.source, submit.destination) == ("smsgw", "15551234569")

    receipts = recorder.wait_levels(message_id)
    check_receipts(jasmin, receipts, message_id, submit, "UNDELIV", token)
    assert len(recorder.for_id(message_id)) == 2, "one receipt per level, both acknowledged"


def test_rest_api_refuses_without_basic_auth(jasmin):
    reply = httpx.post(f"{jasmin.rest_api_url}/secure/send", timeout=10,
                       json={"to": "15551234567", "content": "x"})
    assert reply.status_code == 401


def test_http_api_refuses_wrong_password(jasmin):
    reply = httpx.post(f"{jasmin.http_api_url}/send", timeout=10, data={
        "username": jasmin.username, "password": "wrong", "to": "15551234567", "content": "x"})
    assert reply.status_code == 403
    assert reply.text == f'Error "Authentication failure for username:{jasmin.username}"'
