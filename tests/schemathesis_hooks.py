"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The API under test calls whatever a gateway record names, and delivers webhooks to
whatever an endpoint names. Generated data would name any host on any network, so
before each request every gateway it makes or changes is pointed at the test's stub
gateway, and every webhook URL at it too (ST_HOOKS_STUB_PORT): the API never
opens a connection beyond the loopback stub, nor looks a name up in DNS. Values a
generator made invalid (wrong type, too long) are left as they are, so refusals are
still exercised.

The run's own API key (ST_HOOKS_OWN_KEY_ID) is never revoked: a generated DELETE
of it revokes the seeded key 1 instead, so the run cannot lock itself out.

A send whose gateway fails answers 502, 503 or 504 by design (the contract: the
message, recorded failed, with why). Those answers are documented, and a generated
gateway (TLS to the plain stub, another provider's format) does fail; every other
5xx still fails the run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

GATEWAY_PATHS = ("/api/sms-gateways", "/api/sms-gateways/{id}")
ENDPOINT_PATHS = ("/api/webhook-endpoints", "/api/webhook-endpoints/{id}")
SEND = ("POST", "/api/sms-gateways/{id}/send")
UPSTREAM_FAILURES = (502, 503, 504)


def local_only(method: str, path: str, body: Any, stub_port: int) -> Any:
    """``body`` with every address it names that the API would connect to replaced by the stub's.
    A created gateway always gets the stub's port (absent, its type's default would be used)."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if path in GATEWAY_PATHS:
        if isinstance(body.get("server_host"), str) and len(body["server_host"]) <= 255:
            body["server_host"] = "127.0.0.1"
        port = body.get("server_port")
        valid_port = (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535) or \
            (isinstance(port, str) and port.strip().isdigit())
        if valid_port or (method == "POST" and port is None):
            body["server_port"] = stub_port
    if path in ENDPOINT_PATHS and isinstance(body.get("url"), str) and len(body["url"]) <= 2048:
        body["url"] = f"http://127.0.0.1:{stub_port}/webhook"
    return body


def spared(method: str, path: str, path_parameters: Any, own_key_id: int) -> Any:
    """The path parameters with a revocation of the run's own key turned into one of key 1."""
    if (method, path) == ("DELETE", "/api/api-keys/{id}") and isinstance(path_parameters, dict) \
            and path_parameters.get("id") == own_key_id:
        return {**path_parameters, "id": 1}
    return path_parameters


def upstream_failure(method: str, path: str, status: int, content: bytes) -> bool:
    """A send's documented answer to its gateway's failure: 502/503/504 with the message, failed."""
    if (method, path) != SEND or status not in UPSTREAM_FAILURES:
        return False
    try:
        data = json.loads(content)["data"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(data, dict) and data.get("state") == "failed" and bool(data.get("failure_reason"))


@schemathesis.hook
def before_call(context, case, kwargs):
    method, path = case.operation.method.upper(), case.operation.path
    case.body = local_only(method, path, case.body, int(os.environ["ST_HOOKS_STUB_PORT"]))
    case.path_parameters = spared(method, path, case.path_parameters, int(os.environ["ST_HOOKS_OWN_KEY_ID"]))


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a send's documented answer to a failing gateway."""
    return not (type(failure).__name__ == "ServerError"
                and upstream_failure(case.operation.method.upper(), case.operation.path,
                                     response.status_code, response.content))
