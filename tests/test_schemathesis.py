"""Schemathesis against a live API, on SQLite and on PostgreSQL: every operation of
``/api/openapi.json``, a bounded number of generated requests each (valid and
invalid), and not one answer may be a 5xx, be undocumented, or differ from the
document (status code, Content-Type, body schema).

Seeded first through the API itself, so that the document's example id (1) and the
links between operations (a created gateway's id into its send, ...) reach real
rows: gateway 1 (pointing at a stub gateway), webhook endpoint 1, message 1 with
a receipt, batch 1, a parked receipt, API key 1. The run authenticates with key 2,
made as a user makes one (``smsgw apikey create``, every scope); a generated DELETE
of it revokes key 1 instead, so the run never locks itself out half-way.
``tests/schemathesis_hooks.py`` does that, and keeps every address the API would
connect to on the loopback stub.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from api import clock
from tests.servers import ROOT, StubGateway, run_smsgw, start_api

CHECKS = ",".join((
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance",
    "use_after_free", "ensure_resource_availability",  # (stateful) a deleted thing is gone, a made one is there
))
MAX_EXAMPLES = 20  # per operation and phase: the whole run stays within a few minutes on two cores
SEED = 1414  # the same run each time; a failure reproduces


@pytest.fixture
def stub():
    gateway = StubGateway().start()
    gateway.answer(200, {"data": 'Success "stub-id-1"'})
    yield gateway
    gateway.stop()


def new_key(env: dict[str, str], name: str) -> str:
    return run_smsgw(env, "apikey", "create", "--name", name).stdout.strip().splitlines()[-1]


def seed(url: str, key: str, stub_port: int) -> None:
    """One of each kind of row, each id 1, made the way users make them (key 1 is made before)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        def made(response: httpx.Response, status: int) -> dict:
            assert response.status_code == status, response.text
            return response.json()["data"]

        gateway = made(api.post("/api/sms-gateways", json={
            "name": "stub", "server_host": "127.0.0.1", "server_port": stub_port, "username": "u",
            "password": "stub-secret-pw", "default_sender_id": "ACME"}), 201)
        assert gateway["id"] == 1
        made(api.post("/api/webhook-endpoints", json={
            "url": f"http://127.0.0.1:{stub_port}/webhook", "events": ["message.status_updated"]}), 201)
        message = made(api.post("/api/sms-gateways/1/send", json={"to_number": "+14155550123", "message": "hi"}),
                       201)
        assert message["id"] == 1 and message["external_message_id"] == "stub-id-1"
        made(api.post("/api/sms-gateways/1/messages", json={"messages": [
            {"to_number": "+14155550124", "message": "later", "send_at": clock.iso_after(3600)}]}), 202)
        for fields in ({"id": "stub-id-1", "message_status": "DELIVRD"}, {"id": "not-yet-known"}):
            receipt = api.post("/webhooks/jasmin/1/dlr", data=fields)
            assert receipt.status_code == 200, receipt.text


def schemathesis(url: str, key: str, env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess:
    """The CLI, run in ``workdir`` (where it keeps its cache and writes junit.xml)."""
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/openapi.json",
         "--header", f"Authorization: Bearer {key}", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
         "--request-timeout", "30", "--report", "junit", "--report-junit-path", str(workdir / "junit.xml"),
         "--suppress-health-check", "all", "--no-color"],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=900)


def test_schemathesis_finds_no_5xx_and_nothing_undocumented(empty_database, tmp_path, stub):
    api = start_api(tmp_path, SMSGW_DATABASE_URL=empty_database, SMSGW_PUBLIC_URL="https://sms.example.test",
                    SMSGW_WEBHOOK_ALLOW_HTTP="1", SMSGW_WEBHOOK_ALLOW_PRIVATE="1", SMSGW_WEBHOOK_INTERVAL="0.2")
    try:
        new_key(api.env, "seeded")  # id 1: the one a generated revocation may take
        key = new_key(api.env, "schemathesis")  # id 2: the run's own
        seed(api.url, key, stub.port)
        env = {**api.env, "SCHEMATHESIS_HOOKS": str(ROOT / "tests" / "schemathesis_hooks.py"),
               "ST_HOOKS_STUB_PORT": str(stub.port), "ST_HOOKS_OWN_KEY_ID": "2"}
        run = schemathesis(api.url, key, env, tmp_path)
        assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
        # Every operation the document names was tested, none skipped, none failed.
        suite = ElementTree.parse(tmp_path / "junit.xml").getroot()
        tested = {case.get("name") for case in suite.iter("testcase")}
        document = httpx.get(f"{api.url}/api/openapi.json", timeout=30).json()
        operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
        # (schemathesis leaves out the operation that serves the document it reads; test_openapi.py checks it)
        assert operations - {"GET /api/openapi.json"} <= tested, operations - tested
        assert suite.get("failures") == suite.get("errors") == suite.get("skipped") == "0"
        assert "Traceback" not in api.log, api.log[-5000:]
        assert stub.received, "no generated gateway call reached the stub"
        # the run's key was never revoked: every answer it got was the API's, not a 401
        assert httpx.get(f"{api.url}/api/api-keys", headers={"Authorization": f"Bearer {key}"},
                         timeout=30).status_code == 200
    finally:
        api.process.stop()


def test_the_hooks_point_every_address_the_api_would_call_at_the_stub():
    from tests.schemathesis_hooks import local_only, spared, upstream_failure

    made = local_only("POST", "/api/sms-gateways", {"name": "g", "server_host": "10.0.0.1"}, 4242)
    assert made == {"name": "g", "server_host": "127.0.0.1", "server_port": 4242}  # no port given: the stub's too
    changed = local_only("PATCH", "/api/sms-gateways/{id}", {"server_port": "8080", "use_ssl": True}, 4242)
    assert changed == {"server_port": 4242, "use_ssl": True}
    invalid = {"server_host": "h" * 256, "server_port": 70000}
    assert local_only("PUT", "/api/sms-gateways/{id}", invalid, 4242) == invalid  # refused by the API anyway
    hook = local_only("PATCH", "/api/webhook-endpoints/{id}", {"url": "https://example.com/x"}, 4242)
    assert hook == {"url": "http://127.0.0.1:4242/webhook"}
    assert local_only("POST", "/api/sms-gateways/{id}/send", {"to_number": "+1"}, 4242) == {"to_number": "+1"}
    failed = b'{"message": "m", "data": {"state": "failed", "failure_reason": "refused"}}'
    assert upstream_failure("POST", "/api/sms-gateways/{id}/send", 502, failed)
    assert not upstream_failure("POST", "/api/sms-gateways/{id}/send", 500, failed)
    assert not upstream_failure("POST", "/api/sms-gateways/{id}/send", 502, b'{"message": "boom"}')
    assert not upstream_failure("GET", "/api/sms-gateways", 502, failed)
    assert spared("DELETE", "/api/api-keys/{id}", {"id": 2}, 2) == {"id": 1}
    assert spared("DELETE", "/api/api-keys/{id}", {"id": 3}, 2) == {"id": 3}
    assert spared("GET", "/api/sms-gateways/{id}", {"id": 2}, 2) == {"id": 2}
