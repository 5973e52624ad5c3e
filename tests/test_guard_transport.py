"""The guard's transport, attacked over real sockets: HTTP/2 smuggling, oversized
and slow request heads, connection floods, forwarded headers, mitmproxy's own
error pages, and a database path that does not exist.

The upstream here is ``RecordingUpstream``: a raw socket server that keeps the
exact bytes it receives and parses them as a strict HTTP/1.1 server (h11) would,
so "the API saw one request, framed like this" is checked on the wire.
"""

from __future__ import annotations

import json
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import h11
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest
from mitmproxy.test import taddons, tflow

from guard.addon import ADMITTED, Guard
from tests.servers import StubGateway, free_port, raw_request, start_api, start_guard, wait_until

MB = 1024 * 1024


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, list[str]]
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


@dataclass
class RecordingUpstream:
    """Records every byte each connection sends and every request a strict HTTP/1.1
    parser finds in them; answers each request 200 ``{"message": "DLR received"}``."""

    raw: list[bytearray] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    open_connections: int = 0

    def start(self) -> "RecordingUpstream":
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def clear(self) -> None:
        with self.lock:
            self.raw.clear()
            self.requests.clear()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.open_connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raw = bytearray()
        with self.lock:
            self.raw.append(raw)
        parser = h11.Connection(h11.SERVER)
        current: Seen | None = None
        try:
            with conn:
                while data := conn.recv(65536):
                    raw += data
                    parser.receive_data(data)
                    while (event := parser.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                        if isinstance(event, h11.Request):
                            headers: dict[str, list[str]] = {}
                            for name, value in event.headers:
                                headers.setdefault(name.decode().lower(), []).append(value.decode("latin-1"))
                            current = Seen(event.method.decode(), event.target.decode("latin-1"), headers)
                            with self.lock:
                                self.requests.append(current)
                        elif isinstance(event, h11.Data):
                            current.body += bytes(event.data)
                        elif isinstance(event, h11.EndOfMessage):
                            body = b'{"message": "DLR received"}'
                            conn.sendall(parser.send(h11.Response(status_code=200, headers=[
                                ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
                                + parser.send(h11.Data(data=body)) + parser.send(h11.EndOfMessage()))
                            parser.start_next_cycle()
        except (h11.ProtocolError, OSError):
            pass
        finally:
            with self.lock:
                self.open_connections -= 1


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def json_answer(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An API (for gateways, tokens and events), two gateways, a recording upstream
    and a guard in front of it (SQLite: what is tested here is the transport)."""
    workdir = tmp_path_factory.mktemp("transport")
    key = "transport-admin-key-" + "x" * 32
    api = start_api(workdir, SMSGW_ADMIN_KEY=key)
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    one, two = (admin.post("/api/sms-gateways", json={"name": name, "server_host": "127.0.0.1"}).json()["data"]
                for name in ("one", "two"))
    upstream = RecordingUpstream().start()
    guard = start_guard(workdir, api.env, upstream.url)
    yield {"api": api, "admin": admin, "one": one, "two": two, "upstream": upstream, "guard": guard,
           "workdir": workdir}
    guard.process.stop()
    upstream.stop()
    admin.close()
    api.process.stop()


@pytest.fixture
def upstream(world):
    world["upstream"].clear()
    return world["upstream"]


def receipt_target(gateway: dict) -> str:
    return f"/webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']}"


def receipt_still_works(world) -> None:
    status, body = raw_request(world["guard"].port, "POST", receipt_target(world["two"]))
    assert (status, body) == (200, b'{"message": "DLR received"}')


# --- finding 1: HTTP/2 -> HTTP/1.1 request smuggling ------------------------------


def test_http2_is_refused_and_cannot_smuggle_a_receipt_for_another_gateway(world, tmp_path):
    """A leaked token of gateway 2, and an HTTP/2 request without content-length
    whose body is a whole HTTP/1.1 receipt for gateway 1: the API must never see
    a request for gateway 1, and whatever it sees is framed by Content-Length."""
    upstream = RecordingUpstream().start()
    guard = start_guard(tmp_path, world["api"].env, upstream.url)
    one, two = world["one"], world["two"]
    forged = (f"POST /webhooks/jasmin/{one['id']}/dlr HTTP/1.1\r\nHost: api\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 32\r\n\r\n"
              "id=forged&message_status=DELIVRD").encode()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as plain, \
                context.wrap_socket(plain, server_hostname="localhost") as tls:
            negotiated = tls.selected_alpn_protocol()
            h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            h2conn.initiate_connection()
            h2conn.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
                                    (":path", receipt_target(two)),
                                    ("content-type", "application/x-www-form-urlencoded")])
            h2conn.send_data(1, forged, end_stream=True)
            tls.sendall(h2conn.data_to_send())
            finished = False
            while not finished:  # until the stream ends or the guard hangs up
                try:
                    data = tls.recv(65536)
                except (ConnectionResetError, TimeoutError, ssl.SSLError):
                    break
                if not data:
                    break
                try:
                    events = h2conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break  # not HTTP/2 coming back: refused
                finished = any(isinstance(e, (h2.events.StreamEnded, h2.events.ConnectionTerminated))
                               for e in events)
                tls.sendall(h2conn.data_to_send())
    finally:
        guard.process.stop()  # closes its upstream connections: the recorder has seen everything
    wait_until(lambda: upstream.open_connections == 0, what="the guard's upstream connections to close")
    upstream.stop()
    assert [r.target for r in upstream.requests if f"/{one['id']}/dlr" in r.target] == []
    assert len(upstream.requests) <= 1
    for request in upstream.requests:
        assert request.header("content-length") == [str(len(request.body))]
        assert request.header("transfer-encoding") == []
    assert negotiated != "h2"


def test_every_admitted_request_leaves_with_an_exact_content_length():
    """The framing is fixed in the hook that runs once the whole body is read, so it
    holds for any client protocol: an HTTP/2 flow without content-length gets one."""
    guard = Guard(store=None)
    with taddons.context(guard):
        flow = tflow.tflow()
        flow.request.http_version = "HTTP/2.0"
        flow.request.method, flow.request.authority = "POST", ""
        flow.request.path = "/webhooks/jasmin/1/dlr"
        flow.request.headers.pop("content-length")
        flow.request.headers["Transfer-Encoding"] = "chunked"
        flow.request.data.content = b"id=x&message_status=DELIVRD"
        flow.metadata[ADMITTED] = True  # what requestheaders says of a receipt with the right token
        guard.request(flow)
    assert flow.response is None  # still admitted
    assert flow.request.headers.get_all("content-length") == [str(len(b"id=x&message_status=DELIVRD"))]
    assert "transfer-encoding" not in flow.request.headers
    assert flow.request.trailers is None


def test_cleartext_http2_prior_knowledge_reaches_nothing(world, upstream):
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2conn.initiate_connection()
    h2conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
                            (":path", receipt_target(world["two"]))], end_stream=True)
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        sock.sendall(h2conn.data_to_send())
        answer = read_until_closed(sock)
    assert not answer.startswith(b"HTTP/1.1 200")
    assert upstream.requests == []
    receipt_still_works(world)


def test_an_h2c_upgrade_is_not_forwarded(world, upstream):
    status, _ = raw_request(world["guard"].port, "GET", receipt_target(world["two"]), body=b"",
                            headers={"Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
                                     "Connection": "Upgrade, HTTP2-Settings"})
    assert status == 200
    [request] = upstream.requests
    assert request.header("upgrade") == [] and request.header("http2-settings") == []


# --- finding 2: unbounded request head ---------------------------------------------


def test_a_header_over_64_kib_is_431_in_json(world, upstream):
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        sock.sendall(b"POST " + receipt_target(world["two"]).encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"a" * (70 * 1024))  # no end of head: the guard must not wait for one
        status, headers, body = json_answer(read_until_closed(sock))
    assert status == 431 and body == {"message": "Request header fields too large."}
    assert "mitmproxy" not in headers.get("server", "")
    assert upstream.requests == []


def test_over_tls_too_a_receipt_is_served_and_an_oversized_head_is_431(world, upstream):
    """The guard autodetects TLS; behind it the same bounded HTTP/1 server reads the head."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    answers = []
    for extra in (b"", b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"):
        with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as plain, \
                context.wrap_socket(plain, server_hostname="localhost") as tls:
            tls.sendall(f"POST {receipt_target(world['two'])} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        "Content-Length: 0\r\n".encode() + extra + b"\r\n")
            answers.append(json_answer(read_until_closed(tls)))
    assert [(status, body) for status, _, body in answers] == [
        (200, {"message": "DLR received"}), (431, {"message": "Request header fields too large."})]
    assert len(upstream.requests) == 1


def test_a_big_but_bounded_head_is_still_served(world, upstream):
    status, _ = raw_request(world["guard"].port, "POST", receipt_target(world["two"]),
                            headers={"X-Padding": "p" * (32 * 1024)})
    assert status == 200 and len(upstream.requests) == 1


def test_streaming_50_mb_of_header_is_cut_off_and_memory_stays_flat(world, upstream):
    pid = world["guard"].process.popen.pid
    receipt_still_works(world)  # warm: the first request allocates what every request needs
    before = vm_rss_kb(pid)
    sent, chunk = 0, b"a" * 65536
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 50 * MB:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the guard hung up: what we want
        answer = read_until_closed(sock)
    grown = vm_rss_kb(pid) - before
    print(f"sent {sent / MB:.2f} MB before the guard hung up; RSS grew by {grown} kB")
    assert sent < 50 * MB, "the guard kept reading a header without end"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert grown < 8 * 1024
    receipt_still_works(world)


def test_bytes_pipelined_behind_a_request_in_flight_are_bounded_too(world, tmp_path):
    """While a receipt waits for the API, what the client sends next waits in a
    buffer: past 64 KiB the guard hangs up instead of holding it all."""
    release = threading.Event()
    stub = StubGateway().start()
    stub.answer(200, {"message": "DLR received"}, hold=release)
    guard = start_guard(tmp_path, world["api"].env, f"http://127.0.0.1:{stub.port}")
    pid, sent, chunk = guard.process.popen.pid, 0, b"a" * 65536
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            sock.sendall(f"POST {receipt_target(world['two'])} HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 0\r\n\r\n".encode())
            wait_until(stub.arrived.is_set, what="the receipt to reach the upstream")
            before = vm_rss_kb(pid)
            try:
                while sent < 50 * MB:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        grown = vm_rss_kb(pid) - before
    finally:
        release.set()
        guard.process.stop()
        stub.stop()
    print(f"pipelined {sent / MB:.2f} MB before the guard hung up; RSS grew by {grown} kB")
    assert sent < 50 * MB, "the guard kept buffering what came behind a request in flight"
    assert grown < 8 * 1024
    assert "Traceback" not in guard.log and "crashed" not in guard.log


def test_a_slow_head_is_cut_off_after_the_header_timeout(world, tmp_path):
    """Slowloris: a byte now and then keeps a connection active, so only a limit on
    the time to read the whole head ends it."""
    guard = start_guard(tmp_path, world["api"].env, world["upstream"].url, SMSGW_GUARD_HEADER_TIMEOUT="1")
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            sock.sendall(b"POST " + receipt_target(world["two"]).encode() + b" HTTP/1.1\r\nHost: x\r\n")
            deadline, closed, answer = time.monotonic() + 20, False, b""
            while time.monotonic() < deadline and not closed:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sock.settimeout(0.3)  # the attacker's pace: one header line every 0.3 s
                try:
                    data = sock.recv(65536)
                    answer += data
                    closed = data == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed = True
        assert closed, "a head trickled in for 20 s and the guard was still reading it"
        if answer:
            status, _, body = json_answer(answer)
            assert status == 408 and body == {"message": "Request timeout."}
    finally:
        guard.process.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(world, tmp_path):
    guard = start_guard(tmp_path, world["api"].env, world["upstream"].url, SMSGW_GUARD_IDLE_TIMEOUT="1")
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=20) as sock:
            try:
                assert sock.recv(1) == b""  # closed by the guard, long before our 20 s
            except TimeoutError:
                pytest.fail("an idle connection was still open after 20 s")
    finally:
        guard.process.stop()


# --- finding 3: connection exhaustion ----------------------------------------------


def hold_idle_connections(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            pass  # the guard's backlog is full: part of what is measured
    return held


def test_many_idle_connections_under_a_low_fd_limit_leave_room_for_a_receipt(world, tmp_path):
    guard = start_guard(tmp_path, world["api"].env, world["upstream"].url,
                        prefix=("prlimit", "--nofile=256:4096"))
    held = hold_idle_connections(guard.port, 300)
    try:
        started = time.monotonic()
        # From another address: 127.0.0.1, holding its share, is at its per-client cap.
        status, _ = raw_request(guard.port, "POST", receipt_target(world["two"]), source="127.0.0.2")
        print(f"receipt admitted with {len(held)} idle connections held, in {time.monotonic() - started:.3f} s")
        assert status == 200
    finally:
        for sock in held:
            sock.close()
        guard.process.stop()
    assert "open files limit raised to 4096" in guard.log
    assert guard.log.count("Traceback") == 0


def closed_by_peer(held: list[socket.socket]) -> Callable[[], int]:
    """A counter of the connections in ``held`` the guard has closed so far."""
    closed: set[socket.socket] = set()

    def count() -> int:
        readable, _, _ = select.select([s for s in held if s not in closed], [], [], 0)
        for sock in readable:
            try:
                if sock.recv(1) == b"":
                    closed.add(sock)
            except ConnectionResetError:
                closed.add(sock)
        return len(closed)
    return count


def test_connections_over_the_cap_are_closed_at_once_and_idle_ones_in_time(world, tmp_path):
    """With no hard limit to raise to, the guard caps its client connections below
    its file limit: the excess is closed cleanly at once, the rest when idle."""
    guard = start_guard(tmp_path, world["api"].env, world["upstream"].url, prefix=("prlimit", "--nofile=256:256"),
                        SMSGW_GUARD_IDLE_TIMEOUT="40", SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT="1000")
    held = hold_idle_connections(guard.port, 300)
    closed = closed_by_peer(held)
    try:
        cap = (256 - 64) // 2
        # Well inside the idle timeout, so that only the cap can have closed these.
        wait_until(lambda: closed() >= len(held) - cap, timeout=30, what="the excess to be closed")
        assert closed() <= len(held) - cap + 5  # the ones within the cap are held, until idle
        wait_until(lambda: closed() == len(held), timeout=120, what="idle connections to be closed")
        status, _ = raw_request(guard.port, "POST", receipt_target(world["two"]))
        assert status == 200
    finally:
        for sock in held:
            sock.close()
        guard.process.stop()
    assert "connection limit (96) reached" in guard.log
    assert guard.log.count("Traceback") == 0


def test_running_out_of_file_descriptors_logs_a_line_not_a_traceback_per_accept(world, tmp_path):
    """Past the file limit (an operator set the cap too high), accept() fails: the
    guard logs that once in a while, never a traceback each time."""
    guard = start_guard(tmp_path, world["api"].env, world["upstream"].url, prefix=("prlimit", "--nofile=256:256"),
                        SMSGW_GUARD_MAX_CONNECTIONS="5000", SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT="5000",
                        SMSGW_GUARD_IDLE_TIMEOUT="3")
    held = hold_idle_connections(guard.port, 400)
    try:
        wait_until(lambda: "out of file descriptors" in guard.log, timeout=15, what="the guard to run out")
        for sock in held:
            sock.close()
        status = None
        deadline = time.monotonic() + 30
        while status != 200 and time.monotonic() < deadline:  # accept() resumes once fds are free
            try:
                status, _ = raw_request(guard.port, "POST", receipt_target(world["two"]))
            except OSError:
                pass
        assert status == 200
    finally:
        for sock in held:
            sock.close()
        guard.process.stop()
    assert guard.log.count("Traceback") == 0
    assert guard.log.count("out of file descriptors") <= 10


# --- finding 6: X-Forwarded-For -----------------------------------------------------


def test_forwarded_headers_are_the_guards_not_the_clients(world, upstream):
    status, _ = raw_request(world["guard"].port, "POST", receipt_target(world["two"]), headers={
        "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"})
    assert status == 200
    [request] = upstream.requests
    assert request.header("x-forwarded-for") == ["127.0.0.1"]
    for name in ("x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip"):
        assert request.header(name) == [], name


def test_a_trusted_proxy_in_front_keeps_the_client_address_it_saw(world, tmp_path):
    """nginx in front of the guard (smsgw-guard-proxy.conf) sets X-Forwarded-For to
    the address it saw. From a peer the operator trusts, the guard keeps one such
    address; anything else from it (a list, not an address) is replaced by the peer."""
    upstream = world["upstream"]
    guard = start_guard(tmp_path, world["api"].env, upstream.url, SMSGW_GUARD_TRUSTED_PROXIES="127.0.0.1, ::1")
    try:
        sent = {}
        for value in ("203.0.113.9", "203.0.113.9, 10.0.0.1", "not-an-address"):
            upstream.clear()
            assert raw_request(guard.port, "POST", receipt_target(world["two"]),
                               headers={"X-Forwarded-For": value})[0] == 200
            [request] = upstream.requests
            sent[value] = request.header("x-forwarded-for")
    finally:
        guard.process.stop()
    assert sent == {"203.0.113.9": ["203.0.113.9"], "203.0.113.9, 10.0.0.1": ["127.0.0.1"],
                    "not-an-address": ["127.0.0.1"]}


def test_trusted_proxies_must_be_addresses():
    from api.config import ConfigError, Settings

    assert Settings.from_env({"SMSGW_GUARD_TRUSTED_PROXIES": "127.0.0.1,::1"}).guard_trusted_proxies == (
        "127.0.0.1", "::1")
    assert Settings.from_env({}).guard_trusted_proxies == ()
    with pytest.raises(ConfigError, match="SMSGW_GUARD_TRUSTED_PROXIES"):
        Settings.from_env({"SMSGW_GUARD_TRUSTED_PROXIES": "nginx.internal"})


def test_a_spoofed_forwarded_for_never_becomes_the_source_address(world, tmp_path):
    api, admin = world["api"], world["admin"]
    stub = StubGateway().start()
    stub.answer(200, {"data": 'Success "xff-1'})
    guard = start_guard(tmp_path, api.env, api.url)
    try:
        gateway = admin.post("/api/sms-gateways", json={
            "name": "xff", "server_host": "127.0.0.1", "server_port": stub.port, "api_path": "secure/send",
            "default_sender_id": "X"}).json()["data"]
        message = admin.post(f"/api/sms-gateways/{gateway['id']}/send",
                             json={"to_number": "+14155550101", "message": "m"}).json()["data"]
        response = httpx.post(f"{guard.url}/webhooks/jasmin/{gateway['id']}/dlr",
                              params={"token": gateway["callback_token"]},
                              data={"id": "xff-1", "message_status": "DELIVRD"},
                              headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
        assert response.json() == {"message": "DLR received"}
        events = admin.get(f"/api/sms-messages/{message['id']}/events").json()["data"]
        receipts = [event for event in events if event["kind"] == "receipt"]
        assert receipts and {event["source_address"] for event in receipts} == {"127.0.0.1"}
    finally:
        guard.process.stop()
        stub.stop()


# --- finding 9: everything in the contract's JSON -----------------------------------


def test_upstream_down_is_json_without_the_address_or_mitmproxy(world, tmp_path):
    down = free_port()  # nothing listens there
    guard = start_guard(tmp_path, world["api"].env, f"http://127.0.0.1:{down}")
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            sock.sendall(f"POST {receipt_target(world['two'])} HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            answer = read_until_closed(sock)
    finally:
        guard.process.stop()
    status, headers, body = json_answer(answer)
    assert status in (502, 503) and set(body) == {"message"}
    assert headers["content-type"] == "application/json"
    assert str(down) not in answer.decode("latin-1")
    assert "mitmproxy" not in answer.decode("latin-1").lower()


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"POST /webhooks/jasmin/2/dlr HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /webhooks/jasmin/2/dlr HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
])
def test_a_malformed_request_is_400_in_json(world, upstream, head):
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        sock.sendall(head)
        answer = read_until_closed(sock)
    status, headers, body = json_answer(answer)
    assert status == 400 and set(body) == {"message"}
    assert "mitmproxy" not in answer.decode("latin-1").lower()
    assert upstream.requests == []


def test_a_body_over_the_limit_is_413_in_json(world, upstream):
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        sock.sendall(f"POST {receipt_target(world['two'])} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {64 * 1024 + 1}\r\n\r\n".encode())
        answer = read_until_closed(sock)
    status, _, body = json_answer(answer)
    assert status == 413 and body == {"message": "Request body too large."}
    assert upstream.requests == []


def test_the_guards_database_handle_reads_but_cannot_write(database, tmp_path):
    """SQLite opened with mode=ro; PostgreSQL sessions read-only by default."""
    import asyncio
    import sqlite3

    from api import db

    url = database.get("SMSGW_DATABASE_URL")
    if url is None:
        path = tmp_path / "readonly.db"
        sqlite3.connect(path).close()  # an existing, empty database file
        url = f"sqlite:///{path}"

    async def go():
        handle = db.make_readonly_database(url)
        await handle.connect()
        try:
            assert await handle.fetch_val("SELECT 1") == 1
            with pytest.raises(Exception) as refused:
                await handle.execute("CREATE TABLE guard_wrote_here (x INTEGER)")
            return str(refused.value)
        finally:
            await handle.disconnect()

    assert re.search(r"readonly|read-only", asyncio.run(go()))


def test_a_wrong_database_path_creates_nothing_and_the_guard_fails_closed(world, tmp_path):
    missing = tmp_path / "no-such-dir" / "smsgw.db"
    env = {**world["api"].env, "SMSGW_DATABASE_URL": f"sqlite:///{missing}"}
    guard = start_guard(tmp_path, env, world["upstream"].url)
    try:
        status, body = raw_request(guard.port, "POST", receipt_target(world["two"]))
        assert status == 503 and body == b'{"message": "Service unavailable."}'
        assert httpx.get(guard.url + "/_guard/health").status_code == 503
    finally:
        guard.process.stop()
    assert not missing.exists() and not missing.parent.exists()
    assert "cannot read its database" in guard.log


# --- what the guard relies on in mitmproxy 12.3 ---------------------------------------


def test_each_client_connection_gets_the_bounded_http1_server():
    """``guard.limits`` hands the HTTP layer our server before the layer starts; the
    layer keeps a client connection layer that is already set (mitmproxy 12.3's
    ``HttpLayer`` on ``Start``). If a new mitmproxy stops doing that, this fails."""
    from mitmproxy import options
    from mitmproxy.proxy import events
    from mitmproxy.proxy.context import Context
    from mitmproxy.proxy.layer import NextLayer
    from mitmproxy.proxy.layers.http import HTTPMode, HttpLayer

    from guard.http1 import BoundedHttp1Server
    from guard.limits import ConnectionLimits

    context = Context(tflow.tclient_conn(), options.Options())
    nextlayer = NextLayer(context)
    nextlayer.layer = HttpLayer(context, HTTPMode.transparent)
    ConnectionLimits(max_connections=10, head_timeout=3).next_layer(nextlayer)
    list(nextlayer.layer.handle_event(events.Start()))
    server = nextlayer.layer.connections[context.client]
    assert isinstance(server, BoundedHttp1Server) and server.head_timeout == 3


def test_the_head_limit_counts_the_request_line_and_headers_together():
    from guard.http1 import HEAD_LIMIT, head_too_large

    line = b"POST /webhooks/jasmin/1/dlr HTTP/1.1\r\n"
    fits = line + b"X: " + b"a" * (HEAD_LIMIT - len(line) - 7) + b"\r\n\r\n"
    assert len(fits) == HEAD_LIMIT and not head_too_large(fits + b"body" * 1000)
    assert head_too_large(line + b"X: " + b"a" * HEAD_LIMIT)  # no end in sight
    assert head_too_large(line + b"X: " + b"a" * HEAD_LIMIT + b"\r\n\r\n")  # an end, too late
    assert not head_too_large(line + b"X: a")  # short: wait for more


def test_the_connection_cap_follows_the_file_limit_unless_set():
    from guard.limits import DEFAULT_CAP, FD_RESERVE, max_connections

    assert max_connections(0, 256) == (256 - FD_RESERVE) // 2
    assert max_connections(0, 1_048_576) == DEFAULT_CAP == 4096  # not 524k connections (74 GB)
    assert max_connections(5000, 256) == 5000  # the operator's choice stands


def test_the_head_clock_runs_from_a_heads_first_byte_and_empty_lines_do_not_stop_it():
    """BoundedHttp1Server alone, driven event by event (no timers, no network)."""
    from mitmproxy import options
    from mitmproxy.proxy import commands, events
    from mitmproxy.proxy.context import Context

    from guard.http1 import BoundedHttp1Server

    context = Context(tflow.tclient_conn(), options.Options())

    def server_and_feed():
        server = BoundedHttp1Server(context, head_timeout=3)
        list(server.handle_event(events.Start()))
        return lambda event: list(server.handle_event(event))

    def clocks(produced) -> list[commands.RequestWakeup]:
        return [c for c in produced if isinstance(c, commands.RequestWakeup)]

    # Only empty lines: the first starts the clock, the others neither stop nor restart it,
    # and when it ends the connection is closed without an answer (no request was begun).
    feed = server_and_feed()
    [clock] = clocks(feed(events.DataReceived(context.client, b"\r\n")))
    assert clock.delay == 3
    for _ in range(5):
        assert clocks(feed(events.DataReceived(context.client, b"\r\n"))) == []
    assert [type(c) for c in feed(events.Wakeup(clock))] == [commands.CloseConnection]

    # Empty lines, then a head that is not done in time: 408, on the clock of the first empty line.
    feed = server_and_feed()
    [clock] = clocks(feed(events.DataReceived(context.client, b"\r\n")))
    assert clocks(feed(events.DataReceived(context.client, b"POST / HTTP/1.1\r\n"))) == []
    assert clocks(feed(events.DataReceived(context.client, b"X: 1\r\n"))) == []
    answer = feed(events.Wakeup(clock))
    assert [type(c) for c in answer] == [commands.SendData, commands.CloseConnection]
    assert answer[0].data.startswith(b"HTTP/1.1 408 ") and answer[0].data.endswith(b'{"message": "Request timeout."}')


def test_every_empty_line_before_a_request_line_is_skipped_at_once():
    """mitmproxy's parser drops one empty line per read: a request behind two, sent
    in one packet, waited for bytes that never came."""
    from mitmproxy import options
    from mitmproxy.proxy import events
    from mitmproxy.proxy.context import Context
    from mitmproxy.proxy.layers.http import _events as http_events

    from guard.http1 import BoundedHttp1Server

    context = Context(tflow.tclient_conn(), options.Options())
    server = BoundedHttp1Server(context, head_timeout=3)
    list(server.handle_event(events.Start()))
    produced = list(server.handle_event(events.DataReceived(
        context.client, b"\r\n\n\r\nGET /_guard/health HTTP/1.1\r\nHost: x\r\n\r\n")))
    heads = [c.event for c in produced if isinstance(getattr(c, "event", None), http_events.RequestHeaders)]
    assert [head.request.path for head in heads] == ["/_guard/health"]
