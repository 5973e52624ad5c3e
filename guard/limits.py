"""What clients can take from the guard: file descriptors, connections, time, memory.

Under the default ``ulimit -n 1024``, a thousand idle connections used to take
every descriptor: accept() then failed for everyone, legitimate receipts timed
out, and each failed accept() was logged with a traceback (asyncio retries
many times a second). So the guard raises its open-files limit to the hard
limit at start, holds at most ``max_connections`` client connections — half
of what that limit leaves after a reserve, as each client may need an upstream
connection too — closing the excess at once, closes idle connections (the
``tcp_timeout`` option) and slow request heads (``guard.http1``), and logs
running out of descriptors as one line now and then.

Every client connection gets ``BoundedHttp1Server``: the guard speaks HTTP/1
only (``http2`` is off, and TLS clients are offered HTTP/1 alone).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time

from mitmproxy.proxy.layers.http import HttpLayer

from guard.http1 import BoundedHttp1Server

log = logging.getLogger("smsgw.guard")

FD_RESERVE = 64            # the database, the listening socket, logs, the CA files
LOG_INTERVAL = 10.0        # seconds between two log lines about the same trouble
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
NO_HARD_LIMIT = 1_048_576  # Linux's default fs.nr_open, when the hard limit is "unlimited"


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NO_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep what we have; max_connections follows it
    return soft


def max_connections(configured: int, fd_limit: int) -> int:
    """Client connections held at once: ``configured``, or (when 0) half of what
    ``fd_limit`` leaves after ``FD_RESERVE``."""
    return configured or max(1, (fd_limit - FD_RESERVE) // 2)


class Every:
    """True at most once per ``interval`` seconds; counts the times it said no."""

    def __init__(self, interval: float, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.next, self.skipped = float("-inf"), 0

    def due(self) -> bool:
        now = self.clock()
        if now < self.next:
            self.skipped += 1
            return False
        self.next = now + self.interval
        return True


class ConnectionLimits:
    """mitmproxy addon: the connection cap, a bounded HTTP/1 server for each client
    connection, and one log line (not a traceback) per interval when accept() fails."""

    def __init__(self, max_connections: int, head_timeout: float):
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.counted: set[str] = set()  # ids of the client connections being held
        self.refusals = Every(LOG_INTERVAL)
        self.accept_failures = Every(LOG_INTERVAL)

    def client_connected(self, client) -> None:
        if len(self.counted) >= self.max_connections:
            client.error = "connection limit reached"  # mitmproxy closes it at once
            if self.refusals.due():
                log.warning("connection limit (%d) reached: closing new connections (%d more since last said)",
                            self.max_connections, self.refusals.skipped)
                self.refusals.skipped = 0
            return
        self.counted.add(client.id)

    def client_disconnected(self, client) -> None:
        self.counted.discard(client.id)

    def next_layer(self, nextlayer) -> None:
        """Give the HTTP layer our HTTP/1 server for the client before it starts
        (it keeps a client connection layer that is already set)."""
        layer = nextlayer.layer
        while layer is not None and not isinstance(layer, HttpLayer):
            layer = getattr(layer, "child_layer", None)
        if layer is not None:
            layer.connections.setdefault(
                layer.context.client, BoundedHttp1Server(layer.context.fork(), self.head_timeout))

    def running(self) -> None:
        # mitmproxy installs its loop exception handler in Master.run, before this hook.
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(loop, context) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in OUT_OF_FDS:
                if self.accept_failures.due():
                    log.error("out of file descriptors: %s (%d more since last said)",
                              exc.strerror, self.accept_failures.skipped)
                    self.accept_failures.skipped = 0
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
