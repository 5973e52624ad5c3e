"""Callback tokens through a running guard with its default 5 s cache, on SQLite and PostgreSQL.

Rotations and new gateways are seen at once; a flood of made-up ids never turns
a real gateway's receipt into a 403; bytes outside ASCII in a token are a wrong
token (403), not an error.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.servers import StubGateway, raw_request, run_smsgw, start_api, start_guard, wait_until

FAKE = "a-well-formed-but-made-up-token-0000"


@pytest.fixture(scope="module")
def world(database, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tokens")
    api = start_api(workdir, **database)
    key = run_smsgw(api.env, "apikey", "create", "--name", "tokens").stdout.strip().splitlines()[-1]
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    upstream = StubGateway().start()
    upstream.answer(200, {"message": "DLR received"})
    guard = start_guard(workdir, api.env, f"http://127.0.0.1:{upstream.port}")  # the default TTL, 5 s
    yield {"api": api, "admin": admin, "guard": guard, "upstream": upstream}
    guard.process.stop()
    upstream.stop()
    admin.close()
    api.process.stop()


def new_gateway(world) -> dict:
    response = world["admin"].post("/api/sms-gateways", json={"name": "g", "server_host": "127.0.0.1"})
    assert response.status_code == 201
    return response.json()["data"]


def rotate(world, gateway_id: int, **body) -> dict:
    response = world["admin"].post(f"/api/sms-gateways/{gateway_id}/callback-token/rotate", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def receipt(world, gateway_id: int, token: str) -> int:
    return raw_request(world["guard"].port, "POST", f"/webhooks/jasmin/{gateway_id}/dlr?token={token}")[0]


def test_a_rotated_token_is_admitted_at_once_and_each_previous_one_keeps_its_own_grace(world):
    """Finding 5: the new token got 403 until the guard's cache expired, and a second
    rotation ended the first one's grace."""
    gateway = new_gateway(world)
    gid, first = gateway["id"], gateway["callback_token"]
    assert receipt(world, gid, first) == 200  # now cached
    second = rotate(world, gid)["callback_token"]
    assert receipt(world, gid, second) == 200  # at once, not after the cache expires
    third = rotate(world, gid, grace_seconds=3600)["callback_token"]
    assert receipt(world, gid, third) == 200
    assert receipt(world, gid, second) == 200
    assert receipt(world, gid, first) == 200  # the second rotation did not end the first grace
    fourth = rotate(world, gid, grace_seconds=0)["callback_token"]  # a leaked token: revoke them all
    assert receipt(world, gid, fourth) == 200
    for old in (first, second, third):
        # refused (403) once the guard has looked; until then "not checked" (503), never admitted
        wait_until(lambda: receipt(world, gid, old) == 403, timeout=30, what="the revoked token refused")
    assert receipt(world, gid, fourth) == 200
    log = world["guard"].log
    assert "Traceback" not in log and not any(token in log for token in (first, second, third, fourth))


def test_a_gateway_created_during_a_flood_of_made_up_ids_is_never_refused(world):
    """Finding 4: with the lookup budget spent by made-up ids, a new gateway's receipts got 403."""
    port, stop, seen = world["guard"].port, threading.Event(), []

    def flood(start: int) -> None:
        n = start
        while not stop.is_set():
            seen.append(raw_request(port, "POST", f"/webhooks/jasmin/{n}/dlr?token={FAKE}"))
            n += 2

    floods = [threading.Thread(target=flood, args=(900_000_000 + i,)) for i in range(2)]
    for thread in floods:
        thread.start()
    try:
        wait_until(lambda: len(seen) >= 100, timeout=60, what="the flood to spend the lookup budget")
        gateway = new_gateway(world)
        during = [receipt(world, gateway["id"], gateway["callback_token"]) for _ in range(10)]
    finally:
        stop.set()
        for thread in floods:
            thread.join(10)
    assert 403 not in during and set(during) <= {200, 503}
    wait_until(lambda: receipt(world, gateway["id"], gateway["callback_token"]) == 200, timeout=30,
               what="the new gateway's receipt admitted on retry")
    # the made-up ids were refused (looked up) or told to retry (not looked up), in JSON
    assert {status for status, _ in seen} <= {403, 503}
    assert all(body.startswith(b'{"message": ') for _, body in seen)


@pytest.mark.parametrize("target, headers", [
    ("/webhooks/jasmin/{gid}/dlr?token=%FF%FE", {}),
    ("/webhooks/jasmin/{gid}/dlr?token=%C3%A9", {}),                 # é, as a client sends it
    ("/webhooks/jasmin/{gid}/dlr?token=%ED%B3%BF" + "a" * 30, {}),   # an encoded surrogate
    ("/webhooks/jasmin/{gid}/dlr", {"X-Callback-Token": "\xff"}),     # a raw 0xFF byte
    ("/webhooks/jasmin/{gid}/dlr", {"X-Callback-Token": "\xe9" + "a" * 30}),
])
def test_a_token_outside_ascii_is_a_wrong_token(world, target, headers):
    """Finding 8: a non-ASCII byte in the token raised UnicodeEncodeError: 503 and an ERROR line."""
    gid = new_gateway(world)["id"]
    world["upstream"].received.clear()
    status, body = raw_request(world["guard"].port, "POST", target.format(gid=gid), headers=headers)
    assert (status, body) == (403, b'{"message": "Forbidden."}')
    assert world["upstream"].received == []
    assert "Traceback" not in world["guard"].log and "UnicodeEncodeError" not in world["guard"].log


@pytest.mark.parametrize("uri, headers", [
    ("/webhooks/jasmin/{gid}/dlr?token=\xe9", {}),      # raw bytes as nginx passes $request_uri
    ("/webhooks/jasmin/{gid}/dlr?token=%FF", {}),
    ("/webhooks/jasmin/{gid}/dlr", {"X-Callback-Token": "\xff\xfe"}),
])
def test_nginx_s_check_of_a_token_outside_ascii_is_403(world, uri, headers):
    gid = new_gateway(world)["id"]
    status, _ = raw_request(world["guard"].port, "GET", "/_guard/check", body=b"",
                            headers={"X-Original-Method": "POST", "X-Original-URI": uri.format(gid=gid),
                                     **headers})
    assert status == 403
    assert "Traceback" not in world["guard"].log and "UnicodeEncodeError" not in world["guard"].log


def test_a_deleted_gateway_s_token_is_refused_and_its_id_never_returns(world):
    gateway = new_gateway(world)
    assert receipt(world, gateway["id"], gateway["callback_token"]) == 200
    assert world["admin"].delete(f"/api/sms-gateways/{gateway['id']}").status_code == 200
    wait_until(lambda: receipt(world, gateway["id"], gateway["callback_token"]) == 403, timeout=30,
               what="the deleted gateway's token refused")
    assert new_gateway(world)["id"] > gateway["id"]
    assert receipt(world, gateway["id"], gateway["callback_token"]) == 403
