"""The guard's HTTP/1 server side: mitmproxy's own, with a bounded request head
and answers in the contract's JSON.

mitmproxy 12.3 reads a request head into a buffer with no limit on its size or
on the time it takes (``Http1Server.read_headers``: "FIXME: protect against
header size DoS"), and answers errors it meets itself — a malformed request,
a body over the limit, the upstream down — with an HTML page that names
mitmproxy and, for a 502, the upstream's address. ``BoundedHttp1Server`` is
that server with both fixed where the bytes arrive and the answers are
written. It is given to each client connection by ``guard.limits``'s
``next_layer`` hook (the HTTP layer keeps a client connection layer set
before it starts), so nothing in mitmproxy is patched.
"""

from __future__ import annotations

import json
import re

from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import ErrorCode, RequestProtocolError, ResponseProtocolError
from mitmproxy.proxy.layers.http._http1 import Http1Server

HEAD_LIMIT = 64 * 1024  # request line and headers, together
END_OF_HEAD = re.compile(rb"\n\r?\n")  # what ends a head for mitmproxy's parser (h11's buffer)
EMPTY_LINES = re.compile(rb"(?:\r?\n)*")  # what a server ignores before a request line (RFC 9112 2.2)

MESSAGES = {
    400: "Bad request.",
    408: "Request timeout.",
    413: "Request body too large.",
    431: "Request header fields too large.",
    502: "Bad gateway.",
    503: "Service unavailable.",
    504: "Gateway timeout.",
}


def error_response(status: int) -> bytes:
    """A whole HTTP/1.1 answer in the contract's shape, that closes the connection.

    The message depends only on the status: mitmproxy's own message may hold
    an internal address or parser detail.
    """
    body = json.dumps({"message": MESSAGES.get(status, "Error.")}).encode()
    response = http.Response.make(status, body, {"Content-Type": "application/json", "Connection": "close"})
    return http1.assemble_response(response)


def head_too_large(buffered: bytes) -> bool:
    """True when the head in ``buffered`` (the start of a request) does not end
    within ``HEAD_LIMIT`` bytes."""
    return len(buffered) > HEAD_LIMIT and END_OF_HEAD.search(buffered, 0, HEAD_LIMIT) is None


class BoundedHttp1Server(Http1Server):
    """An HTTP/1 server connection that refuses a head over ``HEAD_LIMIT`` bytes
    (431), gives a head ``head_timeout`` seconds from its first byte (408), never
    buffers more than ``HEAD_LIMIT`` bytes of a pipelined request, and writes
    its own error answers as JSON.

    Empty lines before a request line are skipped (all of them: mitmproxy's
    parser drops one per read, and left a request behind two waiting for more
    bytes), but they start the head clock like any other byte, and it keeps
    running until a whole head is read. Otherwise a client sending an empty line
    now and then would hold a connection for ever: each line resets the idle
    timeout and is no head to time. A clock that ends with only empty lines read
    closes the connection without an answer: there was no request to answer.

    The body, likewise, gets ``head_timeout`` seconds from the end of its head
    (408): a byte now and then would otherwise hold the connection as long.
    """

    head_timeout: float = 10.0

    def __init__(self, context, head_timeout: float):
        super().__init__(context)
        self.head_timeout = head_timeout
        self._head_clock: commands.RequestWakeup | None = None

    def _handle_event(self, event: events.Event):
        if isinstance(event, events.Wakeup):
            if event.command is self._head_clock and self.state == self.read_headers:
                if self.buf:
                    yield from self._refuse(408)
                else:  # only empty lines came: no request begun, nothing to answer
                    yield from self._hang_up()
            elif event.command is self._head_clock and self.state == self.read_body:
                yield from self._body_too_slow()
            return
        before = self.state
        started = isinstance(event, events.DataReceived) and self.state == self.read_headers
        yield from super()._handle_event(event)
        if self.state == self.read_body and before != self.read_body:
            self._head_clock = commands.RequestWakeup(self.head_timeout)  # the body's own time
            yield self._head_clock
        elif self.state != self.read_headers and self.state != self.read_body:
            self._head_clock = None  # this request is read (or the connection is done)
        elif (self.state == self.read_headers and self._head_clock is None
              and (started or (self.buf and not isinstance(event, events.ConnectionEvent)))):
            # From the head's first byte, empty lines included; or, for bytes pipelined
            # behind the last request, from the end of its answer.
            self._head_clock = commands.RequestWakeup(self.head_timeout)
            yield self._head_clock

    def read_headers(self, event: events.ConnectionEvent):
        if isinstance(event, events.DataReceived):
            if len(self.buf) - len(event.data) <= 1 or not event.data:
                self._skip_empty_lines()  # a head's first bytes, or what was pipelined behind the last
            if len(self.buf) > HEAD_LIMIT and head_too_large(bytes(self.buf)):
                yield from self._refuse(431)
                return
        for command in super().read_headers(event):
            if isinstance(command, commands.SendData) and command.connection is self.conn:
                # The only bytes mitmproxy writes here itself: its HTML 400 page.
                command = commands.SendData(self.conn, error_response(400))
            yield command
        if self.state == self.read_headers and len(self.buf) > HEAD_LIMIT:
            yield from self._refuse(431)  # defence in depth: nothing should be buffered past the limit

    def _skip_empty_lines(self) -> None:
        """Drop the empty lines the buffer starts with. Called only where a head may
        start (an empty buffer, or one holding a CR that a LF may complete), so it
        copies one read's bytes, not the whole buffer at each read."""
        skipped = EMPTY_LINES.match(bytes(self.buf)).end()
        if skipped:
            self.buf.maybe_extract_at_most(skipped)

    def wait(self, event: events.Event):
        # A request is in flight; what the client sends meanwhile waits in the buffer.
        # Past the limit: hang up, and let mitmproxy's own ``wait`` tell the flow when
        # the close comes back (as for a client that left).
        if isinstance(event, events.DataReceived) and len(self.buf) > HEAD_LIMIT:
            self.buf = type(self.buf)()
            yield commands.CloseConnection(self.conn)
            return
        yield from super().wait(event)

    def send(self, event):
        if not isinstance(event, ResponseProtocolError):
            yield from super().send(event)
            return
        # mitmproxy's own branch for this event, with our answer instead of its page.
        if not self.conn.state & ConnectionState.CAN_WRITE:
            return
        status = event.code.http_status_code()
        if self.response is None and status is not None:
            yield commands.SendData(self.conn, error_response(status))
        yield commands.CloseConnection(self.conn)

    def _refuse(self, status: int):
        yield commands.SendData(self.conn, error_response(status))
        yield from self._hang_up()

    def _body_too_slow(self):
        """408, and the flow learns that its request ended (as when mitmproxy's own
        body reader meets a protocol error): no request hook, nothing upstream."""
        yield commands.SendData(self.conn, error_response(408))
        yield commands.CloseConnection(self.conn)
        yield ReceiveHttp(RequestProtocolError(self.stream_id, "request body timeout", ErrorCode.GENERIC_CLIENT_ERROR))
        self.state = self.done
        self.buf = type(self.buf)()

    def _hang_up(self):
        yield commands.CloseConnection(self.conn)
        self.state = self.done
        self.buf = type(self.buf)()  # release what was read
