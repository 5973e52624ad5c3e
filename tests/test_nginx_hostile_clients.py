"""Clients that lie about themselves or send bytes no token has, through both shipped
nginx configs in front of the real guard and API."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from tests.nginx import NGINX, nginx_stack, raw_exchange, send_message
from tests.servers import services_required

if NGINX is None and not services_required():
    pytest.skip("nginx is not installed (make install installs it)", allow_module_level=True)


@pytest.fixture(scope="module", params=["smsgw.conf", "smsgw-guard-proxy.conf"])
def stack(request, database, tmp_path_factory):
    with nginx_stack(tmp_path_factory.mktemp("nginx-hostile"), request.param, database) as stack:
        yield stack


_ids = itertools.count()


@pytest.fixture
def message(stack) -> dict:
    return send_message(stack, f"hostile-{next(_ids)}")


def receipts_of(stack, message) -> list[dict]:
    response = stack["client"].get(f"/api/sms-messages/{message['id']}/events")
    assert response.status_code == 200, response.text
    return [event for event in response.json()["data"] if event["kind"] == "receipt"]


def test_a_client_s_x_forwarded_for_never_becomes_the_source_address(stack, message):
    gid, token = stack["gateway"]["id"], stack["gateway"]["callback_token"]
    response = httpx.post(f"{stack['nginx'].url}/webhooks/jasmin/{gid}/dlr", verify=False,
                          params={"token": token},
                          data={"id": message["external_message_id"], "message_status": "DELIVRD"},
                          headers={"X-Forwarded-For": "203.0.113.9", "Connection": "close"})
    assert response.status_code == 200, response.text
    assert [event["source_address"] for event in receipts_of(stack, message)] == ["127.0.0.1"]


def test_a_client_s_x_forwarded_for_never_reaches_the_audit_trail(stack):
    gid = stack["gateway"]["id"]
    response = stack["client"].patch(f"/api/sms-gateways/{gid}", json={"notes": f"spoofed {next(_ids)}"},
                                     headers={"X-Forwarded-For": "203.0.113.9", "Connection": "close"})
    assert response.status_code == 200, response.text
    latest = stack["client"].get("/api/audit-events", params={"action": "gateway.changed"}).json()["data"][0]
    assert (latest["target_id"], latest["source_address"]) == (gid, "127.0.0.1")


def receipt_request(gid: int, external_id: str, query: str = "", *headers: bytes) -> bytes:
    body = f"id={external_id}&message_status=DELIVRD".encode()
    head = [f"POST /webhooks/jasmin/{gid}/dlr{query} HTTP/1.1".encode(), b"Host: 127.0.0.1",
            b"Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}".encode(),
            b"Connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.mark.parametrize("query, header", [
    ("?token=%FF", None),
    ("?token=%C3%A9", None),  # UTF-8 é
    ("?token=abcdefghijklmnopqrstuvwxyz%FF", None),
    ("", b"X-Callback-Token: \xff"),
    ("", b"X-Callback-Token: abcdefghijklmnopqrstuvwxyz\xff"),
], ids=["query-%FF", "query-utf8-e-acute", "query-ascii-then-%FF", "header-raw-FF", "header-ascii-then-raw-FF"])
def test_a_non_ascii_token_is_a_wrong_token(stack, message, query, header):
    api_lines_before = stack["api"].log.count("/dlr")
    request = receipt_request(stack["gateway"]["id"], message["external_message_id"], query,
                              *([header] if header else []))
    answer = raw_exchange(stack["nginx"].port, request)
    assert answer.status == 403, answer.raw[:300]
    assert answer.headers.get("content-type") == "application/json"
    assert json.loads(answer.body) == {"message": "Forbidden."}
    assert receipts_of(stack, message) == []
    assert stack["api"].log.count("/dlr") == api_lines_before  # nothing reached the API
    for needle in ("Traceback", "UnicodeEncodeError", "UnicodeDecodeError"):
        assert needle not in stack["guard"].log, f"{needle} in the guard's log"
