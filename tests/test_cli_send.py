"""``smsgw send``: a CSV uploaded through a real API to the real simulator, as a user runs it.

The API is started with SMSGW_PUBLIC_URL set to its own address, so the messages'
default callback_url sends the simulator's receipts straight back to the API's
``/webhooks/jasmin/{id}/dlr`` route and ``--wait`` sees every message reach its end.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pty
import re
import subprocess

import httpx
import pytest

from api import bulk_send
from api.bulk_send import Rejected, Row, UsageError
from tests.servers import (
    ROOT, SMSGW, Api, Reply, free_port, healthy, run_smsgw, start, wait_for_start,
)

SIM_AUTH = ("cli-sim-user", "cli-sim-password")
_files = itertools.count(1)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "SMSGW_SIMULATOR_PORT": str(port), "SMSGW_SIMULATOR_USERNAME": SIM_AUTH[0],
           "SMSGW_SIMULATOR_PASSWORD": SIM_AUTH[1], "SMSGW_SIMULATOR_DELAY": "0.05"}
    process = start(env, [*SMSGW, "simulator"], tmp_path_factory.mktemp("sim") / "sim.log")
    url = f"http://127.0.0.1:{port}"
    wait_for_start(process, lambda: healthy(url + "/_simulator/config"), "the simulator")
    yield port
    process.stop()


@pytest.fixture(scope="module")
def api(database, tmp_path_factory):
    """The API on a port chosen here, so that its public URL can be its own address."""
    workdir = tmp_path_factory.mktemp("send-api")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{workdir / 'smsgw.db'}", "SMSGW_API_HOST": "127.0.0.1",
           "SMSGW_API_PORT": str(port), "SMSGW_PUBLIC_URL": url, "SMSGW_GATEWAY_TIMEOUT": "2",
           "SMSGW_DISPATCH_INTERVAL": "0.2", "SMSGW_METRICS_PORT": "0", **database}
    env.pop("SMSGW_API_KEY", None)
    env.pop("SMSGW_ADMIN_KEY", None)
    run_smsgw(env, "migrate")
    process = start(env, [*SMSGW, "api"], workdir / "api.log")
    wait_for_start(process, lambda: healthy(url + "/healthz"), "the API")
    yield Api(url, env, process)
    process.stop()


@pytest.fixture(scope="module")
def key(api):
    return run_smsgw(api.env, "apikey", "create", "--name", "cli send").stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def client(api, key):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        yield c


@pytest.fixture
def gateway(client, simulator):
    """A gateway of its own per test, pointing at the simulator: its messages are the test's alone."""
    response = client.post("/api/sms-gateways", json={
        "name": f"cli send {next(_files)}", "provider_type": "jasmin", "server_host": "127.0.0.1",
        "server_port": simulator, "api_path": "secure/send", "username": SIM_AUTH[0], "password": SIM_AUTH[1],
        "default_sender_id": "smsgw"})
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def send(api, key, *args: str, use_env_key: bool = True) -> subprocess.CompletedProcess:
    """``smsgw send`` as a user runs it; its output never shows the key."""
    env = {**api.env, "SMSGW_API_URL": api.url, **({"SMSGW_API_KEY": key} if use_env_key else {})}
    done = subprocess.run([*SMSGW, "send", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert key not in done.stdout and key not in done.stderr
    return done


def stored(client, gateway) -> list[dict]:
    response = client.get(f"/api/sms-gateways/{gateway}/messages", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def write(tmp_path, text: str):
    path = tmp_path / f"messages-{next(_files)}.csv"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


# --- over real processes ----------------------------------------------------------


def test_rejected_rows_are_reported_by_line_the_rest_stored_and_a_rerun_stores_nothing_again(
        api, key, client, gateway, tmp_path):
    rows = [f"+1415555{1000 + n},hello {n},ref-{n}" for n in range(30)]
    rows[3] = "not-a-number,hello bad number,ref-bad-number"
    rows[15] = "+14155559999,,ref-no-text"
    rows.insert(9, "")  # an empty line: skipped, but it still counts in the file's line numbers
    text = "to_number,message,client_reference\n" + "\n".join(rows) + "\n"
    path = write(tmp_path, text)

    first = send(api, key, "--gateway", str(gateway), "--csv", str(path), "--batch-size", "10")

    assert first.returncode == 1, first.stderr
    bad_number, no_text = line_of(text, "ref-bad-number"), line_of(text, "ref-no-text")
    assert f"line {bad_number}: rejected: to_number:" in first.stdout
    assert f"line {no_text}: rejected: message:" in first.stdout
    assert "28 stored" in first.stdout and "2 rejected" in first.stdout
    messages = stored(client, gateway)
    assert sorted(m["client_reference"] for m in messages) == sorted(
        f"ref-{n}" for n in range(30) if n not in (3, 15))
    assert {m["message"] for m in messages if m["client_reference"] == "ref-7"} == {"hello 7"}

    again = send(api, key, "--gateway", str(gateway), "--csv", str(path), "--batch-size", "10")

    assert again.returncode == 1
    assert "0 stored, 28 already stored by an earlier run" in again.stdout
    assert f"line {bad_number}: rejected" in again.stdout
    assert len(stored(client, gateway)) == 28


def test_message_gives_the_text_of_rows_without_one(api, key, client, gateway, tmp_path):
    path = write(tmp_path, "to_number,message\n+14155551001,its own text\n+14155551002,\n")
    done = send(api, key, "--gateway", str(gateway), "--csv", str(path), "--message", "the default text")
    assert done.returncode == 0, done.stdout + done.stderr
    texts = {m["to_number"]: m["message"] for m in stored(client, gateway)}
    assert texts == {"+14155551001": "its own text", "+14155551002": "the default text"}

    only_numbers = write(tmp_path, "\ufeffto_number\n+14155551003\n")  # and a byte-order mark is fine
    done = send(api, key, "--gateway", str(gateway), "--csv", str(only_numbers), "--message", "for everyone")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {m["message"] for m in stored(client, gateway) if m["to_number"] == "+14155551003"} == {"for everyone"}


def test_wait_shows_counts_until_every_message_is_final(api, key, client, gateway, tmp_path):
    path = write(tmp_path, "to_number,message\n" + "".join(f"+1415555{2000 + n},wait {n}\n" for n in range(6)))

    done = send(api, key, "--gateway", str(gateway), "--csv", str(path), "--batch-size", "4", "--wait",
                "--timeout", "60", "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["stored"] == 6 and summary["rejected"] == [] and len(summary["batch_ids"]) == 2
    assert summary["counts"] == {"delivered": 6} and summary["final"] == 6 and not summary["timed_out"]
    assert "6/6 final: delivered 6" in done.stderr  # the live counts, a line each time they change
    assert {m["state"] for m in stored(client, gateway)} == {"delivered"}


@pytest.mark.parametrize("header, args, problem", [
    ("to_number,message,colour", (), "unknown column 'colour'"),
    ("to_number,client_reference", (), "no message column"),
    ("phone,message", (), "unknown column 'phone'"),
])
def test_a_bad_header_is_a_usage_error_and_nothing_is_sent(api, key, client, gateway, tmp_path, header, args,
                                                           problem):
    path = write(tmp_path, f"{header}\n+14155551001,hello\n")
    done = send(api, key, "--gateway", str(gateway), "--csv", str(path), *args)
    assert done.returncode == 2
    assert problem in done.stderr and "nothing was sent" in done.stderr
    assert stored(client, gateway) == []


def test_a_wrong_key_stops_at_once_and_is_never_printed(api, key, client, gateway, tmp_path):
    path = write(tmp_path, "to_number,message\n+14155551001,hello\n")
    wrong = "smsgw_wrong_key_that_must_stay_private_0123456789"
    done = send(api, wrong, "--gateway", str(gateway), "--csv", str(path), "--api-key", wrong, use_env_key=False)
    assert done.returncode == 1
    assert "401" in done.stderr and "SMSGW_API_KEY" in done.stderr
    assert stored(client, gateway) == []


def test_an_unknown_gateway_stops_with_a_clear_message(api, key, tmp_path):
    path = write(tmp_path, "to_number,message\n+14155551001,hello\n")
    done = send(api, key, "--gateway", "999999", "--csv", str(path))
    assert done.returncode == 1
    assert "404" in done.stderr and "no SMS gateway has id 999999" in done.stderr


def test_on_a_terminal_the_progress_is_one_line_redrawn(api, key, client, gateway, tmp_path):
    path = write(tmp_path, "to_number,message\n" + "".join(f"+1415555{3000 + n},tty {n}\n" for n in range(5)))
    env = {**api.env, "SMSGW_API_URL": api.url, "SMSGW_API_KEY": key}
    main, terminal = pty.openpty()
    process = subprocess.Popen([*SMSGW, "send", "--gateway", str(gateway), "--csv", str(path), "--batch-size", "2"],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    out = process.stdout.read().decode()
    assert process.wait(timeout=60) == 0
    assert b"\r[" in drawn and b"5/5 rows" in drawn and b"chunk" not in drawn  # no log lines on a terminal
    assert "5 stored" in out and key not in out and key.encode() not in drawn
    assert len(stored(client, gateway)) == 5


def test_the_cli_checks_its_arguments():
    bad = run_smsgw(dict(os.environ), "send", "--gateway", "1", "--csv", "x.csv", "--batch-size", "0", check=False)
    assert bad.returncode == 2 and "--batch-size" in bad.stderr


# --- the pure parts -----------------------------------------------------------------


def test_line_numbers_are_the_files_own():
    data = ('\ufeffto_number,message,client_reference\r\n'
            '+14155550001,"two\nlines",a\r\n'
            '\r\n'
            '+14155550002,plain,\r\n'
            '+14155550003,x,y,extra cell\r\n').encode()
    sheet = bulk_send.read_csv(data, None)
    assert sheet.rows == [
        Row(2, {"to_number": "+14155550001", "message": "two\nlines", "client_reference": "a"}),
        Row(5, {"to_number": "+14155550002", "message": "plain"}),
    ]
    assert [(r.line, r.field) for r in sheet.rejected] == [(6, "")]


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"to_number,message\n", "no rows"),
    (b"to_number,to_number,message\n1,2,3\n", "named twice"),
    (b"message\nhello\n", "to_number column is required"),
    (b"to_number,message\n+1,caf\xe9\n", "not UTF-8 (line 2)"),
])
def test_a_file_that_cannot_be_read_is_a_usage_error(data, problem):
    with pytest.raises(UsageError, match=re.escape(problem)):
        bulk_send.read_csv(data, None)


def test_server_errors_name_the_files_lines():
    rows = [Row(4, {}), Row(9, {})]
    assert bulk_send.row_errors({"messages.1.to_number": ["bad"], "messages.0": ["not an object"]}, rows) == [
        Rejected(9, "to_number", "bad"), Rejected(4, "", "not an object")]
    assert bulk_send.row_errors({"messages": ["too many"]}, rows) is None
    assert bulk_send.row_errors({"Idempotency-Key": ["used"]}, rows) is None
    assert bulk_send.row_errors({"messages.2.to_number": ["no such row"]}, rows) is None


def test_idempotency_keys_follow_the_request():
    digest = bulk_send.file_digest(b"to_number\n1\n", 3, "hi", 500)
    rows = [Row(2, {}), Row(3, {})]
    assert bulk_send.chunk_key(digest, 0, rows, True) == bulk_send.chunk_key(digest, 0, rows, True)
    assert bulk_send.chunk_key(digest, 0, rows, True) != bulk_send.chunk_key(digest, 1, rows, True)
    assert bulk_send.chunk_key(digest, 0, rows[1:], False) != bulk_send.chunk_key(digest, 0, rows, True)
    assert digest != bulk_send.file_digest(b"to_number\n1\n", 3, "other text", 500)
    assert digest != bulk_send.file_digest(b"to_number\n1\n", 4, "hi", 500)


def test_a_log_gets_one_line_per_change_of_counts():
    stream = io.StringIO()
    progress = bulk_send.Progress(stream, tty=False)
    for counts in ({"queued": 2}, {"queued": 2}, {"submitted": 1, "delivered": 1}):
        progress.counts(counts, counts.get("delivered", 0), 2)
    assert stream.getvalue().splitlines() == ["0/2 final: queued 2", "1/2 final: submitted 1, delivered 1"]


def test_a_503_is_tried_again_with_the_same_idempotency_key(stub, tmp_path):
    """The API answering 503 (its database away, say): the chunk goes again, under the same key."""
    stub.upcoming.append(Reply(503, b'{"message": "Service unavailable."}'))
    stub.answer(202, {"message": "1 SMS accepted", "data": [{}], "meta": {"batch_id": 41, "count": 1}})
    path = write(tmp_path, "to_number,message\n+14155551001,hello\n")
    env = {**os.environ, "SMSGW_API_URL": f"http://127.0.0.1:{stub.port}", "SMSGW_API_KEY": "k" * 40}
    done = run_smsgw(env, "send", "--gateway", "7", "--csv", str(path), "--json", check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["batch_ids"] == [41]
    keys = [{k.lower(): v for k, v in r.headers.items()}["idempotency-key"] for r in stub.received]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert [r.path for r in stub.received] == ["/api/sms-gateways/7/messages"] * 2


def test_wait_gives_up_at_the_timeout_and_says_so(api, key, client, gateway, simulator, tmp_path):
    knobs = f"http://127.0.0.1:{simulator}/_simulator/config"
    assert httpx.post(knobs, json={"throw": False}).status_code == 200  # accepted, but no receipt ever comes
    try:
        path = write(tmp_path, "to_number,message\n+14155551001,never delivered\n")
        done = send(api, key, "--gateway", str(gateway), "--csv", str(path), "--wait", "--timeout", "2", "--json")
    finally:
        httpx.post(knobs, json={"throw": True})
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["stored"] == 1 and summary["timed_out"] and summary["final"] == 0
    assert "0/1 final" in done.stderr


def test_a_key_that_may_not_read_can_send_but_not_wait(api, key, client, gateway, tmp_path):
    sender = run_smsgw(api.env, "apikey", "create", "--name", "send only", "--scope", "messages:send"
                       ).stdout.strip().splitlines()[-1]
    path = write(tmp_path, "to_number,message\n+14155551001,hello\n")
    done = send(api, sender, "--gateway", str(gateway), "--csv", str(path), "--wait")
    assert done.returncode == 1
    assert "1 stored" in done.stdout and "403" in done.stderr and "messages:read" in done.stderr
    assert len(stored(client, gateway)) == 1


def test_an_api_url_that_is_not_the_api_stops_with_a_clear_message(stub, tmp_path):
    stub.answer(200, "<html>a web server</html>", content_type="text/html")
    path = write(tmp_path, "to_number,message\n+14155551001,hello\n")
    env = {**os.environ, "SMSGW_API_URL": f"http://127.0.0.1:{stub.port}", "SMSGW_API_KEY": "k" * 40}
    done = run_smsgw(env, "send", "--gateway", "7", "--csv", str(path), check=False)
    assert done.returncode == 1
    assert "is --api-url (SMSGW_API_URL) smsgw's API?" in done.stderr and "Traceback" not in done.stderr
