"""Running the guard: mitmproxy in reverse mode, with only the addons it needs.

No script loader (a failed hot reload of a ``-s`` script unregisters the
guard and leaves the proxy forwarding unguarded), no onboarding app, no
replay or rewrite addons: the proxy core, TLS for clients that speak it, and
the guard, registered in code.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from api import db
from api.config import Settings
from api.metrics_server import ListenerFailed
from guard import limits, metrics
from guard.addon import Guard
from guard.store import TokenStore

log = logging.getLogger("smsgw.guard")


def proxy_options(settings: Settings) -> dict:
    """The mitmproxy options that make the guard safe; each one is a decision."""
    return {
        "mode": [f"reverse:{settings.api_url}@{settings.guard_host}:{settings.guard_port}"],
        "connection_strategy": "lazy",        # a refused request never opens a connection upstream
        "body_size_limit": str(settings.guard_body_limit),  # larger bodies: 413
        "stream_large_bodies": None,          # a streamed body would be upstream before we decide
        "validate_inbound_headers": True,     # no request smuggling through odd headers
        "keep_host_header": False,            # the API sees its own Host, whatever the client sent
        # No HTTP/2 (ALPN offers HTTP/1 only): an h2 request without content-length,
        # forwarded as HTTP/1.1, smuggled a second request. The request hook frames
        # every admitted request exactly too, whatever the protocol.
        "http2": False,
        "tcp_timeout": settings.guard_idle_timeout,  # idle client connections are closed
        "rawtcp": False,
        "websocket": False,
    }


def build_master(settings: Settings, guard: object) -> Master:
    """mitmproxy with the proxy core, TLS for clients that speak it, the connection
    limits, and ``guard`` (must be called inside a running event loop). Raises the
    open-files limit first. The benchmark builds its do-nothing twin with this too."""
    Path(settings.guard_confdir).mkdir(parents=True, exist_ok=True)
    was = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_limit = limits.raise_fd_limit()
    most = limits.max_connections(settings.guard_max_connections, fd_limit)
    connection_limits = limits.ConnectionLimits(
        most, settings.guard_header_timeout, settings.guard_max_connections_per_client,
        settings.guard_trusted_proxies)
    log.info("open files limit %s %d; at most %d client connections, %d per client%s",
             "raised to" if fd_limit > was else "is", fd_limit, most, connection_limits.per_client,
             " (trusted proxies excepted)" if settings.guard_trusted_proxies else "")
    master = Master(options.Options(confdir=settings.guard_confdir))
    master.addons.add(
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        connection_limits,  # after NextLayer: sees its choice
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(),
        guard,
    )
    master.options.update(**proxy_options(settings))
    return master


async def serve(settings: Settings) -> None:
    database = db.make_readonly_database(settings.database_url)
    await database.connect()
    store = TokenStore(database, ttl=settings.guard_cache_ttl)
    try:
        await store.ping()
    except Exception as exc:  # fail closed: answer 503 until the database can be read
        log.error("guard cannot read its database (%s); receipts and health answer 503 until it can",
                  type(exc).__name__)
    try:
        listener = metrics.start(settings)
    except ListenerFailed as exc:  # before the guard serves: an operator must not run it blind
        await database.disconnect()
        print(f"smsgw: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        master = build_master(settings, Guard(store, settings.guard_trusted_proxies))
    except BaseException:  # e.g. SMSGW_GUARD_CONFDIR cannot be made: exit, not hang on the open database
        if listener is not None:
            listener.shutdown()
        await database.disconnect()
        raise
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    log.info("guard listening on http://%s:%d, forwarding admitted receipts to %s",
             settings.guard_host, settings.guard_port, settings.api_url)
    try:
        await master.run()
    finally:
        if listener is not None:
            listener.shutdown()
        await database.disconnect()


def run(settings: Settings) -> None:
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
