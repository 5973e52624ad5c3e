"""``smsgw guard`` as a real process, between real clients and a recording upstream.

The upstream is a stub that records every request reaching it, so "it never
reached the API" is checked directly, not inferred from an answer.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.servers import StubGateway, raw_request, run_smsgw, start_api, start_guard
from tests.test_guard_decision import NOT_DLR


@pytest.fixture(scope="module")
def world(database, tmp_path_factory):
    """An API (for gateways and tokens), an upstream recorder, and a guard in front of
    the recorder, reading tokens from each database in turn."""
    workdir = tmp_path_factory.mktemp("guard")
    api = start_api(workdir, **database)
    key = run_smsgw(api.env, "apikey", "create", "--name", "guard").stdout.strip().splitlines()[-1]
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"})
    gateway = admin.post("/api/sms-gateways", json={"name": "g", "server_host": "127.0.0.1"}).json()["data"]
    upstream = StubGateway().start()
    upstream.answer(200, {"message": "DLR received"})
    # TTL 0: every request reads the database, so rotations are seen at once.
    guard = start_guard(workdir, api.env, f"http://127.0.0.1:{upstream.port}", SMSGW_GUARD_CACHE_TTL="0")
    yield {"api": api, "admin": admin, "gateway": gateway, "upstream": upstream, "guard": guard,
           "workdir": workdir}
    guard.process.stop()
    upstream.stop()
    admin.close()
    api.process.stop()


@pytest.fixture
def upstream(world):
    world["upstream"].received.clear()
    return world["upstream"]


def test_a_valid_token_in_the_query_is_forwarded_without_it(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, body = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={token}")
    assert status == 200 and body == b'{"message": "DLR received"}'
    [request] = upstream.received
    assert request.path == f"/webhooks/jasmin/{gid}/dlr"
    assert request.body == b"id=x&message_status=DELIVRD"
    assert token not in str(request.headers) and token not in request.path


def test_a_valid_token_in_the_header_is_forwarded_without_it(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, _ = raw_request(world["guard"].port, "POST", f"/api/sms-gateways/{gid}/dlr",
                            headers={"X-Callback-Token": token})
    assert status == 200
    [request] = upstream.received
    assert request.path == f"/api/sms-gateways/{gid}/dlr"
    assert "X-Callback-Token" not in request.headers and "x-callback-token" not in request.headers


def test_jasmin_get_receipts_keep_their_fields(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, _ = raw_request(world["guard"].port, "GET",
                            f"/webhooks/jasmin/{gid}/dlr?id=abc&token={token}&message_status=DELIVRD", body=b"")
    assert status == 200
    assert upstream.received[0].path == f"/webhooks/jasmin/{gid}/dlr?id=abc&message_status=DELIVRD"


@pytest.mark.parametrize("target, headers, status", [
    ("/webhooks/jasmin/{gid}/dlr", {}, 401),
    ("/webhooks/jasmin/{gid}/dlr?token=", {}, 401),
    ("/webhooks/jasmin/{gid}/dlr?token=wrong-token-value", {}, 403),
    ("/webhooks/jasmin/987654/dlr?token={token}", {}, 403),
    ("/webhooks/jasmin/{gid}/dlr?token={token}&token={token}", {}, 400),
    ("/webhooks/jasmin/{gid}/dlr?token={token}", {"X-Callback-Token": "different"}, 400),
])
def test_refused_tokens_never_reach_upstream(world, upstream, target, headers, status):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    got, body = raw_request(world["guard"].port, "POST", target.format(gid=gid, token=token), headers=headers)
    assert got == status
    assert body.startswith(b'{"message": ')
    assert upstream.received == []


def test_wrong_token_and_unknown_gateway_answer_alike(world):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    wrong = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gid}/dlr?token=nope")
    unknown = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/987654/dlr?token={token}")
    assert wrong == unknown


@pytest.mark.parametrize("method, raw", NOT_DLR)
def test_the_path_corpus_never_reaches_upstream_even_with_the_token(world, upstream, method, raw):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    target = raw.replace("/1/", f"/{gid}/").replace("/1;", f"/{gid};").replace("/1%", f"/{gid}%")
    if target.startswith("/"):  # every path-shaped attempt also carries the right token
        target += ("&" if "?" in target else "?") + f"token={token}"
    status, _ = raw_request(world["guard"].port, method, target, headers={"X-Callback-Token": token})
    assert status in (400, 404, 405, 501), (target, status)
    assert upstream.received == []


def test_a_different_host_header_changes_nothing(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, _ = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={token}",
                            host="evil.example:6666")
    assert status == 200
    assert upstream.received[0].headers["Host"] == f"127.0.0.1:{upstream.port}"


def test_everything_else_is_404_from_the_guard(world, upstream):
    for path in ("/", "/healthz", "/api/sms-gateways", "/api/sms-gateways/1", "/_guard/other"):
        assert httpx.get(world["guard"].url + path).status_code == 404
    assert upstream.received == []


def test_health_is_served_by_the_guard_itself(world, upstream):
    response = httpx.get(world["guard"].url + "/_guard/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert upstream.received == []


def test_a_body_over_the_limit_is_413(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, _ = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={token}",
                            body=b"x" * (64 * 1024 + 1))
    assert status == 413
    assert upstream.received == []


def test_rotation_keeps_the_old_token_for_its_grace_then_revocation_ends_it(world, upstream):
    admin, gid = world["admin"], world["gateway"]["id"]
    old = admin.get(f"/api/sms-gateways/{gid}").json()["data"]["callback_token"]
    new = admin.post(f"/api/sms-gateways/{gid}/callback-token/rotate").json()["data"]["callback_token"]
    port = world["guard"].port
    assert raw_request(port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={new}")[0] == 200
    assert raw_request(port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={old}")[0] == 200  # in grace
    newest = admin.post(f"/api/sms-gateways/{gid}/callback-token/rotate",
                        json={"grace_seconds": 0}).json()["data"]["callback_token"]
    assert raw_request(port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={old}")[0] == 403
    assert raw_request(port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={new}")[0] == 403
    assert raw_request(port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={newest}")[0] == 200
    world["gateway"]["callback_token"] = newest


def test_the_guard_fails_closed_when_its_database_breaks(world, tmp_path):
    """A guard whose token store raises (a database without the schema) answers 503
    to a well-formed receipt with a plausible token, and forwards nothing."""
    broken = {**world["api"].env, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    upstream = StubGateway().start()
    guard = start_guard(tmp_path, broken, f"http://127.0.0.1:{upstream.port}")
    try:
        token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
        status, body = raw_request(guard.port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={token}")
        assert status == 503 and body == b'{"message": "Service unavailable."}'
        assert httpx.get(guard.url + "/_guard/health").status_code == 503
        assert upstream.received == []
    finally:
        guard.process.stop()
        upstream.stop()
    assert "could not decide (OperationalError)" in guard.log


def test_end_to_end_through_the_guard_into_the_api(world, tmp_path):
    """With the default 5 s cache: a gateway created a moment ago gets its first
    receipt through at once (Jasmin's level-1 comes ~10 ms after the send)."""
    api, admin = world["api"], world["admin"]
    stub = StubGateway().start()
    stub.answer(200, {"data": 'Success "e2e-1'})
    guard = start_guard(tmp_path, api.env, api.url, SMSGW_GUARD_CACHE_TTL="5")
    assert httpx.post(f"{guard.url}/webhooks/jasmin/987650/dlr?token=x").status_code == 403  # loads the cache
    try:
        gateway = admin.post("/api/sms-gateways", json={
            "name": "e2e", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "default_sender_id": "X"}).json()["data"]
        message = admin.post(f"/api/sms-gateways/{gateway['id']}/send",
                             json={"to_number": "+14155550101", "message": "m"}).json()["data"]
        dlr = f"{guard.url}/webhooks/jasmin/{gateway['id']}/dlr"
        assert httpx.post(dlr, data={"id": "e2e-1", "message_status": "UNDELIV"}).status_code == 401
        assert admin.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "submitted"
        response = httpx.post(dlr, params={"token": gateway["callback_token"]},
                              data={"id": "e2e-1", "message_status": "DELIVRD"})
        assert response.json() == {"message": "DLR received"}
        assert admin.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "delivrd"
    finally:
        guard.process.stop()
        stub.stop()
    for secret in (gateway["callback_token"],):
        assert secret not in guard.log and secret not in api.log


def send_raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return received


def test_a_chunked_body_with_trailers_reaches_nothing_and_the_guard_serves_on(world, upstream):
    # mitmproxy 12.3 cannot parse request trailers: it abandons that connection
    # (no answer) but forwards nothing, and every other connection is served.
    # Behind nginx this never reaches the guard: nginx sends it a Content-Length.
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    attack = (f"POST /webhooks/jasmin/{gid}/dlr?token={token} HTTP/1.1\r\nHost: x\r\n"
              "Transfer-Encoding: chunked\r\n\r\n0\r\nX-Foo: 1\r\n\r\n").encode()
    assert send_raw(world["guard"].port, attack, timeout=1) == b""
    assert upstream.received == []
    assert httpx.get(world["guard"].url + "/_guard/health").status_code == 200
    status, _ = raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gid}/dlr?token={token}")
    assert status == 200 and len(upstream.received) == 1


def test_raw_bytes_outside_ascii_in_the_target_are_404_not_500(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    answer = send_raw(world["guard"].port, f"POST /webhooks/jasmin/{gid}/dlr?token={token}&x=".encode()
                      + b"\xff HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404")
    assert upstream.received == []


def test_admitted_receipts_cannot_switch_protocols(world, upstream):
    token, gid = world["gateway"]["callback_token"], world["gateway"]["id"]
    status, _ = raw_request(world["guard"].port, "GET", f"/webhooks/jasmin/{gid}/dlr?token={token}", body=b"",
                            headers={"Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version": "13"})
    assert status == 200
    assert "Upgrade" not in upstream.received[0].headers
