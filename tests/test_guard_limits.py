"""What one client can take from the standalone guard, over real sockets: the
connection slots (a per-client cap), time (a head clock that blank lines do not
stop) and, when the guard stops, its log (no traceback per open connection).

The guard here forwards to ``RecordingUpstream`` (tests/test_guard_transport.py);
the API is there for the gateway and its token. Loopback accepts any 127/8
source address, so a second client is a socket bound to 127.0.0.2.
"""

from __future__ import annotations

import select
import socket
import time
from types import SimpleNamespace

import httpx
import pytest

from guard import limits
from tests.servers import raw_request, start_api, start_guard
from tests.test_guard_transport import RecordingUpstream

HEALTH = b"GET /_guard/health HTTP/1.1\r\nHost: guard\r\n\r\n"  # keep-alive: the connection stays open


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("limits")
    key = "limits-admin-key-" + "x" * 32
    api = start_api(workdir, SMSGW_ADMIN_KEY=key)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as admin:
        gateway = admin.post("/api/sms-gateways", json={"name": "limits", "server_host": "127.0.0.1"}).json()["data"]
    upstream = RecordingUpstream().start()
    yield {"api": api, "gateway": gateway, "upstream": upstream}
    upstream.stop()
    api.process.stop()


def guard_for(world, tmp_path, **overrides):
    return start_guard(tmp_path, world["api"].env, world["upstream"].url, **overrides)


def receipt(world, port: int, source: str) -> int | str:
    """The status a receipt from ``source`` gets, or the error that ended it."""
    gateway = world["gateway"]
    try:
        return raw_request(port, "POST", f"/webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']}",
                           source=source)[0]
    except (OSError, IndexError) as exc:  # reset, or closed without an answer
        return type(exc).__name__


def health_on(sock: socket.socket) -> bool:
    """Ask for the guard's health on an open keep-alive connection: True when it
    answered (the guard holds the connection), False when it closed it. Any answer
    counts: on a loaded machine the health check itself may say 503 (its database
    read), and what is measured here is the connection, not the health."""
    try:
        sock.sendall(HEALTH)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.1 ")


def connections(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
            for _ in range(count)]


# --- finding 1a: one address cannot take every connection -----------------------------


def test_one_client_holding_every_connection_leaves_room_for_another_address(world, tmp_path):
    """One client opens as many connections as the whole cap and keeps each open
    (a keep-alive health check on each; long timeouts here, so that only a
    per-client cap can make room). A receipt from another address is admitted."""
    guard = guard_for(world, tmp_path, SMSGW_GUARD_MAX_CONNECTIONS="20", SMSGW_GUARD_IDLE_TIMEOUT="120",
                      SMSGW_GUARD_HEADER_TIMEOUT="120")
    held = connections(guard.port, 20)
    try:
        kept = sum(health_on(sock) for sock in held)
        status = receipt(world, guard.port, source="127.0.0.2")
    finally:
        for sock in held:
            sock.close()
        guard.process.stop()
    print(f"the one client kept {kept} of 20 connections")
    assert status == 200
    assert kept == max(8, 20 // 16)  # SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT's default
    assert "per-client connection limit (8) reached" in guard.log
    assert guard.log.count("Traceback") == 0


def test_a_trusted_proxy_in_front_is_not_held_to_the_per_client_cap(world, tmp_path):
    """Every connection from nginx in front has nginx's address: capping it per
    client would cap every gateway behind nginx together."""
    guard = guard_for(world, tmp_path, SMSGW_GUARD_MAX_CONNECTIONS="20", SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT="3",
                      SMSGW_GUARD_TRUSTED_PROXIES="127.0.0.1", SMSGW_GUARD_IDLE_TIMEOUT="120")
    from_proxy, from_client = connections(guard.port, 10), connections(guard.port, 5, source="127.0.0.2")
    try:
        kept_proxy = sum(health_on(sock) for sock in from_proxy)
        kept_client = sum(health_on(sock) for sock in from_client)
    finally:
        for sock in from_proxy + from_client:
            sock.close()
        guard.process.stop()
    assert (kept_proxy, kept_client) == (10, 3)


def test_a_setting_for_the_per_client_cap():
    from api.config import ConfigError, Settings

    assert Settings.from_env({}).guard_max_connections_per_client == 0  # derived from the cap
    assert Settings.from_env({"SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT": "40"}).guard_max_connections_per_client == 40
    with pytest.raises(ConfigError, match="SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT"):
        Settings.from_env({"SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT": "many"})


def test_the_per_client_cap_follows_the_cap_unless_set():
    assert limits.max_connections_per_client(0, 4096) == 256
    assert limits.max_connections_per_client(0, 20) == 8
    assert limits.max_connections_per_client(0, 5) == 5  # never more than the cap itself
    assert limits.max_connections_per_client(40, 4096) == 40  # the operator's choice stands


def test_the_derived_cap_stays_within_memory_whatever_the_file_limit():
    """About 142 kB a connection: the default is at most 4096 (about 0.6 GB), not
    half of a hard limit of a million (74 GB)."""
    assert limits.max_connections(0, 256) == (256 - 64) // 2
    assert limits.max_connections(0, 1_048_576) == 4096
    assert limits.max_connections(0, 524_288) == 4096
    assert limits.max_connections(10_000, 256) == 10_000  # the operator's choice stands


def test_a_client_is_its_address_and_an_ipv6_client_its_64_bit_prefix():
    """An IPv6 host is usually given a whole /64: one address each would be no cap."""
    assert limits.client_key("192.0.2.7") == "192.0.2.7"
    assert limits.client_key("2001:db8:1:2::1") == limits.client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limits.client_key("2001:db8:1:3::1") != limits.client_key("2001:db8:1:2::1")
    assert limits.client_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4 on a dual-stack socket


def test_connection_accounting_per_client_and_in_all():
    guard_limits = limits.ConnectionLimits(max_connections=5, head_timeout=10, per_client=2, trusted=("10.0.0.1",))

    def connect(address: str, number: int):
        client = SimpleNamespace(id=f"{address}-{number}", peername=(address, 40000 + number), error=None)
        guard_limits.client_connected(client)
        return client

    mine = [connect("192.0.2.7", n) for n in range(3)]
    assert [c.error is None for c in mine] == [True, True, False]
    guard_limits.client_disconnected(mine[2])  # a refused connection frees nothing it never had
    guard_limits.client_disconnected(mine[0])
    assert connect("192.0.2.7", 3).error is None  # a freed slot is this client's again
    proxied = [connect("10.0.0.1", n) for n in range(4)]
    assert [c.error is None for c in proxied] == [True, True, True, False]  # exempt, but the cap holds
    assert connect("192.0.2.8", 0).error is not None


# --- finding 1b: blank lines do not stop the head clock -------------------------------


def trickle(sock: socket.socket, data: bytes, seconds: float) -> tuple[bytes, bool]:
    """Send ``data`` every 0.3 s, as a slow client does, until the guard closes the
    connection or ``seconds`` pass; what the guard answered, and whether it closed."""
    answer, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(data)
        except OSError:
            return answer, True
        if select.select([sock], [], [], 0.3)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return answer, True
            answer += chunk
    return answer, False


def test_a_connection_sending_only_empty_lines_is_closed_after_the_header_timeout(world, tmp_path):
    guard = guard_for(world, tmp_path, SMSGW_GUARD_HEADER_TIMEOUT="1", SMSGW_GUARD_IDLE_TIMEOUT="120")
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            # far past the head timeout, far inside the idle one
            answer, closed = trickle(sock, b"\r\n", seconds=30)
        status = receipt(world, guard.port, source="127.0.0.1")
    finally:
        guard.process.stop()
    assert closed, "the guard kept a connection that only ever sent empty lines"
    assert answer == b""  # no request was begun: nothing to answer
    assert status == 200


def test_empty_lines_before_a_request_are_still_allowed(world, tmp_path):
    guard = guard_for(world, tmp_path, SMSGW_GUARD_HEADER_TIMEOUT="30")
    gateway = world["gateway"]
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            sock.sendall(b"\r\n\r\n" + f"POST /webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']} "
                         "HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        guard.process.stop()
    assert answer.startswith(b"HTTP/1.1 200")


# --- finding 3: stopping the guard -----------------------------------------------------


def test_stopping_the_guard_with_connections_open_logs_no_traceback(world, tmp_path):
    guard = guard_for(world, tmp_path, SMSGW_GUARD_IDLE_TIMEOUT="120")
    held = connections(guard.port, 20)
    try:
        assert all(health_on(sock) for sock in held)  # each accepted, served, and now idle
        guard.process.popen.terminate()  # SIGTERM; Process.stop sends SIGINT
        returncode = guard.process.popen.wait(timeout=30)
    finally:
        for sock in held:
            sock.close()
        guard.process.stop()
    assert returncode == 0
    assert guard.log.count("Traceback") == 0, guard.log[-3000:]
    assert "CancelledError" not in guard.log


def test_sigint_likewise_ends_open_connections_without_a_traceback(world, tmp_path):
    guard = guard_for(world, tmp_path, SMSGW_GUARD_IDLE_TIMEOUT="120")
    held = connections(guard.port, 20)
    try:
        assert all(health_on(sock) for sock in held)
        guard.process.stop()  # SIGINT, then a kill after 10 s
    finally:
        for sock in held:
            sock.close()
    assert guard.process.popen.returncode == 0
    assert guard.log.count("Traceback") == 0, guard.log[-3000:]


def test_a_body_trickling_in_a_byte_at_a_time_is_408_after_the_header_timeout(world, tmp_path):
    """The same lock-out through the body: a head, then one body byte now and then
    (each resets the idle timeout). The body gets the head's time again."""
    upstream = world["upstream"]
    upstream.clear()
    guard = guard_for(world, tmp_path, SMSGW_GUARD_HEADER_TIMEOUT="1", SMSGW_GUARD_IDLE_TIMEOUT="120")
    gateway = world["gateway"]
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
            sock.sendall(f"POST /webhooks/jasmin/{gateway['id']}/dlr?token={gateway['callback_token']} HTTP/1.1\r\n"
                         "Host: x\r\nContent-Length: 1000\r\n\r\n".encode())
            answer, _ = trickle(sock, b"a", seconds=30)  # 1000 bytes at this pace would take 300 s
    finally:
        guard.process.stop()
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b'{"message": "Request timeout."}')
    assert upstream.requests == []
    assert guard.log.count("Traceback") == 0
