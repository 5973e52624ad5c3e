"""The shipped nginx config, served by Debian's real nginx in front of the real guard and API."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.nginx import NGINX, nginx_stack, send_message
from tests.servers import error_body, services_required, wait_until

if NGINX is None and not services_required():
    pytest.skip("nginx is not installed (make install installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def stack(database, tmp_path_factory):
    with nginx_stack(tmp_path_factory.mktemp("nginx"), "smsgw.conf", database) as stack:
        yield stack


_ids = itertools.count()


@pytest.fixture
def send(stack):
    return lambda: send_message(stack, f"ngx-{next(_ids)}")


def status_of(stack, message) -> str:
    return stack["client"].get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"]


def post_dlr(stack, message, path=None, status="DELIVRD", **kwargs):
    gid = stack["gateway"]["id"]
    path = path or f"/webhooks/jasmin/{gid}/dlr"
    return httpx.post(stack["nginx"].url + path, verify=False,
                      data={"id": message["external_message_id"], "message_status": status}, **kwargs)


def test_the_management_api_and_health_pass_through(stack):
    assert stack["client"].get("/healthz").json() == {"status": "ok"}
    assert stack["client"].get("/api/sms-gateways").status_code == 200
    response = httpx.get(stack["nginx"].url + "/api/sms-gateways", verify=False)
    assert response.status_code == 401 and error_body(response) == {"message": "Unauthorized."}


def test_a_valid_token_in_the_query_passes(stack, send):
    message = send()
    token = stack["gateway"]["callback_token"]
    response = post_dlr(stack, message, params={"token": token})
    assert response.status_code == 200 and response.json() == {"message": "DLR received"}
    assert status_of(stack, message) == "delivrd"


def test_a_valid_token_in_the_header_passes(stack, send):
    message = send()
    gid = stack["gateway"]["id"]
    response = post_dlr(stack, message, path=f"/api/sms-gateways/{gid}/dlr", status="UNDELIV",
                        headers={"X-Callback-Token": stack["gateway"]["callback_token"]})
    assert response.json() == {"message": "DLR received"}
    assert status_of(stack, message) == "undeliv"


@pytest.mark.parametrize("kwargs, status", [
    ({}, 401),
    ({"params": {"token": "wrong-token"}}, 403),
    ({"headers": {"X-Callback-Token": "wrong-token"}}, 403),
])
def test_a_wrong_or_missing_token_is_refused(stack, send, kwargs, status):
    message = send()
    response = post_dlr(stack, message, **kwargs)
    assert response.status_code == status
    assert response.json()["message"] in ("Unauthorized.", "Forbidden.")
    assert status_of(stack, message) == "submitted"


def test_other_spellings_of_the_route_are_404_or_checked(stack, send):
    message = send()
    gid, token = stack["gateway"]["id"], stack["gateway"]["callback_token"]
    for path in (f"/webhooks/jasmin/{gid}/dlr/", f"/webhooks/jasmin/{gid}/dlr;x", f"/WEBHOOKS/jasmin/{gid}/dlr",
                 f"/webhooks/jasmin/0{gid}/dlr", f"/api/sms-gateways/{gid}/DLR"):
        assert post_dlr(stack, message, path=path, params={"token": token}).status_code == 404, path
    # nginx decodes and normalises before matching: these are the DLR route, and still need the token
    for path in (f"/webhooks/jasmin/{gid}/dl%72", f"//webhooks/jasmin/{gid}/./dlr"):
        assert post_dlr(stack, message, path=path).status_code == 401, path
    assert status_of(stack, message) == "submitted"


def test_the_guard_is_off_the_hot_path(stack, send):
    messages = [send() for _ in range(10)]
    token = stack["gateway"]["callback_token"]
    checks_before = stack["guard"].log.count("/_guard/check")
    for message in messages:
        assert post_dlr(stack, message, params={"token": token}).status_code == 200
    # one check (or two, if the cached answer expired mid-run) for ten receipts
    assert stack["guard"].log.count("/_guard/check") - checks_before <= 2


def test_a_body_over_the_limit_is_413(stack):
    gid = stack["gateway"]["id"]
    response = httpx.post(f"{stack['nginx'].url}/webhooks/jasmin/{gid}/dlr", verify=False,
                          content=b"x" * (65 * 1024), params={"token": stack["gateway"]["callback_token"]})
    assert response.status_code == 413


def test_the_rate_limit_answers_429(stack):
    gid = stack["gateway"]["id"]
    statuses = []
    # From an address of its own (the limit is per client address): the other tests, from
    # 127.0.0.1, do not find the bucket this one empties still full, however fast they follow.
    with httpx.Client(verify=False, transport=httpx.HTTPTransport(local_address="127.0.0.2", verify=False)) as client:
        for _ in range(2000):  # bounded: the limit is 100/s with a burst of 200
            status = client.post(f"{stack['nginx'].url}/webhooks/jasmin/{gid}/dlr", params={"token": "bad"},
                                 data={"id": "x"}).status_code
            statuses.append(status)
            if status == 429:
                break
    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {403}


def test_head_is_not_a_receipt(stack):
    gid, token = stack["gateway"]["id"], stack["gateway"]["callback_token"]
    response = httpx.head(f"{stack['nginx'].url}/webhooks/jasmin/{gid}/dlr", params={"token": token}, verify=False)
    assert response.status_code == 404


def test_a_repeated_token_header_is_judged_on_its_first_value_only(stack, send):
    # nginx 1.22 keeps the first of repeated headers; the guard is shown that one
    # value, the same one the cache key holds, so no answer crosses between keys.
    gid, token = stack["gateway"]["id"], stack["gateway"]["callback_token"]
    url = f"{stack['nginx'].url}/webhooks/jasmin/{gid}/dlr"
    message = send()
    body = {"id": message["external_message_id"], "message_status": "DELIVRD"}
    bad_first = httpx.post(url, data=body, verify=False,
                           headers=[("X-Callback-Token", "wrong"), ("X-Callback-Token", token)])
    assert bad_first.status_code == 403
    good_first = httpx.post(url, data=body, verify=False,
                            headers=[("X-Callback-Token", token), ("X-Callback-Token", "wrong")])
    assert good_first.status_code == 200
    assert httpx.post(url, data=body, verify=False, headers={"X-Callback-Token": token}).status_code == 200


def test_no_token_in_any_log(stack, send):
    """Last in the module: after every request above, no log line holds a token."""
    message = send()
    token = stack["gateway"]["callback_token"]
    post_dlr(stack, message, params={"token": token})
    logs = {"nginx": stack["nginx"].logs(), "guard": stack["guard"].log, "api": stack["api"].log}
    assert f"/webhooks/jasmin/{stack['gateway']['id']}/dlr" in logs["nginx"]  # the access log is real
    for name, text in logs.items():
        assert token not in text, f"the callback token is in the {name} log"
        assert stack["key"] not in text, f"the API key is in the {name} log"


def test_with_the_guard_down_receipts_are_refused_with_503(stack, send):
    """After the log check: it stops the guard. No decision, no receipt (fail closed)."""
    message = send()
    stack["guard"].process.stop()
    response = post_dlr(stack, message, params={"token": "never-seen-before-token"})
    assert response.status_code == 503 and response.json() == {"message": "Service unavailable."}
    assert response.headers["Retry-After"] == "1"  # a gateway's retry, not a refusal
    assert status_of(stack, message) == "submitted"
    # Why, in the access log: the guard's address and nginx's 502 for it (the error log
    # cannot say, for it would hold the query string), and no token.
    request_id = response.headers["X-Request-ID"]
    wait_until(lambda: f"request_id={request_id} " in stack["nginx"].logs(), what="the 503's access-log line")
    [line] = [line for line in stack["nginx"].logs().splitlines() if f"request_id={request_id} " in line]
    assert f'"POST /webhooks/jasmin/{stack["gateway"]["id"]}/dlr HTTP/1.1" 503 ' in line
    assert f"guard=127.0.0.1:{stack['guard'].port} guard_status=502 " in line
    assert "never-seen-before-token" not in stack["nginx"].logs()
