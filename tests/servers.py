"""Real processes and servers for the tests: the API under uvicorn, and a stub gateway.

Everything here listens on a free loopback port and is waited on by condition
(a health check answering, a request arriving), never by a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
SMSGW = [sys.executable, "-m", "api.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def run_smsgw(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SMSGW, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=60,
    )


@dataclass
class Process:
    """A child process whose output goes to a log file the tests can read."""

    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(env: dict[str, str], args: list[str], log_path: Path) -> Process:
    handle = open(log_path, "ab")
    popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return Process(popen, log_path)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Api:
    url: str
    env: dict[str, str]
    process: Process

    @property
    def log(self) -> str:
        return self.process.log()


def start_api(workdir: Path, **overrides: str) -> Api:
    """Migrate a fresh SQLite database in ``workdir`` and serve the API on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "SMSGW_DATABASE_URL": f"sqlite:///{workdir / 'smsgw.db'}",
        "SMSGW_API_HOST": "127.0.0.1",
        "SMSGW_API_PORT": str(port),
        "SMSGW_GATEWAY_TIMEOUT": "1",
        "SMSGW_METRICS_PORT": "0",  # off: tests run side by side; tests/test_metrics.py gives a free port
        **overrides,
    }
    run_smsgw(env, "migrate")
    process = start(env, [*SMSGW, "api"], workdir / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_for_start(process, lambda: healthy(url + "/healthz"), "the API")
    return Api(url, env, process)


def wait_for_start(process: Process, ready: Callable[[], bool], what: str) -> None:
    """Wait until ``ready()``; fail with the process's log if it exits or never gets there."""
    try:
        # generous: two spawned API workers took 12-14 s to answer on this busy 2-core machine
        wait_until(lambda: ready() or process.popen.poll() is not None, timeout=60, what=f"{what} to answer")
    except TimeoutError:
        process.stop()
        raise
    if process.popen.poll() is not None:
        raise RuntimeError(f"{what} exited at start:\n" + process.log())


@dataclass
class Guard:
    url: str
    port: int
    process: Process

    @property
    def log(self) -> str:
        return self.process.log()


def start_guard(workdir: Path, env: dict[str, str], upstream: str, port: int | None = None,
                prefix: tuple[str, ...] = (), **overrides: str) -> Guard:
    """``smsgw guard`` on ``port`` (a free one by default), reading tokens from ``env``'s
    database, forwarding to ``upstream``. ``prefix`` runs it under another command
    (e.g. ``prlimit --nofile=256:4096``) that execs it, so the pid stays the guard's."""
    port = port or free_port()
    env = {**env, "SMSGW_API_URL": upstream, "SMSGW_GUARD_HOST": "127.0.0.1",
           "SMSGW_GUARD_PORT": str(port), "SMSGW_GUARD_CONFDIR": str(workdir / f"guard-{port}"),
           "SMSGW_GUARD_METRICS_PORT": "0", **overrides}  # metrics off unless asked for: tests run side by side
    process = start(env, [*prefix, *SMSGW, "guard"], workdir / f"guard-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_for_start(process, lambda: httpx_status(url + "/_guard/health") is not None, "the guard")
    return Guard(url, port, process)


def httpx_status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return None


def raw_request(port: int, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"id=x&message_status=DELIVRD", host: str = "127.0.0.1",
                source: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (httpx would normalise the target),
    from the loopback address ``source`` when given (any 127/8 address will do)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close",
             "Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# --- PostgreSQL ------------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get("SMSGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def services_required() -> bool:
    """CI sets SMSGW_REQUIRE_SERVICES=1: a missing service is then a failure, never a skip."""
    return os.environ.get("SMSGW_REQUIRE_SERVICES") == "1"


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_postgres_database() -> str:
    """A new, empty database of its own for one test run; returns its URL."""
    import asyncio
    import uuid

    name = f"smsgw_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def postgres_database_or_skip() -> str:
    """``create_postgres_database()`` for a test; when PostgreSQL cannot be reached the
    test is skipped, or fails under SMSGW_REQUIRE_SERVICES=1 (CI): never a silent pass."""
    import pytest

    try:
        return create_postgres_database()
    except Exception as exc:  # refused, timed out, auth failed, no driver: all "unreachable"
        if services_required():
            pytest.fail(f"PostgreSQL is required (SMSGW_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc}")


def drop_postgres_database(url: str) -> None:
    import asyncio

    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- the stub gateway ---------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hold: threading.Event | None = None  # answer only once this is set
    hang_up: bool = False                # close the connection without answering


@dataclass
class StubGateway:
    """A real HTTP server that records every request and answers with ``reply``."""

    reply: Reply = field(default_factory=Reply)
    upcoming: list[Reply] = field(default_factory=list)  # answered first, in order, then ``reply``
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "StubGateway":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                stub.received.append(Received(self.command, self.path, dict(self.headers), body))
                stub.arrived.set()
                reply = stub.upcoming.pop(0) if stub.upcoming else stub.reply
                if reply.hold is not None:
                    reply.hold.wait(timeout=30)
                if reply.hang_up:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_any

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 drops connections that arrive together

            def handle_error(self, request, client_address):
                # A client that gave up (a timed-out send) before the answer was written: that is
                # what such a test is about, not a stack trace in its output. Anything else is printed.
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.reply.hold is not None:
            self.reply.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, status: int = 200, body: bytes | str | dict = b"", content_type: str = "application/json", **kw) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.reply = Reply(status=status, body=body, content_type=content_type, **kw)


# --- the webhook receiver -----------------------------------------------------


@dataclass
class WebhookReceiver:
    """``smsgw webhook-receiver`` as a real process: what it received, and a script of answers."""

    url: str
    port: int
    process: Process

    def events(self, path: str | None = None) -> list[dict]:
        found = httpx.get(self.url + "/_receiver/events", timeout=30).json()["data"]
        return [e for e in found if path is None or e["path"] == path]

    def script(self, answers: list[dict], then: dict | None = None) -> None:
        body = {"answers": answers, **({"then": then} if then is not None else {})}
        httpx.post(self.url + "/_receiver/script", json=body, timeout=30).raise_for_status()

    def trust(self, *secrets: str) -> None:
        """Verify what comes from now on with these secrets (with smsgw's own verifier)."""
        httpx.post(self.url + "/_receiver/secrets", json={"secrets": list(secrets)}, timeout=30).raise_for_status()

    def stop(self) -> None:
        self.process.stop()


def start_webhook_receiver(workdir: Path, port: int | None = None, *args: str) -> WebhookReceiver:
    """A receiver with no secret: it answers 204 and records every request whole (the tests
    verify each signature themselves, with the ``standardwebhooks`` package)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "SMSGW_WEBHOOK_SECRET"}
    process = start(env, [*SMSGW, "webhook-receiver", "--port", str(port), "--test-controls", *args],
                    workdir / f"receiver-{port}.log")
    wait_for_start(process, lambda: healthy(url + "/_receiver/events"), "the webhook receiver")
    return WebhookReceiver(url, port, process)


def insert_webhook_endpoint(env: dict[str, str], url: str, gateway_id: int, secret: str | None = None) -> int:
    """An endpoint written straight into the database, past the API's checks (as an older
    version, or a host whose DNS changed since, would have left it); its id."""
    script = (
        "import asyncio, sys\n"
        "from api import db, clock\n"
        "from api.tables import webhook_endpoints as t\n"
        "from api.webhook_signing import new_secret\n"
        "async def main():\n"
        "    d = db.make_database(sys.argv[1]); await d.connect(); now = clock.now_iso()\n"
        "    print(await d.fetch_val(t.insert().values(url=sys.argv[2], events=['message.status_updated'],\n"
        "        gateway_ids=[int(sys.argv[3])], is_active=True, secret=sys.argv[4] or new_secret(),\n"
        "        created_at=now, updated_at=now).returning(t.c.id)))\n"
        "    await d.disconnect()\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", script, env["SMSGW_DATABASE_URL"], url, str(gateway_id), secret or ""],
                         capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1])


# --- error replies --------------------------------------------------------------


def error_body(response) -> dict:
    """An error reply's body (an httpx or mitmproxy response) without its ``request_id``, once
    that is checked to be the id the reply's ``X-Request-ID`` names: the rest is what a test compares."""
    body = dict(response.json())
    assert body.pop("request_id") == response.headers["X-Request-ID"], body
    return body
