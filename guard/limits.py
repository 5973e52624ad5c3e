"""What clients can take from the guard: file descriptors, connections, time, memory.

Under the default ``ulimit -n 1024``, a thousand idle connections used to take
every descriptor: accept() then failed for everyone, legitimate receipts timed
out, and each failed accept() was logged with a traceback (asyncio retries
many times a second). So the guard raises its open-files limit to the hard
limit at start, holds at most ``max_connections`` client connections — half
of what that limit leaves after a reserve, as each client may need an upstream
connection too, and never more than ``DEFAULT_CAP`` unless the operator says so
(each costs about 142 kB) — closing the excess at once, closes idle connections
(the ``tcp_timeout`` option) and slow request heads (``guard.http1``), and logs
running out of descriptors as one line now and then.

One count for everyone let one client take every slot and keep it (a byte now
and then resets the idle timeout). So each client — an address, or an IPv6
/64, which one host usually has whole — holds at most ``per_client`` of them.
Peers the operator trusts as proxies (``SMSGW_GUARD_TRUSTED_PROXIES``, nginx in
front) are exempt: every connection from nginx has nginx's address, so a cap on
it would be a cap on every gateway behind it together; nginx limits its own
clients.

Every client connection gets ``BoundedHttp1Server``: the guard speaks HTTP/1
only (``http2`` is off, and TLS clients are offered HTTP/1 alone).

When the guard stops, ``done`` ends the open client connections as the idle
timeout does, before the event loop cancels their tasks: a cancelled
connection task is logged by asyncio (Python 3.12.1) with a traceback each.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import time

from mitmproxy import ctx
from mitmproxy.proxy.layers.http import HttpLayer

from guard.http1 import BoundedHttp1Server

log = logging.getLogger("smsgw.guard")

FD_RESERVE = 64            # the database, the listening socket, logs, the CA files
LOG_INTERVAL = 10.0        # seconds between two log lines about the same trouble
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
NO_HARD_LIMIT = 1_048_576  # Linux's default fs.nr_open, when the hard limit is "unlimited"
DEFAULT_CAP = 4096         # connections held by default, whatever the file limit (~0.6 GB)
MIN_PER_CLIENT = 8         # the derived per-client cap is never below this (unless the cap is)
SHUTDOWN_GRACE = 10.0      # seconds ``done`` waits for connections to end


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
    ``fd_limit`` leaves after ``FD_RESERVE``, at most ``DEFAULT_CAP``."""
    return configured or max(1, min((fd_limit - FD_RESERVE) // 2, DEFAULT_CAP))


def max_connections_per_client(configured: int, cap: int) -> int:
    """Connections one client may hold: ``configured``, or (when 0) a sixteenth
    of ``cap``, at least ``MIN_PER_CLIENT`` and at most ``cap``."""
    return configured or min(cap, max(MIN_PER_CLIENT, cap // 16))


def client_key(address: str) -> str:
    """Whom a connection from ``address`` counts against: the address itself, an
    IPv4 address on a dual-stack socket as IPv4, and an IPv6 address as its /64."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


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
    """mitmproxy addon: the connection caps (in all, and per client), a bounded HTTP/1
    server for each client connection, one log line (not a traceback) per interval
    when accept() fails, and a quiet end for open connections when the guard stops."""

    def __init__(self, max_connections: int, head_timeout: float, per_client: int = 0,
                 trusted: tuple[str, ...] = ()):
        self.max_connections = max_connections
        self.per_client = max_connections_per_client(per_client, max_connections)
        self.head_timeout = head_timeout
        self.trusted = frozenset(trusted)  # proxies in front: no per-client cap
        self.counted: dict[str, str | None] = {}  # id of each connection held -> its client (None: exempt)
        self.by_client: dict[str, int] = {}  # client -> connections it holds
        self.refusals = Every(LOG_INTERVAL)
        self.client_refusals = Every(LOG_INTERVAL)
        self.accept_failures = Every(LOG_INTERVAL)

    def client_connected(self, client) -> None:
        address = client.peername[0] if client.peername else ""
        key = None if address in self.trusted else client_key(address)
        if len(self.counted) >= self.max_connections:
            client.error = "connection limit reached"  # mitmproxy closes it at once
            if self.refusals.due():
                log.warning("connection limit (%d) reached: closing new connections (%d more since last said)",
                            self.max_connections, self.refusals.skipped)
                self.refusals.skipped = 0
            return
        if key is not None and self.by_client.get(key, 0) >= self.per_client:
            client.error = "per-client connection limit reached"
            if self.client_refusals.due():
                log.warning("per-client connection limit (%d) reached by %s: closing its new connections "
                            "(%d more refusals since last said)", self.per_client, key, self.client_refusals.skipped)
                self.client_refusals.skipped = 0
            return
        self.counted[client.id] = key
        if key is not None:
            self.by_client[key] = self.by_client.get(key, 0) + 1

    def client_disconnected(self, client) -> None:
        if client.id not in self.counted:
            return  # refused: it never held a slot
        key = self.counted.pop(client.id)
        if key is not None:
            left = self.by_client.pop(key) - 1
            if left:
                self.by_client[key] = left

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

    async def done(self) -> None:
        """Stop listening, then end each open client connection the way mitmproxy's
        idle timeout does (its handler task is cancelled, and the connection task
        then returns normally), and wait for them to be gone."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None:
            return
        await proxyserver.servers.update([])
        for handler in list(proxyserver.connections.values()):
            io = handler.transports.get(handler.client)
            if io is not None and io.handler is not None:
                io.handler.cancel("the guard is stopping")
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while proxyserver.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # each connection deregisters itself as it ends
