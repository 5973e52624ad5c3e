"""What operators see: health that tells the truth, and logs without secrets."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.servers import run_smsgw, start_api


def test_health_is_503_when_the_database_is_gone(tmp_path):
    api = start_api(tmp_path)
    try:
        assert httpx.get(f"{api.url}/healthz").status_code == 200
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"smsgw.db{suffix}").unlink(missing_ok=True)
        response = httpx.get(f"{api.url}/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}
    finally:
        api.process.stop()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_never_reach_the_log(tmp_path, stub, log_format):
    api = start_api(tmp_path, SMSGW_ADMIN_KEY="admin-key-that-must-not-be-logged-0123456789",
                    SMSGW_LOG_FORMAT=log_format)
    try:
        key = run_smsgw(api.env, "apikey", "create", "--name", "logs").stdout.strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {key}"}
        stub.answer(200, {"data": 'Success "log-1'})
        gateway = httpx.post(f"{api.url}/api/sms-gateways", headers=auth, json={
            "name": "logs", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "username": "u", "password": "gateway-password-never-logged", "default_sender_id": "X",
        }).json()["data"]
        token = gateway["callback_token"]
        httpx.post(f"{api.url}/api/sms-gateways/{gateway['id']}/send", headers=auth,
                   json={"to_number": "+14155550102", "message": "m"})
        for route in (f"/webhooks/jasmin/{gateway['id']}/dlr", f"/api/sms-gateways/{gateway['id']}/dlr"):
            httpx.post(f"{api.url}{route}?token={token}", data={"id": "log-1", "message_status": "DELIVRD"},
                       headers={"X-Callback-Token": token})
        httpx.get(f"{api.url}/api/sms-gateways", headers={"Authorization": "Bearer wrong-key-also-private"})
        httpx.get(f"{api.url}/api/sms-gateways",
                  headers={"Authorization": "Bearer admin-key-that-must-not-be-logged-0123456789"})
        rotated = httpx.post(f"{api.url}/api/sms-gateways/{gateway['id']}/callback-token/rotate",
                             headers=auth).json()["data"]
        # stub gateway failure: its reply must not drag the password into the log either
        stub.answer(500, "boom")
        httpx.post(f"{api.url}/api/sms-gateways/{gateway['id']}/send", headers=auth,
                   json={"to_number": "+14155550102", "message": "m"})
    finally:
        api.process.stop()
    log = api.log
    if log_format == "json":  # every line one object; what it says is in "message"
        lines = [json.loads(line) for line in log.splitlines()]
        said = "\n".join(line["message"] for line in lines)
    else:
        said = log
    # the log is real: it recorded the receipts, by path only
    assert f'"POST /webhooks/jasmin/{gateway["id"]}/dlr" 200' in said
    for secret in (key, token, rotated["callback_token"], "gateway-password-never-logged",
                   "admin-key-that-must-not-be-logged-0123456789", "wrong-key-also-private"):
        assert secret not in log
