"""Running the guard: mitmproxy in reverse mode, with only the addons it needs.

No script loader (a failed hot reload of a ``-s`` script unregisters the
guard and leaves the proxy forwarding unguarded), no onboarding app, no
replay or rewrite addons: the proxy core, TLS for clients that speak it, and
the guard, registered in code.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from api import db
from api.config import Settings
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
        "http2": True,
        "rawtcp": False,
        "websocket": False,
    }


def build_master(settings: Settings, guard: object) -> Master:
    """mitmproxy with the proxy core, TLS for clients that speak it, and ``guard``
    (must be called inside a running event loop). The benchmark builds its
    do-nothing twin with this too."""
    Path(settings.guard_confdir).mkdir(parents=True, exist_ok=True)
    master = Master(options.Options(confdir=settings.guard_confdir))
    master.addons.add(
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        errorcheck.ErrorCheck(),
        guard,
    )
    master.options.update(**proxy_options(settings))
    return master


async def serve(settings: Settings) -> None:
    database = db.make_database(settings.database_url)
    await database.connect()
    master = build_master(settings, Guard(TokenStore(database, ttl=settings.guard_cache_ttl)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    log.info("guard listening on http://%s:%d, forwarding admitted receipts to %s",
             settings.guard_host, settings.guard_port, settings.api_url)
    try:
        await master.run()
    finally:
        await database.disconnect()


def run(settings: Settings) -> None:
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    asyncio.run(serve(settings))
