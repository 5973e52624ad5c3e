"""API keys: every management route refuses a request without a valid key."""

from __future__ import annotations

import pytest

from tests.conftest import ADMIN_KEY
from tests.servers import error_body, run_smsgw

PRIVATE = [
    ("GET", "/api/sms-gateways"),
    ("POST", "/api/sms-gateways"),
    ("GET", "/api/sms-gateways/1"),
    ("PATCH", "/api/sms-gateways/1"),
    ("PUT", "/api/sms-gateways/1"),
    ("DELETE", "/api/sms-gateways/1"),
    ("POST", "/api/sms-gateways/1/callback-token/rotate"),
    ("POST", "/api/sms-gateways/1/send"),
    ("GET", "/api/sms-gateways/1/messages"),
    ("GET", "/api/sms-messages/1"),
    ("GET", "/api/sms-messages/1/events"),
    ("GET", "/api/sms-gateways/1/unmatched-dlrs"),
    ("POST", "/api/api-keys"),
    ("GET", "/api/api-keys"),
    ("DELETE", "/api/api-keys/1"),
    ("GET", "/api/audit-events"),
]


@pytest.mark.parametrize("method, path", PRIVATE)
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer", "Basic dXNlcjpwYXNz",
                                           "bearer smsgw_forged_key_value"])
def test_private_routes_are_401_without_a_valid_key(anonymous, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = anonymous.request(method, path, headers=headers, json={"name": "x"})
    assert response.status_code == 401
    assert error_body(response) == {"message": "Unauthorized."}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_admin_key_from_the_environment_is_accepted(anonymous):
    response = anonymous.get("/api/sms-gateways", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200


def test_a_revoked_key_stops_working(api, anonymous):
    key = run_smsgw(api.env, "apikey", "create", "--name", "short-lived").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    assert anonymous.get("/api/sms-gateways", headers=headers).status_code == 200
    listing = run_smsgw(api.env, "apikey", "list").stdout
    assert key not in listing and key[:12] in listing
    key_id = next(line.split()[0] for line in listing.splitlines() if "short-lived" in line)
    run_smsgw(api.env, "apikey", "revoke", key_id)
    assert anonymous.get("/api/sms-gateways", headers=headers).status_code == 401
    again = run_smsgw(api.env, "apikey", "revoke", key_id, check=False)
    assert again.returncode == 1 and "no active API key" in again.stderr


def test_health_needs_no_key_and_says_nothing_else(anonymous):
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
