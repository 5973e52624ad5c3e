"""gateway_call over real sockets: what each way a send can fail says about trying it again."""

from __future__ import annotations

import asyncio
import socket
import threading

import httpx
import pytest

from api import gateway_call
from api.providers.base import AMBIGUOUS, SAFE, TIMEOUT, UNREACHABLE, Submission
from tests.servers import StubGateway, free_port

SUB = Submission("+14155550123", "ACME", "hello", "http://x/dlr", validity_minutes=30)


def gateway(port: int, host: str = "127.0.0.1", provider: str = "jasmin") -> dict:
    return {"id": 1, "provider_type": provider, "server_host": host, "server_port": port,
            "api_path": "secure/send", "use_ssl": False, "username": "foo", "password": "bar"}


def send(gw: dict, timeout: float = 5.0):
    async def run():
        async with gateway_call.open_client() as http:
            return await gateway_call.send(http, gw, SUB, timeout=timeout)
    return asyncio.run(run())


@pytest.fixture
def stub():
    server = StubGateway().start()
    yield server
    server.stop()


def test_nothing_listening_is_unreachable_and_safe_to_retry():
    outcome = send(gateway(free_port()))
    assert (outcome.ok, outcome.failure_code, outcome.retry) == (False, UNREACHABLE, SAFE)
    assert outcome.failure_reason.startswith("could not connect to the gateway")


def test_a_host_that_does_not_resolve_is_unreachable_and_safe_to_retry():
    outcome = send(gateway(80, host="no-such-gateway.invalid"))
    assert (outcome.failure_code, outcome.retry) == (UNREACHABLE, SAFE)


def test_a_gateway_that_never_accepts_the_connection_is_safe_to_retry():
    # A listener whose accept queue is full: the kernel drops further SYNs, so the
    # connection is never made and the request never leaves.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the queue: these connect, and are never accepted
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            outcome = send(gateway(port), timeout=0.5)
        finally:
            for filler in fillers:
                filler.close()
    assert (outcome.failure_code, outcome.retry) == (UNREACHABLE, SAFE)
    assert outcome.failure_reason.startswith("could not connect to the gateway")


def test_a_gateway_that_takes_the_request_and_never_answers_is_an_ambiguous_timeout(stub):
    stub.answer(hold=threading.Event())  # released when the stub stops
    outcome = send(gateway(stub.port), timeout=0.5)
    assert (outcome.failure_code, outcome.retry) == (TIMEOUT, AMBIGUOUS)
    assert outcome.failure_reason == "gateway did not answer within 0.5 s"
    assert len(stub.received) == 1  # the request did reach it: the SMS may be on its way


def test_a_gateway_that_hangs_up_after_the_request_is_ambiguous(stub):
    stub.answer(hang_up=True)
    outcome = send(gateway(stub.port))
    assert (outcome.failure_code, outcome.retry) == (UNREACHABLE, AMBIGUOUS)
    assert len(stub.received) == 1


@pytest.mark.parametrize("status, body, retry", [
    (503, b'{"message": "Error \\"Interception specific error code 503\\""}', SAFE),
    (403, b'{"message": "Error \\"User throughput exceeded\\""}', SAFE),
    (500, b'{"message": "Error \\"Cannot send submit_sm\\""}', AMBIGUOUS),
    (403, b'{"message": "Error \\"Authentication failure for username:foo\\""}', None),
])
def test_an_error_status_says_whether_to_retry(stub, status, body, retry):
    stub.answer(status, body)
    outcome = send(gateway(stub.port))
    assert (outcome.ok, outcome.retry, outcome.retry_after) == (False, retry, None)


def test_an_accepted_send_carries_the_validity(stub):
    stub.answer(200, b'{"data": "Success \\"abc"}')
    outcome = send(gateway(stub.port))
    assert (outcome.ok, outcome.external_id, outcome.retry) == (True, "abc", None)
    assert stub.received[0].json()["validity-period"] == 30


class RawGateway:
    """Answers every connection with the same raw HTTP bytes: for headers StubGateway does not send."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("header, seconds", [("120", 120.0), ("99999", 3600.0), ("soon", None)])
def test_retry_after_is_read_from_the_reply(header, seconds):
    body = b'{"error": "slow down"}'
    raw = RawGateway(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                     b"Retry-After: " + header.encode() + b"\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        outcome = send(gateway(raw.port, provider="http"))
    finally:
        raw.close()
    assert (outcome.failure_code, outcome.retry, outcome.retry_after) == ("throttled", SAFE, seconds)


def test_a_gateway_that_cannot_be_called_fails_and_never_raises():
    outcome = send(gateway(1, host=":::::"))  # no such host: nothing left, so a retry is safe
    assert (outcome.ok, outcome.failure_code, outcome.retry) == (False, UNREACHABLE, SAFE)

