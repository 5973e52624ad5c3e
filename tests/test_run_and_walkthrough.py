"""``make run`` as a new user meets it: the stack comes up, the README's walk-through
works against it, and Ctrl-C stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.servers import ROOT, free_port, run_smsgw, wait_until


@pytest.fixture
def stack(tmp_path):
    env = run_env(tmp_path)
    api_port, sim_port, guard_port = (env[f"SMSGW_{name}_PORT"] for name in ("API", "SIMULATOR", "GUARD"))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["scripts/run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until(lambda: "smsgw is running" in log.read_text() or process.poll() is not None,
                   timeout=120, what="make run's banner")
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
    assert process.wait(timeout=20) == 0
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=20, what="the stack to stop")
    for url in (f"{api}/healthz", f"{guard}/_guard/health"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)


def run_env(tmp_path, **overrides: str) -> dict[str, str]:
    """make run's environment on free ports of its own (and a database of its own)."""
    return {
        **os.environ,
        "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "SMSGW_API_PORT": str(free_port()),
        "SMSGW_SIMULATOR_PORT": str(free_port()),
        "SMSGW_GUARD_PORT": str(free_port()),
        "SMSGW_GUARD_CONFDIR": str(tmp_path / "guard"),
        "SMSGW_METRICS_PORT": str(free_port()), "SMSGW_GUARD_METRICS_PORT": str(free_port()),
        **overrides,
    }


def run_to_the_end(env: dict[str, str]) -> subprocess.CompletedProcess:
    """scripts/run, expected to stop on its own; the deadline is generous (a busy machine),
    and well under the 60 s the script waits on a child that is alive but silent."""
    process = subprocess.Popen(["scripts/run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail("scripts/run did not stop on its own:\n" + output)
    return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.mark.parametrize("variable, what", [("SMSGW_API_PORT", "the API"), ("SMSGW_GUARD_PORT", "the guard"),
                                            ("SMSGW_SIMULATOR_PORT", "the Jasmin simulator")])
def test_make_run_stops_on_a_taken_port_and_names_it(tmp_path, variable, what):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_to_the_end(run_env(tmp_path, **{variable: str(port)}))
    assert done.returncode == 1, done.stdout
    assert f"cannot start {what}: port {port} on 127.0.0.1 ({variable}) is already in use" in done.stdout
    assert f"pid {os.getpid()}" in done.stdout  # the process that holds it: this test
    assert "smsgw is running" not in done.stdout
    assert not (tmp_path / "run.db").exists()  # it stopped before touching anything


def test_make_run_stops_when_a_child_dies_at_start(tmp_path):
    # The guard cannot make its folder (a file is in the way): it exits at start.
    (tmp_path / "a-file").write_text("")
    env = run_env(tmp_path, SMSGW_GUARD_CONFDIR=str(tmp_path / "a-file" / "guard"))
    done = run_to_the_end(env)
    assert done.returncode == 1, done.stdout
    assert "the guard (smsgw guard) exited before it answered" in done.stdout
    assert "smsgw is running" not in done.stdout
    # and the others it had started are stopped
    for port in (env["SMSGW_API_PORT"], env["SMSGW_SIMULATOR_PORT"]):
        wait_until(lambda: httpx_refused(f"http://127.0.0.1:{port}/"), timeout=20, what=f"port {port} to close")


def test_make_run_stops_naming_a_child_that_dies_later(stack):
    env, api, simulator, guard, process, log = stack
    simulator_pid = next(pid for pid in children_of(process.pid) if "simulator" in command_of(pid))
    os.kill(simulator_pid, signal.SIGKILL)
    assert process.wait(timeout=30) == 1
    assert "the Jasmin simulator (smsgw simulator)" in log.read_text().split("smsgw is running")[1]
    wait_until(lambda: httpx_refused(f"{api}/healthz") and httpx_refused(f"{guard}/_guard/health"),
               timeout=20, what="the stack to stop")


def test_ctrl_c_while_starting_exits_0(tmp_path):
    log = tmp_path / "run.log"
    env = run_env(tmp_path)
    with open(log, "wb") as out:
        process = subprocess.Popen(["scripts/run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until(lambda: "schema is up to date" in log.read_text() or process.poll() is not None,
                   timeout=60, what="make run to migrate")
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def httpx_refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


def command_of(pid: int) -> str:
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout


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


def test_ctrl_c_in_a_terminal_stops_make_run_with_exit_0(tmp_path):
    """What a user does: `make run` in a terminal, then Ctrl-C (the terminal's ^C, not a
    signal sent to make: make would report one as status 130)."""
    import pty
    import select

    env = run_env(tmp_path)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: make run, on the pseudo-terminal
        os.chdir(ROOT)
        os.execvpe("make", ["make", "--no-print-directory", "run"], env)
    seen, exit_status = bytearray(), []

    def read_some() -> None:
        if select.select([terminal], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):  # the terminal closed: make exited
                seen.extend(os.read(terminal, 4096))

    def exited() -> bool:
        read_some()
        if not exit_status:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_status.append(os.waitstatus_to_exitcode(status))
        return bool(exit_status)

    try:
        wait_until(lambda: exited() or b"smsgw is running" in seen, timeout=120, what="make run's banner")
        assert not exit_status, seen.decode(errors="replace")
        os.write(terminal, b"\x03")
        wait_until(exited, timeout=60, what="make run to stop")
    finally:
        if not exit_status:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert exit_status == [0], seen.decode(errors="replace")
    assert b"smsgw is running" in seen
