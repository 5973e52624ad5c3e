"""The guard addon inside mitmproxy's own test harness: it fails closed."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons, tflow

from guard import decision
from guard.addon import Guard
from guard.store import Credentials

TOKEN = "a-valid-callback-token-0123456789"


class Store:
    def __init__(self, error: Exception | None = None):
        self.error = error
        self.asked = 0

    def mark(self):
        return 0

    async def credentials(self, gateway_id):
        self.asked += 1
        if self.error:
            raise self.error
        return Credentials(TOKEN) if gateway_id == 1 else None

    async def recheck(self, gateway_id, since):  # what the database says: what we said
        return await self.credentials(gateway_id)

    async def ping(self):
        if self.error:
            raise self.error


def run(guard: Guard, path: str, method: str = "POST", headers: dict | None = None):
    async def go():
        with taddons.context(guard):
            flow = tflow.tflow()
            flow.request.method = method
            flow.request.authority = ""
            flow.request.path = path
            for name, value in (headers or {}).items():
                flow.request.headers[name] = value
            await guard.requestheaders(flow)
            guard.request(flow)
            return flow
    return asyncio.run(go())


def test_a_raising_token_store_means_503_and_nothing_forwarded():
    store = Store(error=RuntimeError("database is locked"))
    flow = run(Guard(store), f"/webhooks/jasmin/1/dlr?token={TOKEN}")
    assert store.asked == 1
    assert flow.response is not None and flow.response.status_code == 503
    assert b"locked" not in flow.response.content  # the cause stays in the guard


def test_an_admitted_flow_goes_on_with_the_canonical_path_and_no_token():
    flow = run(Guard(Store()), f"/webhooks/jasmin/1/dlr?token={TOKEN}&id=x",
               headers={"X-Callback-Token": TOKEN})
    assert flow.response is None  # mitmproxy forwards it
    assert flow.request.path == "/webhooks/jasmin/1/dlr?id=x"
    assert "X-Callback-Token" not in flow.request.headers


def test_a_flow_the_headers_hook_never_saw_is_refused():
    # e.g. an exception inside mitmproxy before our hook: request() still refuses it.
    guard = Guard(Store())

    async def go():
        with taddons.context(guard):
            flow = tflow.tflow()
            guard.request(flow)
            return flow

    flow = asyncio.run(go())
    assert flow.response.status_code == 503


def test_refusals_answer_without_forwarding():
    guard = Guard(Store())
    for path, headers, status in [
        ("/webhooks/jasmin/1/dlr", {}, 401),
        ("/webhooks/jasmin/1/dlr?token=wrong", {}, 403),
        (f"/webhooks/jasmin/2/dlr?token={TOKEN}", {}, 403),
        (f"/webhooks/jasmin/1/dlr?token={TOKEN}", {"X-Callback-Token": "other"}, 400),
        (f"/webhooks/jasmin/1/dlr/?token={TOKEN}", {}, 404),
    ]:
        flow = run(guard, path, headers=headers)
        assert flow.response.status_code == status, path


def test_health_follows_the_store():
    assert run(Guard(Store()), "/_guard/health", method="GET").response.status_code == 200
    flow = run(Guard(Store(error=OSError("down"))), "/_guard/health", method="GET")
    assert flow.response.status_code == 503 and b"down" not in flow.response.content


def test_the_nginx_check_endpoint_decides_from_the_original_request():
    guard = Guard(Store())

    def check(uri, method="POST", token=None):
        headers = {"X-Original-URI": uri, "X-Original-Method": method}
        if token:
            headers["X-Callback-Token"] = token
        flow = run(guard, "/_guard/check", method="GET", headers=headers)
        return flow.response.status_code

    assert check(f"/webhooks/jasmin/1/dlr?token={TOKEN}") == 200
    assert check("/webhooks/jasmin/1/dlr", token=TOKEN) == 200
    assert check("/webhooks/jasmin/1/dlr") == 401
    assert check("/webhooks/jasmin/1/dlr?token=nope") == 403
    assert check(f"/webhooks/jasmin/1/dlr?token={TOKEN}", token="other") == 403  # conflict
    assert check(f"/webhooks/jasmin/1/dlr?token={TOKEN}", method="DELETE") == 403  # nginx knows no 404 here


class Unchecked(Store):
    """A store whose ration of database reads is spent: it could not look."""

    async def recheck(self, gateway_id, since):
        return decision.UNCHECKED


def test_a_token_the_guard_could_not_check_is_a_503_with_retry_after_never_a_403():
    flow = run(Guard(Unchecked()), "/webhooks/jasmin/1/dlr?token=" + "b" * 30)
    assert flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "1"
    assert flow.response.json() == {"message": decision.RETRY.message}
    check = run(Guard(Unchecked()), "/_guard/check", method="GET",
                headers={"X-Original-Method": "POST", "X-Original-URI": "/webhooks/jasmin/1/dlr?token=" + "b" * 30})
    assert (check.response.status_code, check.response.headers.get("Retry-After")) == (503, "1")


def test_tokens_the_token_alone_refuses_never_reach_the_store():
    """Missing, conflicting, malformed: the rule answers before any look-up."""
    store = Store()
    guard = Guard(store)
    for path, headers, status in [
        ("/webhooks/jasmin/1/dlr", {}, 401),
        (f"/webhooks/jasmin/1/dlr?token={TOKEN}", {"X-Callback-Token": "b" * 30}, 400),
        ("/webhooks/jasmin/1/dlr?token=short", {}, 403),
        ("/webhooks/jasmin/1/dlr?token=" + "a" * 29 + "%0A", {}, 403),
    ]:
        assert run(guard, path, headers=headers).response.status_code == status, path
    assert store.asked == 0
    assert run(guard, f"/webhooks/jasmin/1/dlr?token={TOKEN}").response is None and store.asked == 1


def test_credentials_never_show_their_tokens():
    previous = "an-earlier-callback-token-987654321"
    credentials = Credentials(TOKEN, ((previous, "2026-11-28T00:00:00Z"),))
    for shown in (repr(credentials), str(credentials), repr([credentials]), f"{credentials!r}"):
        assert TOKEN not in shown and previous not in shown
    assert credentials.current == TOKEN  # still there for the comparison


def test_one_rule_for_the_client_address_two_trust_lists():
    """api.peer.client_address_from: the API trusts loopback (the guard, nginx on its
    host); the guard trusts SMSGW_GUARD_TRUSTED_PROXIES. Same rule, different lists."""
    from api.peer import LOOPBACK, client_address_from

    assert client_address_from("127.0.0.1", ["203.0.113.9"], LOOPBACK) == "203.0.113.9"
    assert client_address_from("::1", [" 2001:DB8::9 "], LOOPBACK) == "2001:db8::9"
    assert client_address_from("198.51.100.4", ["203.0.113.9"], LOOPBACK) == "198.51.100.4"  # not trusted
    assert client_address_from("127.0.0.1", [], LOOPBACK) == "127.0.0.1"
    for claims in (["203.0.113.9, 10.0.0.1"], ["203.0.113.9", "10.0.0.1"], ["not-an-address"]):
        assert client_address_from("127.0.0.1", claims, LOOPBACK) == "127.0.0.1", claims
    assert client_address_from("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"  # the guard, trusting no one
    assert client_address_from("10.0.0.5", ["203.0.113.9"], ("10.0.0.5",)) == "203.0.113.9"
    assert client_address_from(None, ["203.0.113.9"], LOOPBACK) is None


def test_a_folded_header_is_a_400_that_ends_the_connection():
    """What follows a broken head may be a request smuggled in its body: the guard
    answers 400 and closes rather than read on (mitmproxy honours Connection: close)."""
    flow = run(Guard(Store()), f"/webhooks/jasmin/1/dlr?token={TOKEN}",
               headers={"X-Note": "a\r\n Transfer-Encoding: chunked"})
    assert flow.response.status_code == 400
    assert flow.response.headers["Connection"] == "close"
    assert flow.response.json() == {"message": "Bad request."}
