"""HTTP/1.x request-framing smuggling, byte for byte over raw sockets.

Each case is a receipt for gateway B, carrying B's valid token, whose framing
tries to smuggle a second request: a receipt for gateway A without any token
(CL.TE, TE.CL, odd Content-Length and Transfer-Encoding spellings, bare LF,
chunk-size tricks, HTTP/1.0 keep-alive, pipelining, ``Expect: 100-continue``).

Against the guard alone, in front of ``RecordingUpstream``, every case must
leave the upstream with nothing but plainly framed requests for B (one
Content-Length equal to the body, no Transfer-Encoding, CRLF heads with no
folding, no byte left over), and the client with a JSON answer to each request
or a closed connection: never a 5xx, a traceback, or a wait past the deadline.
Through nginx (smsgw.conf) in front of the real API, A's message must never
change state or gain a receipt event.

A subset goes through the guard alone in front of the real API too: uvicorn's
parser (httptools) reads what the guard forwards, and A's message must not move.

Each case names the answers the client gets, in order: what the guard and
nginx decide is part of what is tested (ambiguous framing is refused, 400).
An obs-folded header line and a bare CR in a header value are refused (400) by
the guard too: mitmproxy keeps them inside the value it read, and forwarded they
would be header lines the guard never judged.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest

from tests.nginx import NGINX, nginx_stack, send_message
from tests.servers import StubGateway, services_required, start_api, start_guard, wait_until
from tests.test_guard_transport import RecordingUpstream

DEADLINE = 30.0  # seconds for all of a case's answers; the guard closes an idle client after 5


@dataclass
class Parts:
    """What a case is made of: B's receipt with its token, and A's forged receipt."""

    a: int
    b: int
    token: str
    marker: str           # B's receipt id: which case sent what the upstream saw
    a_receipt_id: str = "forged"

    def head(self, version: str = "HTTP/1.1") -> bytes:
        """B's request line and the headers every case shares (no framing, no end of head)."""
        return (f"POST /webhooks/jasmin/{self.b}/dlr?token={self.token} {version}\r\n"
                "Host: smsgw\r\nContent-Type: application/x-www-form-urlencoded\r\n").encode()

    @property
    def body(self) -> bytes:
        return f"id={self.marker}&message_status=DELIVRD".encode()

    @property
    def smuggled(self) -> bytes:
        """A whole receipt for gateway A, without a token, that closes the connection."""
        body = f"id={self.a_receipt_id}&message_status=DELIVRD".encode()
        return (f"POST /webhooks/jasmin/{self.a}/dlr HTTP/1.1\r\nHost: smsgw\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def cl(n: int) -> bytes:
    return b"Content-Length: %d\r\n" % n


@dataclass
class Case:
    name: str
    build: Callable[[Parts], bytes]
    guard: list[int]   # the answers the client gets from the guard alone, in order ([]: it hangs up)
    nginx: list[int]   # ... and through nginx (smsgw.conf)


def _cl_te(p: Parts) -> bytes:  # the front uses Content-Length, the back Transfer-Encoding
    body = b"0\r\n\r\n" + p.smuggled
    return p.head() + cl(len(body)) + b"Transfer-Encoding: chunked\r\n\r\n" + body


def _te_cl(p: Parts) -> bytes:  # the front uses Transfer-Encoding, the back Content-Length
    return p.head() + cl(4) + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(p.smuggled) + b"0\r\n\r\n"


def _te_first(p: Parts) -> bytes:
    body = b"0\r\n\r\n" + p.smuggled
    return p.head() + b"Transfer-Encoding: chunked\r\n" + cl(len(body)) + b"\r\n" + body


def _with_cl(value: bytes) -> Callable[[Parts], bytes]:
    """B's body framed by a Content-Length spelled ``value`` (``%d``: its length), then A's."""
    return lambda p: p.head() + b"Content-Length: " + value.replace(b"%d", b"%d" % len(p.body)) + b"\r\n\r\n" \
        + p.body + p.smuggled


def _with_te(header: bytes, cl_too: bool = False) -> Callable[[Parts], bytes]:
    """B's body chunked under ``header`` (a whole header line, or lines), then A's request
    right after the last chunk: smuggled to whoever does not read it as chunked."""
    def build(p: Parts) -> bytes:
        body = chunk(p.body) + b"0\r\n\r\n"
        return p.head() + header + (cl(len(body)) if cl_too else b"") + b"\r\n" + body + p.smuggled
    return build


def _chunked(chunks: bytes) -> Callable[[Parts], bytes]:
    """A chunked receipt for B whose chunked body is ``chunks`` (``{body}``: B's, ``{a}``: A's)."""
    def build(p: Parts) -> bytes:
        return p.head() + b"Transfer-Encoding: chunked\r\n\r\n" + chunks.replace(
            b"{n}", b"%x" % len(p.body)).replace(b"{body}", p.body).replace(b"{a}", p.smuggled)
    return build


def _bare_lf(p: Parts) -> bytes:
    return (p.head() + cl(len(p.body)) + b"\r\n").replace(b"\r\n", b"\n") + p.body + p.smuggled


def _lf_hides_te(p: Parts) -> bytes:  # one header to a parser splitting on CRLF only, two to one on LF
    body = chunk(p.body) + b"0\r\n\r\n"
    return p.head() + b"X-Note: a\nTransfer-Encoding: chunked\r\n" + cl(len(body)) + b"\r\n" + body + p.smuggled


def _fold_hides_te(p: Parts) -> bytes:
    """One request to a parser that unfolds (the guard, h11); CL.TE to one that took the
    folded line for a header: A's receipt would follow the empty last chunk."""
    body = b"0\r\n\r\n" + p.smuggled
    return p.head() + b"X-Note: a\r\n Transfer-Encoding: chunked\r\n" + cl(len(body)) + b"\r\n" + body


def _cr_hides_te(p: Parts) -> bytes:
    body = chunk(p.body) + b"0\r\n\r\n"
    return p.head() + b"X-Note: a\rTransfer-Encoding: chunked\r\n" + cl(len(body)) + b"\r\n" + body + p.smuggled


def _fold_in_other_header(p: Parts) -> bytes:  # would the guard pass a fold on to the API?
    return p.head() + b"X-Note: a\r\n Transfer-Encoding: chunked\r\n" + cl(len(p.body)) + b"\r\n" + p.body \
        + p.smuggled


def _http10(extra: bytes = b"Connection: keep-alive\r\n", framed: bool = True) -> Callable[[Parts], bytes]:
    def build(p: Parts) -> bytes:
        return p.head("HTTP/1.0") + extra + (cl(len(p.body)) if framed else b"") + b"\r\n" + p.body + p.smuggled
    return build


def _pipelined(p: Parts) -> bytes:
    return p.head() + cl(len(p.body)) + b"\r\n" + p.body + p.smuggled


def _pipelined_between(p: Parts) -> bytes:
    """B, then A without its Connection: close, then B again."""
    first = p.head() + cl(len(p.body)) + b"\r\n" + p.body
    return first + p.smuggled.replace(b"Connection: close\r\n", b"") + first


def _expect_continue(p: Parts) -> bytes:
    return p.head() + b"Expect: 100-continue\r\n" + cl(len(p.body)) + b"\r\n" + p.body + p.smuggled


def _expect_continue_smuggled(p: Parts) -> bytes:
    return (p.head() + cl(len(p.body)) + b"\r\n" + p.body
            + p.smuggled.replace(b"Connection: close\r\n", b"Connection: close\r\nExpect: 100-continue\r\n"))


def _get_with_body(p: Parts) -> bytes:
    line = f"GET /webhooks/jasmin/{p.b}/dlr?id={p.marker}&message_status=DELIVRD&token={p.token} HTTP/1.1\r\n"
    return line.encode() + b"Host: smsgw\r\n" + cl(len(p.smuggled)) + b"\r\n" + p.smuggled


def _whole_request_in_a_chunk(p: Parts) -> bytes:  # the h2 attack's body, as HTTP/1.1 chunks
    return p.head() + b"Transfer-Encoding: chunked\r\n\r\n" + chunk(p.smuggled) + b"0\r\n\r\n"


CASES = [
    Case("cl-te", _cl_te, [400], [400]),
    Case("te-cl", _te_cl, [400], [400]),
    Case("te-then-cl", _te_first, [400], [400]),
    Case("cl-twice-same", lambda p: p.head() + cl(len(p.body)) * 2 + b"\r\n" + p.body + p.smuggled, [400], [400]),
    Case("cl-0-then-cl-n", lambda p: p.head() + cl(0) + cl(len(p.smuggled)) + b"\r\n" + p.smuggled, [400], [400]),
    Case("cl-n-then-cl-0", lambda p: p.head() + cl(len(p.smuggled)) + cl(0) + b"\r\n" + p.smuggled, [400], [400]),
    Case("cl-list", _with_cl(b"%d, 0"), [400], [400]),
    Case("cl-plus-sign", _with_cl(b"+%d"), [400], [400]),
    Case("cl-minus", _with_cl(b"-1"), [400], [400]),
    Case("cl-inner-space", _with_cl(b"1 %d"), [400], [400]),
    Case("cl-leading-zeros", _with_cl(b"00%d"), [400], [200, 401]),  # nginx: 1*DIGIT, as RFC 9110 allows
    Case("cl-hex", lambda p: p.head() + b"Content-Length: 0x%x\r\n\r\n" % len(p.body) + p.body + p.smuggled,
         [400], [400]),
    Case("cl-space-before-colon", lambda p: p.head() + b"Content-Length : %d\r\n\r\n" % len(p.body) + p.body
         + p.smuggled, [400], [400]),
    Case("cl-folded", lambda p: p.head() + b"Content-Length:\r\n %d\r\n\r\n" % len(p.body) + p.body + p.smuggled,
         [400], [400]),
    Case("te-chunked-identity", _with_te(b"Transfer-Encoding: chunked, identity\r\n"), [400], [501]),
    Case("te-identity", _with_te(b"Transfer-Encoding: identity\r\n", cl_too=True), [400], [501]),
    Case("te-xchunked", _with_te(b"Transfer-Encoding: xchunked\r\n", cl_too=True), [400], [501]),
    Case("te-xchunked-alone", _with_te(b"Transfer-Encoding: xchunked\r\n"), [400], [501]),
    Case("te-leading-space", _with_te(b"Transfer-Encoding:  chunked\r\n"), [200, 401], [200, 401]),
    Case("te-capitalised", _with_te(b"Transfer-Encoding: Chunked\r\n"), [200, 401], [200, 401]),
    Case("te-space-before-colon", _with_te(b"Transfer-Encoding : chunked\r\n", cl_too=True), [400], [400]),
    Case("te-tab-before-colon", _with_te(b"Transfer-Encoding\t: chunked\r\n", cl_too=True), [400], [400]),
    Case("te-folded", _with_te(b"Transfer-Encoding:\r\n chunked\r\n", cl_too=True), [400], [400]),
    Case("te-folded-alone", _with_te(b"Transfer-Encoding:\r\n chunked\r\n"), [400], [400]),
    Case("te-twice", _with_te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), [400], [400]),
    Case("te-twice-identity", _with_te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
         [400], [400]),
    # mitmproxy keeps an obs-fold ("\r\n " inside a value) and a bare CR in a value: before
    # the guard refused them (RFC 9112 5.2), it forwarded them; an upstream that read the
    # fold as a header line of its own would have seen TE and CL.
    Case("fold-in-another-header", _fold_in_other_header, [400], [400]),
    Case("fold-hides-te", _fold_hides_te, [400], [400]),
    Case("bare-lf", _bare_lf, [200, 401], [200, 401]),
    Case("lf-hides-te", _lf_hides_te, [400], [400]),
    Case("cr-hides-te", _cr_hides_te, [400], [400]),
    # A chunked body h11 refuses: the guard hangs up without an answer and forwards nothing.
    # nginx answers 400, or for a missing final CRLF reads A's head as trailer lines up to
    # the empty line (A's head is eaten; its body is left as the start of a request line).
    Case("chunk-extension", _chunked(b"{n};name=value\r\n{body}\r\n0\r\n\r\n{a}"), [200, 401], [200, 401]),
    Case("chunk-extension-quoted-crlf", _chunked(b'{n};q="\r\n0\r\n\r\n"\r\n{body}\r\n0\r\n\r\n{a}'), [], [400]),
    # The guard waits for the rest of a 2**64-byte chunk until its idle timeout, then hangs up.
    Case("chunk-size-oversized", _chunked(b"ffffffffffffffff{n}\r\n{body}\r\n0\r\n\r\n{a}"), [], [400]),
    Case("chunk-size-negative", _chunked(b"-{n}\r\n{body}\r\n0\r\n\r\n{a}"), [], [400]),
    Case("chunk-size-0x", _chunked(b"0x{n}\r\n{body}\r\n0\r\n\r\n{a}"), [], [400]),
    Case("chunk-size-too-small", _chunked(b"3\r\n{body}\r\n0\r\n\r\n{a}"), [], [400]),
    Case("chunk-no-final-crlf", _chunked(b"{n}\r\n{body}\r\n0\r\n{a}"), [], [200]),
    Case("chunk-lf-only", _chunked(b"{n}\n{body}\n0\n\n{a}"), [], [200, 401]),
    Case("whole-request-in-a-chunk", _whole_request_in_a_chunk, [200], [200]),
    # HTTP/1.0 goes upstream as HTTP/1.0; the recorder (h11) closes after it, and so the
    # guard hangs up before reading A's request. The real API and nginx keep it alive.
    Case("http10-keep-alive", _http10(), [200], [200, 401]),
    Case("http10-no-length", _http10(framed=False), [200], [200, 400]),
    Case("http10-chunked", lambda p: p.head("HTTP/1.0") + b"Connection: keep-alive\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n" + chunk(p.body) + b"0\r\n\r\n" + p.smuggled, [400], [400]),
    Case("pipelined", _pipelined, [200, 401], [200, 401]),
    Case("pipelined-b-a-b", _pipelined_between, [200, 401, 200], [200, 401, 200]),
    Case("expect-100-continue", _expect_continue, [200, 401], [200, 401]),
    Case("expect-100-continue-smuggled", _expect_continue_smuggled, [200, 401], [200, 401]),
    Case("get-with-a-body", _get_with_body, [200], [200]),
]

# --- reading answers ---------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    body: bytes


def read_answers(sock: socket.socket, count: int) -> tuple[list[Answer], bool]:
    """The final answers (1xx skipped) until ``count`` of them or the peer closes; and
    whether it closed. Fails if neither happens within ``DEADLINE``."""
    buf, answers, closed = b"", [], False
    deadline = time.monotonic() + DEADLINE
    while True:
        while (answer := _take_answer(buf)) is not None:
            parsed, buf = answer
            if parsed.status >= 200:
                answers.append(parsed)
        if len(answers) >= count or closed:
            return answers, closed
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no answer within {DEADLINE} s after {answers!r}; pending {buf[:200]!r}"
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        except TimeoutError:
            continue
        closed = data == b""
        buf += data


def _take_answer(buf: bytes) -> tuple[Answer, bytes] | None:
    head, found, rest = buf.partition(b"\r\n\r\n")
    if not found:
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    status = int(status_line.split()[1])
    if status < 200:
        return Answer(status, headers, b""), rest
    if headers.get("transfer-encoding") == ["chunked"]:
        body = b""
        while True:
            size_line, found, after = rest.partition(b"\r\n")
            if not found:
                return None
            size = int(size_line.split(b";")[0], 16)
            if len(after) < size + 2:
                return None
            body, rest = body + after[:size], after[size + 2:]
            if size == 0:
                return Answer(status, headers, body), rest
    [length] = headers.get("content-length", ["0"])
    if len(rest) < int(length):
        return None
    return Answer(status, headers, rest[:int(length)]), rest[int(length):]


def exchange(sock: socket.socket, data: bytes, count: int) -> tuple[list[Answer], bool]:
    sock.sendall(data)
    return read_answers(sock, max(count, 1))


def assert_json_answers(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.headers.get("content-type") == ["application/json"], answer
        assert "message" in json.loads(answer.body), answer


# --- what the upstream saw ----------------------------------------------------------

HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")


def plain_requests(raw: bytes) -> list[tuple[bytes, dict[bytes, list[bytes]], bytes]]:
    """The requests in one upstream connection's bytes, read as the plainest framing
    allows: CRLF lines, no folding, printable headers, exactly one decimal
    Content-Length, no Transfer-Encoding, nothing left over. Anything else fails: a
    parser more lenient than h11 (the API's llhttp) could read such bytes otherwise."""
    requests, at = [], 0
    while at < len(raw):
        end = raw.find(b"\r\n\r\n", at)
        assert end >= 0, f"an unfinished head upstream: {raw[at:at + 200]!r}"
        line, *lines = raw[at:end].split(b"\r\n")
        assert re.fullmatch(rb"[A-Z]+ /\S* HTTP/1\.[01]", line), line
        headers: dict[bytes, list[bytes]] = {}
        for header in lines:
            match = HEADER.fullmatch(header)
            assert match, f"a header line upstream that is not plain: {header!r}"
            headers.setdefault(match[1].lower(), []).append(match[2] or b"")
        assert b"transfer-encoding" not in headers, headers
        [length] = headers[b"content-length"]
        assert re.fullmatch(rb"0|[1-9][0-9]*", length), length
        body = raw[end + 4:end + 4 + int(length)]
        assert len(body) == int(length), "the upstream was sent less body than announced"
        requests.append((line, headers, body))
        at = end + 4 + int(length)
    return requests


# --- the guard alone ----------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two gateways (A, B), a recording upstream and a guard in front of it that
    closes a client idle for 5 s (a case it waits on ends within the deadline)."""
    workdir = tmp_path_factory.mktemp("framing")
    key = "framing-admin-key-" + "x" * 32
    api = start_api(workdir, SMSGW_ADMIN_KEY=key)
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as admin:
        a, b = (admin.post("/api/sms-gateways", json={"name": name, "server_host": "127.0.0.1"}).json()["data"]
                for name in ("A", "B"))
    upstream = RecordingUpstream().start()
    guard = start_guard(workdir, api.env, upstream.url, SMSGW_GUARD_IDLE_TIMEOUT="5")
    yield {"a": a, "b": b, "upstream": upstream, "guard": guard}
    guard.process.stop()
    upstream.stop()
    api.process.stop()


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_the_guard_forwards_only_plainly_framed_receipts_for_b(world, case):
    a, b, upstream, guard = world["a"], world["b"], world["upstream"], world["guard"]
    upstream.clear()
    parts = Parts(a["id"], b["id"], b["callback_token"], marker=f"frame-{case.name}")
    data = case.build(parts)
    with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as sock:
        answers, closed = exchange(sock, data, len(case.guard))
    # The guard closes its upstream connection with the client's: all it sent is recorded.
    wait_until(lambda: upstream.open_connections == 0, what="the guard's upstream connection to close")

    statuses = [answer.status for answer in answers]
    assert statuses == case.guard, (data, statuses, closed)
    assert_json_answers(answers)
    forwarded = [request for raw in upstream.raw for request in plain_requests(bytes(raw))]
    assert len(forwarded) == statuses.count(200) == len(upstream.requests)
    for (line, headers, body), seen in zip(forwarded, upstream.requests):
        assert line.split()[1].startswith(f"/webhooks/jasmin/{b['id']}/dlr".encode()), line
        assert f"/{a['id']}/dlr" not in seen.target and parts.token not in seen.target
        assert headers[b"x-forwarded-for"] == [b"127.0.0.1"]  # set by the guard: it admitted this one
        assert body == seen.body
    assert "Traceback" not in guard.log


def test_the_guard_still_serves_after_the_corpus(world):
    """Last of the guard's tests: no case left it unable to admit a plain receipt."""
    b, upstream = world["b"], world["upstream"]
    upstream.clear()
    parts = Parts(world["a"]["id"], b["id"], b["callback_token"], marker="after-corpus")
    with socket.create_connection(("127.0.0.1", world["guard"].port), timeout=10) as sock:
        answers, _ = exchange(sock, parts.head() + b"Connection: close\r\n" + cl(len(parts.body)) + b"\r\n"
                              + parts.body, 1)
    assert [answer.status for answer in answers] == [200]
    assert "Traceback" not in world["guard"].log


# --- the guard alone in front of the real API ---------------------------------------

# The cases where the guard forwards what it should refuse, and the classics around them.
REAL_API_SUBSET = ["fold-in-another-header", "fold-hides-te", "cr-hides-te", "cl-te", "te-cl",
                   "whole-request-in-a-chunk", "bare-lf", "pipelined-b-a-b", "http10-keep-alive",
                   "expect-100-continue", "chunk-no-final-crlf"]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """The guard alone in front of the real API (its HTTP parser is what counts here),
    gateway A with a stub that accepts sends, and gateway B."""
    workdir = tmp_path_factory.mktemp("framing-api")
    key = "framing-admin-key-" + "x" * 32
    api = start_api(workdir, SMSGW_ADMIN_KEY=key)
    stub = StubGateway().start()
    admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    a = admin.post("/api/sms-gateways", json={"name": "A", "server_host": "127.0.0.1", "server_port": stub.port,
                                              "api_path": "secure/send", "default_sender_id": "X"}).json()["data"]
    b = admin.post("/api/sms-gateways", json={"name": "B", "server_host": "127.0.0.1"}).json()["data"]
    guard = start_guard(workdir, api.env, api.url)
    yield {"api": api, "admin": admin, "stub": stub, "a": a, "b": b, "guard": guard}
    guard.process.stop()
    stub.stop()
    admin.close()
    api.process.stop()


@pytest.mark.parametrize("case", [case for case in CASES if case.name in REAL_API_SUBSET],
                         ids=[case.name for case in CASES if case.name in REAL_API_SUBSET])
def test_the_real_api_behind_the_guard_never_applies_a_smuggled_receipt(standalone, case):
    """What the guard forwards is read by uvicorn's own parser (httptools' llhttp here):
    A's message must not move, whatever the guard let through."""
    admin, a, b = standalone["admin"], standalone["a"], standalone["b"]
    standalone["stub"].answer(200, {"data": f'Success "api-{case.name}'})
    sent = admin.post(f"/api/sms-gateways/{a['id']}/send", json={"to_number": "+14155550101", "message": "m"})
    assert sent.status_code == 201, sent.text
    message = sent.json()["data"]
    parts = Parts(a["id"], b["id"], b["callback_token"], marker=f"frame-{case.name}",
                  a_receipt_id=message["external_message_id"])
    with socket.create_connection(("127.0.0.1", standalone["guard"].port), timeout=10) as sock:
        answers, _ = exchange(sock, case.build(parts), len(case.guard))
    print(f"{case.name}: {[(answer.status, answer.body[:60]) for answer in answers]}")
    # The same answers as in front of the recorder, though for a fold or a bare CR the
    # 400 is uvicorn's plain text, not the guard's JSON: the guard forwarded them.
    assert [answer.status for answer in answers] == case.guard
    assert admin.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "submitted"
    events = admin.get(f"/api/sms-messages/{message['id']}/events").json()["data"]
    assert [event for event in events if event["kind"] == "receipt"] == []
    assert f"/webhooks/jasmin/{a['id']}/dlr\"" not in standalone["api"].log
    assert "Traceback" not in standalone["guard"].log and "Traceback" not in standalone["api"].log


# --- through nginx (smsgw.conf) in front of the real API ------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if NGINX is None and not services_required():
        pytest.skip("nginx is not installed (make install installs it)")
    with nginx_stack(tmp_path_factory.mktemp("framing-nginx"), "smsgw.conf") as stack:
        b = stack["client"].post("/api/sms-gateways", json={"name": "B", "server_host": "127.0.0.1"})
        assert b.status_code == 201, b.text
        stack["b"] = b.json()["data"]
        yield stack


def tls_socket(port: int) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="localhost")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_through_nginx_a_smuggled_receipt_never_touches_gateway_as_message(stack, case):
    client, a = stack["client"], stack["gateway"]
    message = send_message(stack, f"nginx-{case.name}")
    parts = Parts(a["id"], stack["b"]["id"], stack["b"]["callback_token"], marker=f"frame-{case.name}",
                  a_receipt_id=message["external_message_id"])
    data = case.build(parts)
    with tls_socket(stack["nginx"].port) as sock:
        answers, closed = exchange(sock, data, len(case.nginx))
    statuses = [answer.status for answer in answers]
    assert statuses == case.nginx, (data, statuses, closed)
    assert_json_answers(answers)
    assert client.get(f"/api/sms-messages/{message['id']}").json()["data"]["delivery_status"] == "submitted"
    events = client.get(f"/api/sms-messages/{message['id']}/events").json()["data"]
    assert [event for event in events if event["kind"] == "receipt"] == []
    assert "Traceback" not in stack["api"].log and "Traceback" not in stack["guard"].log
