"""Both shipped nginx configs, with recording stubs where the API and the guard would be:
what nginx answers by itself, and exactly which headers it sends upstream."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.nginx import NGINX, nginx_before_stubs, raw_exchange
from tests.servers import services_required, wait_until

if NGINX is None and not services_required():
    pytest.skip("nginx is not installed (make install installs it)", allow_module_level=True)

CONFIGS = ["smsgw.conf", "smsgw-guard-proxy.conf"]
CANARY = "canary-token-" + "k" * 24  # a token-shaped secret in every target below: never logged


@pytest.fixture(scope="module", params=CONFIGS)
def front(request, tmp_path_factory):
    with nginx_before_stubs(tmp_path_factory.mktemp("nginx-front"), request.param) as front:
        front["config"] = request.param
        yield front


# --- what reaches the upstreams ------------------------------------------------

# What a client may claim about itself; nginx replaces each, in every location.
SPOOFED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http", "Connection": "close"}


def through_nginx(front, method: str, path: str, **kwargs) -> tuple[httpx.Response, list]:
    """One request through nginx, and every request the stubs saw because of it."""
    before = {name: len(front[name].received) for name in ("api", "guard")}
    response = httpx.request(method, front["nginx"].url + path, verify=False, headers=SPOOFED, **kwargs)
    return response, [seen for name in ("api", "guard") for seen in front[name].received[before[name]:]]


@pytest.mark.parametrize("method, path, kwargs", [
    ("POST", f"/webhooks/jasmin/7/dlr?token={CANARY}", {"data": {"id": "x"}}),
    ("GET", f"/api/sms-gateways/7/dlr?token={CANARY}&id=x", {}),
    ("GET", "/api/sms-gateways", {}),
    ("GET", "/healthz", {}),
], ids=["receipt-post", "receipt-get", "management-api", "health"])
def test_every_upstream_request_carries_nginx_s_forwarded_headers_not_the_client_s(front, method, path, kwargs):
    response, seen = through_nginx(front, method, path, **kwargs)
    assert response.status_code == 200, response.text
    # smsgw.conf asks the guard (auth_request) and then sends the receipt to the API
    hops = 2 if front["config"] == "smsgw.conf" and "/dlr" in path else 1
    assert len(seen) == hops
    for request in seen:
        headers = {name.lower(): value for name, value in request.headers.items()}
        where = f"{request.method} {request.path.partition('?')[0]}"
        assert headers.get("x-forwarded-for") == "127.0.0.1", where  # the client's address, not its claim
        assert headers.get("x-forwarded-proto") == "https", where
        assert headers.get("host") == "127.0.0.1", where
        # HTTP/1.1 without "Connection: close": the upstream keep-alive pool is used
        assert "close" not in headers.get("connection", "").lower(), where


def accepted_connections(stub) -> list:
    """The TCP connections ``stub`` accepts from now on, one entry each."""
    accepted, accept = [], stub.server.get_request

    def counting():
        connection = accept()
        accepted.append(connection[1])
        return connection

    stub.server.get_request = counting
    return accepted


def test_receipts_reuse_upstream_connections(front):
    # smsgw.conf sends receipts to the API; the variant sends them to the guard
    upstream = front["api"] if front["config"] == "smsgw.conf" else front["guard"]
    accepted, before = accepted_connections(upstream), len(upstream.received)
    for _ in range(10):  # each on a new client connection that asks to be closed
        response, _ = through_nginx(front, "POST", f"/webhooks/jasmin/7/dlr?token={CANARY}", data={"id": "x"})
        assert response.status_code == 200
    assert len(upstream.received) - before == 10
    assert len(accepted) <= 2, f"{len(accepted)} upstream connections for 10 receipts"


# --- the request id ----------------------------------------------------------

def access_log_line(front, request_id: str, path: str) -> str:
    """The access-log line of the request to ``path`` with this id (nginx writes it as the
    request ends; a client's id may come again, on another path)."""
    def lines():
        return [line for line in front["nginx"].logs().splitlines()
                if f"request_id={request_id} " in line and f" {path} HTTP/1.1" in line]
    wait_until(lambda: lines(), what=f"the access-log line of {request_id}")
    [line] = lines()
    return line


@pytest.mark.parametrize("claimed, kept", [
    (None, False),
    ("app-7f3a.retry_2:req-0001", True),      # an id an app chose: passed on as it is
    ("A" * 128, True),
    ("A" * 129, False),                        # too long
    ("two words", False),
    ('quote" injected=1', False),              # would forge a field in the access log
    ("", False),
], ids=["none", "well-formed", "128-chars", "129-chars", "space", "quote", "empty"])
@pytest.mark.parametrize("path, kwargs", [
    (f"/webhooks/jasmin/7/dlr?token={CANARY}", {"data": {"id": "x"}}),
    ("/api/sms-gateways", {}),
], ids=["receipt", "management-api"])
def test_every_hop_and_the_access_log_get_one_request_id(front, claimed, kept, path, kwargs):
    """The client's X-Request-ID when well-formed, else nginx's own: the same id at the
    guard (its check, or the receipt it forwards), at the API, in the answer and in the
    access log's line, which also says which upstream answered and how."""
    headers = {} if claimed is None else {"X-Request-ID": claimed}
    before = {name: len(front[name].received) for name in ("api", "guard")}
    response = httpx.post(front["nginx"].url + path, verify=False, headers=headers, **kwargs)
    assert response.status_code == 200, response.text
    [request_id] = response.headers.get_list("x-request-id")
    if kept:
        assert request_id == claimed
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    seen = [request for name in ("api", "guard") for request in front[name].received[before[name]:]]
    assert seen, "nothing reached an upstream"
    for request in seen:
        sent = {name.lower(): value for name, value in request.headers.items()}
        assert sent.get("x-request-id") == request_id, f"{request.method} {request.path.partition('?')[0]}"
    line = access_log_line(front, request_id, path.partition("?")[0])
    assert '" 200 ' in line
    upstream = front["api"] if front["config"] == "smsgw.conf" or "/dlr" not in path else front["guard"]
    assert f"upstream=127.0.0.1:{upstream.port} upstream_status=200" in line
    if front["config"] == "smsgw.conf" and "/dlr" in path:
        assert f"guard=127.0.0.1:{front['guard'].port} " in line or "guard_cache=HIT" in line
    assert CANARY not in front["nginx"].logs()


def test_each_request_without_an_id_gets_its_own(front):
    ids = {httpx.get(front["nginx"].url + "/healthz", verify=False).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_nginx_s_own_error_answers_carry_the_request_id_too(front):
    response = httpx.get(front["nginx"].url + "/nowhere", verify=False, headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404 and response.json() == {"message": "Not found."}
    assert response.headers.get_list("x-request-id") == ["lost-1"]
    assert "upstream=- upstream_status=-" in access_log_line(front, "lost-1", "/nowhere")


# --- what nginx answers by itself ----------------------------------------------

def request_bytes(line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([line, *headers, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body


DLR = f"/webhooks/jasmin/1/dlr?token={CANARY}"
HOST = "Host: 127.0.0.1"

NGINX_OWN_ERRORS = [
    ("garbage request line", b"GARBAGE " + CANARY.encode() + b"\r\n\r\n", 400, True),
    ("lower-case method", request_bytes(f"post {DLR} HTTP/1.1", HOST), 400, True),
    ("control byte in the path", request_bytes(f"GET /webhooks/jasmin/1/d\x01lr?token={CANARY} HTTP/1.1", HOST),
     400, True),
    ("dot segment above the root", request_bytes(f"GET /../webhooks/jasmin/1/dlr?token={CANARY} HTTP/1.1", HOST),
     400, True),
    ("asterisk target", request_bytes("OPTIONS * HTTP/1.1", HOST), 400, True),
    ("HTTP/2.0 in a request line", request_bytes(f"GET {DLR} HTTP/2.0", HOST), 505, True),
    ("unknown HTTP version", request_bytes(f"GET {DLR} HTTP/9.9", HOST), 505, True),
    ("URI over nginx's buffers", request_bytes(f"GET {DLR}&pad={'a' * 20000} HTTP/1.1", HOST), 414, True),
    ("header over nginx's buffers", request_bytes(f"GET {DLR} HTTP/1.1", HOST, "X-Pad: " + "a" * 20000), 431, True),
    ("HTTP/1.1 without Host", request_bytes(f"GET {DLR} HTTP/1.1"), 400, True),
    ("invalid Host", request_bytes(f"GET {DLR} HTTP/1.1", "Host: a/b"), 400, True),
    ("invalid header line", request_bytes(f"GET {DLR} HTTP/1.1", HOST, "Bad Header: x"), 400, True),
    ("TRACE", request_bytes(f"TRACE {DLR} HTTP/1.1", HOST), 405, True),
    ("unknown Transfer-Encoding", request_bytes(f"POST {DLR} HTTP/1.1", HOST, "Transfer-Encoding: gzip"), 501, True),
    ("Content-Length and Transfer-Encoding",
     request_bytes(f"POST {DLR} HTTP/1.1", HOST, "Content-Length: 5", "Transfer-Encoding: chunked",
                   body=b"0\r\n\r\n"), 400, True),
    ("invalid Content-Length", request_bytes(f"POST {DLR} HTTP/1.1", HOST, "Content-Length: x"), 400, True),
    ("invalid chunked body", request_bytes(f"POST {DLR} HTTP/1.1", HOST, "Transfer-Encoding: chunked",
                                           body=b"zz\r\nid=x\r\n0\r\n\r\n"), 400, True),
    ("plain HTTP to the HTTPS port", request_bytes(f"GET {DLR} HTTP/1.1", HOST), 400, False),
]


@pytest.mark.parametrize("request_, status, tls", [case[1:] for case in NGINX_OWN_ERRORS],
                         ids=[case[0] for case in NGINX_OWN_ERRORS])
def test_nginx_s_own_errors_are_the_contract_s_json(front, request_, status, tls):
    api_before = len(front["api"].received)
    answer = raw_exchange(front["nginx"].port, request_, tls=tls)
    assert answer.status == status, answer.raw[:300]
    assert answer.headers.get("content-type") == "application/json", answer.raw[:300]
    assert isinstance(json.loads(answer.body)["message"], str)
    assert b"<html" not in answer.raw.lower()
    assert answer.headers.get("server") == "nginx"  # server_tokens off: no version
    assert b"127.0.0.1" not in answer.body
    assert len(front["api"].received) == api_before  # nginx answered; nothing went upstream
    assert CANARY not in front["nginx"].logs()


def test_only_the_batch_route_takes_a_large_body(front):
    """A batch of 1,000 messages is a few hundred KiB: its route takes up to 8 MiB; every
    other route keeps the 64 KiB limit (413 in the contract's shape, nothing proxied)."""
    big = {"messages": [{"to_number": "+14155550123", "message": "x" * 300}] * 1000}
    response, seen = through_nginx(front, "POST", "/api/sms-gateways/7/messages", json=big)
    assert response.status_code == 200 and len(seen) == 1
    assert len(seen[0].body) > 64 * 1024
    response, seen = through_nginx(front, "POST", "/api/sms-gateways/7/send", json=big)
    assert response.status_code == 413 and seen == []
    assert response.json() == {"message": "Request body too large."}
