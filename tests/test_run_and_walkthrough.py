"""``make run`` as a new user meets it: the stack comes up, the README's walk-through
works against it, and Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.servers import ROOT, free_port, run_smsgw, wait_until


@pytest.fixture
def stack(tmp_path):
    api_port, sim_port, guard_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "SMSGW_API_PORT": str(api_port),
        "SMSGW_SIMULATOR_PORT": str(sim_port),
        "SMSGW_GUARD_PORT": str(guard_port),
        "SMSGW_GUARD_CONFDIR": str(tmp_path / "guard"),
        "SMSGW_METRICS_PORT": str(free_port()), "SMSGW_GUARD_METRICS_PORT": str(free_port()),
    }
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["scripts/run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until(lambda: "smsgw is running" in log.read_text() or process.poll() is not None,
                   timeout=60, what="make run's banner")
        assert process.poll() is None, log.read_text()
        yield (env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sim_port}",
               f"http://127.0.0.1:{guard_port}", process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")


def test_make_run_walkthrough_and_ctrl_c(stack):
    env, api, simulator, guard, process, log = stack
    banner = log.read_text()
    assert api in banner and simulator in banner and guard in banner and "smsgw apikey create" in banner

    key = run_smsgw(env, "apikey", "create", "--name", "me").stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {key}"}
    gateways = httpx.get(f"{api}/api/sms-gateways", headers=auth).json()["data"]
    demo = next(g for g in gateways if g["name"].startswith("demo"))

    sent = httpx.post(f"{api}/api/sms-gateways/{demo['id']}/send", headers=auth,
                      json={"to_number": "+14155550123", "message": "Hello from smsgw"})
    assert sent.status_code == 201, sent.text
    message = sent.json()["data"]
    assert message["delivery_status"] == "submitted"
    # the simulator saw it, with the token kept out of its listing
    seen = httpx.get(f"{simulator}/_simulator/messages").json()["data"]
    assert seen[0]["id"] == message["external_message_id"] and seen[0]["content"] == "Hello from smsgw"
    assert demo["callback_token"] not in str(seen)

    # the gateway was told to send receipts through the guard...
    assert seen[0]["dlr-url"] == f"{guard}/webhooks/jasmin/{demo['id']}/dlr?token=[redacted]"
    # ...and, like Jasmin, throws them: the message ends delivered with no setup at all
    def current():
        return httpx.get(f"{api}/api/sms-messages/{message['id']}", headers=auth).json()["data"]
    wait_until(lambda: current()["delivery_status"] == "delivrd", timeout=15, what="the simulator's receipts")
    assert current()["remote_response"]["level"] == "2"
    acks = httpx.get(f"{simulator}/_simulator/receipts").json()["data"]
    assert {(r["level"], r["acked"]) for r in acks} == {("1", True), ("2", True)}
    receipt = {"id": message["external_message_id"], "message_status": "DELIVRD"}
    refused = httpx.post(f"{guard}/webhooks/jasmin/{demo['id']}/dlr?token=not-the-token", data=receipt)
    assert refused.status_code == 403 and refused.json() == {"message": "Forbidden."}
    accepted = httpx.post(f"{guard}/webhooks/jasmin/{demo['id']}/dlr?token={demo['callback_token']}", data=receipt)
    assert accepted.json() == {"message": "DLR received"}
    now = httpx.get(f"{api}/api/sms-messages/{message['id']}", headers=auth).json()["data"]
    assert now["delivery_status"] == "delivrd" and now["delivered_at"]

    children = children_of(process.pid)
    assert len(children) >= 3  # simulator, API, guard
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    process.wait(timeout=20)
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=20, what="the stack to stop")
    for url in (f"{api}/healthz", f"{guard}/_guard/health"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)


def test_a_second_make_run_reuses_the_demo_gateway(tmp_path):
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    run_smsgw(env, "migrate")
    first = run_smsgw(env, "demo").stdout.strip()
    moved = run_smsgw({**env, "SMSGW_SIMULATOR_PORT": "9123"}, "demo").stdout.strip()
    assert first == moved == "1"
    import sqlite3
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("SELECT count(*), max(server_port) FROM sms_gateways").fetchone() == (1, 9123)


def test_find_python_explains_what_to_install(tmp_path):
    # A PATH with no Python at all, and no pyenv: the script must say what to do.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "cat"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    result = subprocess.run([str(bin_dir / "bash"), "scripts/find-python"], cwd=ROOT, capture_output=True,
                            text=True, env={"PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "Python 3.12 or newer" in result.stderr and "make install" in result.stderr


def test_find_python_finds_one(tmp_path):
    result = subprocess.run(["scripts/find-python"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0
    found = result.stdout.strip()
    version = subprocess.run([found, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                             capture_output=True, text=True).stdout.strip()
    assert version == "True"
