"""The simpler nginx variant, where receipts go through the guard itself."""

from __future__ import annotations

import httpx
import pytest

from tests.nginx import NGINX, nginx_stack, send_message
from tests.servers import services_required, wait_until

if NGINX is None and not services_required():
    pytest.skip("nginx is not installed (make install installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def stack(database, tmp_path_factory):
    with nginx_stack(tmp_path_factory.mktemp("nginx-guard-proxy"), "smsgw-guard-proxy.conf", database) as stack:
        stack["message"] = send_message(stack, "variant-1")
        yield stack


def dlr(stack, path=None, **kwargs):
    path = path or f"/webhooks/jasmin/{stack['gateway']['id']}/dlr"
    return httpx.post(stack["nginx"].url + path, verify=False,
                      data={"id": "variant-1", "message_status": "DELIVRD"}, **kwargs)


def test_refusals_come_from_the_guard_in_the_contract_shape(stack):
    token = stack["gateway"]["callback_token"]
    assert dlr(stack).status_code == 401
    assert dlr(stack, params={"token": "wrong"}).json() == {"message": "Forbidden."}
    conflict = dlr(stack, params={"token": token}, headers={"X-Callback-Token": "other"})
    # nginx answers the guard's 400 in its own words: it cannot tell it from one of its own
    assert conflict.status_code == 400 and conflict.json() == {"message": "Bad request."}
    assert dlr(stack, path=f"/webhooks/jasmin/{stack['gateway']['id']}/dlr/", params={"token": token}).status_code == 404
    message = stack["client"].get(f"/api/sms-messages/{stack['message']['id']}").json()["data"]
    assert message["delivery_status"] == "submitted"


def test_a_valid_token_passes_through_the_guard_to_the_api(stack):
    response = dlr(stack, headers={"X-Callback-Token": stack["gateway"]["callback_token"]})
    assert response.json() == {"message": "DLR received"}
    message = stack["client"].get(f"/api/sms-messages/{stack['message']['id']}").json()["data"]
    assert message["delivery_status"] == "delivrd"
    token = stack["gateway"]["callback_token"]
    for text in (stack["nginx"].logs(), stack["guard"].log, stack["api"].log):
        assert token not in text


def test_with_the_api_down_the_answer_is_a_plain_503(stack):
    """Last in the module: it stops the API. The guard's own 502 page names the
    API's address; nginx must replace it."""
    stack["api"].process.stop()
    response = dlr(stack, headers={"X-Callback-Token": stack["gateway"]["callback_token"]})
    assert response.status_code == 503
    assert response.json() == {"message": "Service unavailable."}
    assert "127.0.0.1" not in response.text
    # The guard answered (a connect time), with its 502: the API behind it is down.
    line = access_log_line(stack, response.headers["X-Request-ID"])
    assert f"upstream=127.0.0.1:{stack['guard'].port} upstream_status=502 connect_time=0" in line


def test_with_the_guard_down_the_access_log_says_so(stack):
    """After the API's: it stops the guard too. The receipt's 503 is explained in the
    access log (nginx could not connect to the guard), never with its query string."""
    stack["guard"].process.stop()
    response = dlr(stack, params={"token": "never-seen-before-token"})
    assert response.status_code == 503 and response.json() == {"message": "Service unavailable."}
    line = access_log_line(stack, response.headers["X-Request-ID"])
    assert f"upstream=127.0.0.1:{stack['guard'].port} upstream_status=502 connect_time=-" in line
    assert "never-seen-before-token" not in stack["nginx"].logs()


def access_log_line(stack, request_id: str) -> str:
    def lines():
        return [line for line in stack["nginx"].logs().splitlines() if f"request_id={request_id} " in line]
    wait_until(lambda: lines(), what="the access-log line")
    [line] = lines()
    return line
