"""One structured log: JSON or text, a request id from the guard to the API, numbers masked.

The rules (api.logs) are tested directly; then real processes (the API, its uvicorn
workers, the guard, the simulator, the CLI) run with SMSGW_LOG_FORMAT=json and their
logs are read line by line, as an operator's log shipper would.
"""

from __future__ import annotations

import json
import logging
import re
import socket

import httpx
import pytest

from api import logs
from tests.servers import (
    ROOT, SMSGW, error_body, free_port, run_smsgw, start, start_api, start_guard, wait_until,
)

JSON = {"SMSGW_LOG_FORMAT": "json"}
ADMIN = "admin-key-for-the-log-tests-0123456789abcdef"
GENERATED = re.compile(r"[0-9a-f]{32}")


# --- the rules ---------------------------------------------------------------------


@pytest.mark.parametrize("number, masked", [
    ("+15551234567", "+1555***4567"),
    ("+447700900123", "+4477***0123"),
    ("+4915112345678", "+4915***5678"),
    ("+3612345678", "+361***5678"),   # shorter: fewer leading digits, still 3+ hidden
    ("+61412345", "+6***2345"),
])
def test_a_number_keeps_its_start_and_last_four_digits_only(number, masked):
    assert logs.mask_phone(number) == masked
    assert logs.redact(f"to {number}, again ({number})") == f"to {masked}, again ({masked})"


def test_redact_hides_numbers_and_the_secrets_urls_carry_and_leaves_the_rest():
    text = ('sent to +15551234567 via http://gw.example:8080/send?username=u&password=hunter2 '
            'dlr postgresql://smsgw:dbpass@db/smsgw path /webhooks/jasmin/3/dlr?token=tok123&x=1 '
            'form%2B15551234567 at 2026-11-27T18:00:00+00:00, id 12345678901234567890, code +44')
    redacted = logs.redact(text)
    for secret in ("5551234567", "hunter2", "dbpass", "tok123", "username=u"):
        assert secret not in redacted
    assert "+1555***4567" in redacted and "%2B1555***4567" in redacted
    assert "http://gw.example:8080/send?***" in redacted and "postgresql://***@db/smsgw" in redacted
    assert "token=***" in redacted
    # not numbers: a timestamp's offset, a long id without +, a bare country code
    assert "2026-11-27T18:00:00+00:00" in redacted and "id 12345678901234567890" in redacted
    assert redacted.endswith("code +44")


@pytest.mark.parametrize("sent", ["abc123", "9f1c" * 8, "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b_c:d-e",
                                  "x" * 128, "-leading-dash"])
def test_a_well_formed_request_id_is_kept(sent):
    assert logs.request_id_from(sent) == sent


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "has space", "line\nbreak",
                                  "é", "+15551234567", "a;b", '"quoted"'])
def test_anything_else_gets_a_new_id(sent):
    made = logs.request_id_from(sent)
    assert GENERATED.fullmatch(made) and made != sent
    assert logs.request_id_from(sent) != made  # new each time


def formatted(formatter: logging.Formatter, *args, **extra) -> str:
    record = logging.LogRecord("smsgw.test", logging.WARNING, __file__, 1, *args, None)
    record.__dict__.update(extra)
    logs.Redact().filter(record)
    return formatter.format(record)


def test_a_json_line_has_the_fields_and_masks_message_and_fields():
    token = logs.REQUEST_ID.set("req-42")
    try:
        line = json.loads(formatted(logs.JsonFormatter(), "send to %s failed", ("+15551234567",),
                                    gateway_id=5, failure_code="timeout", to="+15551234567"))
    finally:
        logs.REQUEST_ID.reset(token)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {"level": "WARNING", "logger": "smsgw.test", "message": "send to +1555***4567 failed",
                    "request_id": "req-42", "gateway_id": 5, "failure_code": "timeout", "to": "+1555***4567"}


def test_a_log_call_with_bad_arguments_is_written_not_raised_into_its_caller():
    line = json.loads(formatted(logs.JsonFormatter(), "count %d", ("+15551234567",)))
    assert line["message"] == "count %d (unformattable arguments: ('+1555***4567',))"


def test_control_characters_in_client_text_become_escapes():
    assert logs.printable("/x\n2026-11-27 ERROR forged\r\x00\x7f") == "/x\\x0a2026-11-27 ERROR forged\\x0d\\x00\\x7f"
    assert logs.printable("/api/sms-messages/1") == "/api/sms-messages/1"


def test_a_line_made_outside_a_request_has_no_request_id():
    assert "request_id" not in json.loads(formatted(logs.JsonFormatter(), "idle", ()))
    assert "[req" not in formatted(logs.TextFormatter(), "idle", ())


def test_a_text_line_names_its_request():
    token = logs.REQUEST_ID.set("req-7")
    try:
        line = formatted(logs.TextFormatter(), "hello %s", ("+15551234567",))
    finally:
        logs.REQUEST_ID.reset(token)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING smsgw\.test \[req req-7\]: hello \+1555\*\*\*4567",
                        line)


def test_a_traceback_is_one_json_line_and_masked():
    try:
        raise ValueError("bad number +15551234567")
    except ValueError:
        import sys
        record = logging.LogRecord("smsgw.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    logs.Redact().filter(record)
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert "ValueError: bad number +1555***4567" in line["exception"] and "5551234567" not in text


# --- real processes ------------------------------------------------------------------


def json_lines(text: str) -> list[dict]:
    """Every line of a log, each parsed: a line that is not one JSON object fails the test."""
    lines = []
    for raw in text.splitlines():
        line = json.loads(raw)
        assert isinstance(line, dict), raw
        assert {"time", "level", "logger", "message"} <= line.keys(), raw
        lines.append(line)
    assert lines, "the log is empty"
    return lines


def lines_of(text: str, request_id: str) -> list[dict]:
    return [line for line in json_lines(text) if line.get("request_id") == request_id]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The API and the guard in front of it, both logging JSON."""
    workdir = tmp_path_factory.mktemp("logs")
    api = start_api(workdir, SMSGW_ADMIN_KEY=ADMIN, **JSON)
    guard = start_guard(workdir, api.env, api.url)
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    yield {"api": api, "guard": guard, "admin": admin}
    admin.close()
    guard.process.stop()
    api.process.stop()


@pytest.fixture
def gateway(stack, stub):
    return stack["admin"].post("/api/sms-gateways", json={
        "name": f"logs {stub.port}", "server_host": "127.0.0.1", "server_port": stub.port,
        "api_path": "secure/send", "username": "u", "password": "gateway-password-not-in-logs",
        "default_sender_id": "X"}).json()["data"]


def wait_for_line(process, request_id: str, logger: str) -> dict:
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [line for line in lines_of(process.log, request_id) if line["logger"] == logger]
        return bool(found)

    wait_until(seen, timeout=30, what=f"a {logger} line with request id {request_id}")
    return found[0]


def test_a_receipt_s_request_id_is_on_the_guard_s_line_and_the_api_s(stack, gateway):
    dlr = f"{stack['guard'].url}/webhooks/jasmin/{gateway['id']}/dlr"
    response = httpx.post(dlr, params={"token": gateway["callback_token"]}, timeout=30,
                          data={"id": "none-such", "message_status": "DELIVRD"},
                          headers={"X-Request-ID": "nginx-gave-this-1"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "nginx-gave-this-1"
    guard_line = wait_for_line(stack["guard"], "nginx-gave-this-1", "smsgw.guard")
    api_line = wait_for_line(stack["api"], "nginx-gave-this-1", "smsgw.access")
    path = f"/webhooks/jasmin/{gateway['id']}/dlr"
    assert (guard_line["method"], guard_line["path"], guard_line["status"]) == ("POST", path, 200)
    assert (api_line["method"], api_line["path"], api_line["status"]) == ("POST", path, 200)
    assert api_line["level"] == "INFO" and api_line["duration_ms"] >= 0


def test_without_an_id_the_guard_makes_one_and_the_api_uses_it(stack, gateway):
    dlr = f"{stack['guard'].url}/webhooks/jasmin/{gateway['id']}/dlr"
    response = httpx.post(dlr, headers={"X-Callback-Token": gateway["callback_token"]}, timeout=30,
                          data={"id": "none-such-2", "message_status": "DELIVRD"})
    assert response.status_code == 200
    made = response.headers["X-Request-ID"]
    assert GENERATED.fullmatch(made)
    wait_for_line(stack["guard"], made, "smsgw.guard")
    wait_for_line(stack["api"], made, "smsgw.access")


def test_a_malformed_id_is_replaced_and_never_logged(stack, gateway):
    dlr = f"{stack['guard'].url}/webhooks/jasmin/{gateway['id']}/dlr"
    response = httpx.post(dlr, params={"token": gateway["callback_token"]}, timeout=30,
                          data={"id": "none-such-3", "message_status": "DELIVRD"},
                          headers={"X-Request-ID": "evil id {injected}"})
    made = response.headers["X-Request-ID"]
    assert GENERATED.fullmatch(made)
    wait_for_line(stack["api"], made, "smsgw.access")
    assert "injected" not in stack["guard"].log and "injected" not in stack["api"].log


def test_a_guard_refusal_carries_the_id_in_its_header_and_its_line(stack, gateway):
    dlr = f"{stack['guard'].url}/webhooks/jasmin/{gateway['id']}/dlr"
    refused = httpx.post(dlr, params={"token": "not-the-token"}, headers={"X-Request-ID": "refused-1"},
                         data={"id": "x", "message_status": "DELIVRD"}, timeout=30)
    # the id in the header; the body is the same for every refusal
    assert refused.status_code == 403 and refused.json() == {"message": "Forbidden."}
    assert refused.headers["X-Request-ID"] == "refused-1"
    line = wait_for_line(stack["guard"], "refused-1", "smsgw.guard")
    assert line["status"] == 403 and "not-the-token" not in stack["guard"].log
    assert lines_of(stack["api"].log, "refused-1") == []  # it never reached the API


def test_the_guard_s_check_answer_names_the_request(stack, gateway):
    """auth_request mode: nginx asks, and can log the guard's id with its own line."""
    answer = httpx.get(f"{stack['guard'].url}/_guard/check", timeout=30, headers={
        "X-Original-Method": "POST", "X-Request-ID": "check-1",
        "X-Original-URI": f"/webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']}"})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "check-1"
    wait_for_line(stack["guard"], "check-1", "smsgw.guard")


def test_a_newline_in_a_path_cannot_forge_a_line(stack):
    stack["admin"].get("/api/nothing%0A2026-11-27 23:59:59,000 ERROR smsgw.api: forged", headers={"X-Request-ID": "forge-1"})
    line = wait_for_line(stack["api"], "forge-1", "smsgw.access")
    assert line["path"] == "/api/nothing\\x0a2026-11-27 23:59:59,000 ERROR smsgw.api: forged"


def test_an_api_error_reply_and_its_line_share_the_id(stack):
    missing = stack["admin"].get("/api/sms-messages/987654321", headers={"X-Request-ID": "api-err-1"})
    assert missing.status_code == 404
    assert missing.json() == {"message": "SMS message not found.", "request_id": "api-err-1"}
    line = wait_for_line(stack["api"], "api-err-1", "smsgw.access")
    assert (line["path"], line["status"]) == ("/api/sms-messages/987654321", 404)
    made = stack["admin"].get("/api/sms-messages/987654321")
    assert GENERATED.fullmatch(made.headers["X-Request-ID"]) and error_body(made) == {
        "message": "SMS message not found."}


def test_a_failed_send_is_a_warning_with_the_gateway_code_and_reason_masked(stack, gateway, stub):
    # The gateway's error names the number and a URL with its password: the log has neither.
    stub.answer(500, {"message": 'Error "upstream http://smsc.example/send?user=u&password=gateway-pass-in-reply '
                                 'refused +14155550102"'})
    sent = stack["admin"].post(f"/api/sms-gateways/{gateway['id']}/send", headers={"X-Request-ID": "send-1"},
                               json={"to_number": "+14155550102", "message": "hello"})
    assert sent.status_code == 502 and sent.headers["X-Request-ID"] == "send-1"
    warning = wait_for_line(stack["api"], "send-1", "smsgw.sending")
    assert warning["level"] == "WARNING"
    assert warning["gateway_id"] == gateway["id"] and warning["message_id"] == sent.json()["data"]["id"]
    assert warning["failure_code"] == sent.json()["data"]["failure_code"] and warning["failure_code"]
    assert "+1415***0102" in warning["failure_reason"] and "+1415***0102" in warning["message"]
    assert "smsc.example/send?***" in warning["failure_reason"]
    log = stack["api"].log
    for private in ("4155550102", "gateway-pass-in-reply", "gateway-password-not-in-logs", ADMIN,
                    gateway["callback_token"]):
        assert private not in log


def test_a_dispatched_send_that_fails_is_a_warning_too(stack, gateway, stub):
    """Sent by the dispatcher, after the request that stored it ended: no request id, the rest alike."""
    stub.answer(400, {"message": 'Error "Bad number"'})
    queued = stack["admin"].post(f"/api/sms-gateways/{gateway['id']}/send", headers={"Prefer": "respond-async"},
                                 json={"to_number": "+14155550104", "message": "later"})
    assert queued.status_code == 202
    message_id = queued.json()["data"]["id"]
    found: list[dict] = []

    def warned() -> bool:
        found[:] = [line for line in json_lines(stack["api"].log)
                    if line["logger"] == "smsgw.sending" and line.get("message_id") == message_id]
        return bool(found)

    wait_until(warned, timeout=60, what="the dispatcher's warning")
    assert found[0]["level"] == "WARNING" and found[0]["gateway_id"] == gateway["id"]
    assert found[0]["failure_code"] and "Bad number" in found[0]["failure_reason"]


def test_a_timed_out_send_logs_its_warning_once(stack, gateway, stub):
    import threading

    release = threading.Event()
    stub.answer(200, {"data": 'Success "late'}, hold=release)
    try:
        sent = stack["admin"].post(f"/api/sms-gateways/{gateway['id']}/send", headers={"X-Request-ID": "send-2"},
                                   json={"to_number": "+14155550103", "message": "hello"})
    finally:
        release.set()
    assert sent.status_code == 504
    warning = wait_for_line(stack["api"], "send-2", "smsgw.sending")
    assert warning["failure_code"] == "timeout" and "did not answer" in warning["failure_reason"]
    assert len([line for line in lines_of(stack["api"].log, "send-2") if line["level"] == "WARNING"]) == 1


def test_uvicorn_s_own_lines_are_json_in_every_worker_from_start_to_stop(tmp_path):
    port = free_port()
    env = {**start_env(tmp_path), **JSON, "SMSGW_API_HOST": "127.0.0.1", "SMSGW_API_PORT": str(port),
           "SMSGW_API_WORKERS": "2", "SMSGW_METRICS_PORT": "0"}
    run_smsgw(env, "migrate")
    process = start(env, [*SMSGW, "api"], tmp_path / "api.log")
    try:  # workers are processes of their own, each importing everything: slow on a busy machine
        wait_until(lambda: process.log().count("Application startup complete.") >= 2 or process.popen.poll() is not None,
                   timeout=120, what="both workers to start")
    finally:
        process.stop()
    lines = json_lines(process.log())
    said = [(line["logger"], line["message"]) for line in lines]
    started = [m for logger, m in said if logger == "uvicorn.error" and m.startswith("Started server process")]
    assert len(started) == 2, said  # each worker's lines went through api.logs
    assert any(logger == "uvicorn.error" and m.startswith("Started parent process") for logger, m in said), said
    assert ("uvicorn.error", "Application startup complete.") in said
    assert any(logger == "uvicorn.error" and "Shutting down" in m for logger, m in said), said
    assert any(logger == "smsgw.api" for logger, _ in said), said  # smsgw's own line at start


def test_the_guard_s_lines_are_json_from_start_to_stop(stack):
    text = stack["guard"].log
    lines = json_lines(text)
    assert any(line["logger"] == "smsgw.guard" and line["message"].startswith("guard listening")
               for line in lines), text


def test_the_cli_logs_json_too(tmp_path):
    env = {**start_env(tmp_path), **JSON}
    migrated = run_smsgw(env, "migrate")
    lines = json_lines(migrated.stderr)
    assert any(line["logger"].startswith("alembic") for line in lines), migrated.stderr
    assert migrated.stdout.strip() == "database schema is up to date"


def start_env(tmp_path) -> dict[str, str]:
    import os

    return {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


@pytest.mark.parametrize("command", [["simulator"], ["webhook-receiver"]])
def test_the_simulator_and_the_receiver_say_a_taken_port_in_json(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**start_env(tmp_path), **JSON, "SMSGW_SIMULATOR_HOST": "127.0.0.1", "SMSGW_SIMULATOR_PORT": str(port)}
        args = [*command, "--port", str(port)] if command == ["webhook-receiver"] else command
        process = start(env, [*SMSGW, *args], tmp_path / "out.log")
        assert process.popen.wait(timeout=60) != 0
    printed = process.log().splitlines()
    logged = [json.loads(line) for line in printed if line.startswith("{")]
    assert any(line["level"] == "ERROR" and str(port) in line["message"] for line in logged), printed
    # the receiver's own output (what it listens on, then one line per event) is printed, not logged
    assert all(line.startswith("{") or line.startswith("webhook receiver listening") for line in printed), printed


def test_an_unhandled_error_is_a_500_in_the_contract_s_shape_with_the_id_on_its_line():
    """api.accesslog, the outermost layer, with an app that fails: the 500 body names the
    request, and so does the error line (its text, which may hold a request's data, is not logged)."""
    import asyncio
    import io

    from api.accesslog import AccessLog

    async def failing(scope, receive, send):
        detail = "private detail " + scope["path"]  # a request's data, as an exception may carry
        raise RuntimeError(detail)

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": [(b"x-request-id", b"boom-1")],
             "client": ("127.0.0.1", 5)}
    out = io.StringIO()
    handler = logs.make_handler("json")
    handler.setStream(out)
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        asyncio.run(AccessLog(failing)(scope, receive, send))
    finally:
        root.removeHandler(handler)
        root.level = level
    start, body = sent
    assert start["status"] == 500 and (b"x-request-id", b"boom-1") in start["headers"]
    assert json.loads(body["body"]) == {"message": "Internal server error.", "request_id": "boom-1"}
    failed, access = json_lines(out.getvalue())
    assert (failed["logger"], failed["level"], failed["request_id"]) == ("smsgw.api", "ERROR", "boom-1")
    assert "RuntimeError" in failed["message"] and "private detail" not in failed["message"]
    assert (access["logger"], access["status"], access["request_id"]) == ("smsgw.access", 500, "boom-1")
    assert logs.REQUEST_ID.get() is None  # the id ends with the request


@pytest.mark.parametrize("config", ["smsgw.conf", "smsgw-guard-proxy.conf"])
def test_nginx_keeps_a_client_request_id_by_the_same_rule(config):
    """nginx keeps a client's X-Request-ID only in the form the guard and the API keep, so one
    id runs through every hop (a longer one, kept by nginx and replaced inside, would split it)."""
    text = (ROOT / "deploy" / "nginx" / config).read_text()
    assert f'"~^{logs.REQUEST_ID_FORM.pattern}$" $http_x_request_id;' in text
