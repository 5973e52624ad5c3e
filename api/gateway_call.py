"""The one HTTP call to a gateway: handing it a message, the I/O and only that.

What goes on the wire and how a reply reads is each provider's, in
``api.providers`` (pure functions, tested on real wire samples); ``send`` calls
the gateway's provider to build the request and read the reply. Whatever
happens, ``send`` returns an ``Outcome``: it never raises, because a message
must never be left ``queued`` by a gateway fault.

A failure says whether trying again could send the SMS twice (``Outcome.retry``):
a request that never left (no connection) is SAFE to retry; one that left and
got no answer (a timeout, a connection that broke) is AMBIGUOUS.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from typing import Any, Mapping

import aiohttp

from api import clock, metrics, passwords, providers, secrets
from api.providers.base import (
    AMBIGUOUS, SAFE, SECRET_UNAVAILABLE, TIMEOUT, UNREACHABLE, Outcome, Submission, WireRequest, retry_after,
)

log = logging.getLogger("smsgw.gateway_call")

MAX_REPLY_BYTES = 64 * 1024
USER_AGENT = "smsgw/0.1"


def open_client(max_connections: int = 100) -> aiohttp.ClientSession:
    """The HTTP client every gateway call goes through, one per process.

    aiohttp, not httpx: measured here, an httpx request costs ~1,000 µs of CPU and an
    aiohttp one ~60 µs (its HTTP parser is C), and a gateway call is most of what a
    synchronous send or a dispatched message costs. No cookies are kept, no
    redirect is followed, and ``_Progress`` is told how far each request got.
    """
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_sent)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=30),
        headers={"User-Agent": USER_AGENT}, cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[trace],
        auto_decompress=True)


async def send(
    client: aiohttp.ClientSession,
    gateway: Mapping[str, Any],
    sub: Submission,
    timeout: float,
    keyring: secrets.Keyring = secrets.Keyring(),
) -> Outcome:
    """Send ``sub`` through ``gateway``; the whole exchange is bounded by ``timeout``.

    The password is opened here and nowhere else, and only for this request. Every
    call is counted (``api.metrics.sent``): its time, and its failure_code if any.
    """
    started = time.perf_counter()
    outcome = await _send(client, gateway, sub, timeout, keyring)
    metrics.sent(gateway.get("id"), None if outcome.ok else outcome.failure_code or "unknown",
                 time.perf_counter() - started)
    return outcome


async def _send(client: aiohttp.ClientSession, gateway: Mapping[str, Any], sub: Submission, timeout: float,
                keyring: secrets.Keyring) -> Outcome:
    try:
        gateway = passwords.opened(keyring, gateway)
    except secrets.SecretUnavailable as exc:
        # an operator's fault (a missing SMSGW_SECRET_KEY_PREVIOUS), not the gateway's: it is not called
        log.error("gateway %s cannot be used: its password was %s", gateway.get("id"), exc)
        return Outcome(ok=False, failure_code=SECRET_UNAVAILABLE,
                       failure_reason=f"smsgw cannot read this gateway's password: it was {exc}")
    progress = _Progress()
    try:
        wire = providers.get(gateway["provider_type"])
        req = wire.build(gateway, sub)
        async with asyncio.timeout(timeout):
            status, body, wait = await _exchange(client, req, progress)
    # refused, no such host, no connection in time: the request never left
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        return _not_connected(_describe(exc))
    except TimeoutError:
        if not progress.sent:  # our own deadline, met while connecting or waiting for a free connection
            return _not_connected(f"no connection within {timeout:g} s")
        return Outcome(ok=False, failure_code=TIMEOUT, retry=AMBIGUOUS,
                       failure_reason=f"gateway did not answer within {timeout:g} s")
    except aiohttp.ClientError as exc:  # the connection broke after the request may have left
        return Outcome(ok=False, failure_code=UNREACHABLE, retry=AMBIGUOUS,
                       failure_reason=f"gateway connection failed: {_describe(exc)}")
    except Exception as exc:  # e.g. an invalid URL: the message must still end failed, and for good
        log.error("sending through gateway %s failed unexpectedly: %s", gateway.get("id"), type(exc).__name__)
        return Outcome(ok=False, failure_code=UNREACHABLE,
                       failure_reason=f"the gateway could not be called ({type(exc).__name__})")
    outcome = wire.read(status, body)
    return outcome if wait is None else dataclasses.replace(outcome, retry_after=wait)


def _not_connected(detail: str) -> Outcome:
    return Outcome(ok=False, failure_code=UNREACHABLE, retry=SAFE,
                   failure_reason=f"could not connect to the gateway: {detail}")


@dataclasses.dataclass
class _Progress:
    """How far a request got, from aiohttp's trace: did it leave?

    Our ``asyncio.timeout`` covers the whole exchange, waiting for a free
    connection and connecting included; this tells a request that never left
    (safe to retry) from one the gateway never answered (ambiguous).
    """

    sent: bool = False


async def _sent(session, context, params) -> None:
    context.trace_request_ctx.sent = True


def _body(req: WireRequest) -> tuple[bytes | dict[str, str] | None, dict[str, str]]:
    """The request's body and headers as the gateway expects them byte for byte: JSON
    compact and UTF-8 with ``Content-Type: application/json`` exactly (Jasmin's HTTP API
    reads JSON only then), forms url-encoded, Basic Auth over UTF-8."""
    headers = dict(req.headers)
    if req.auth is not None:
        pair = f"{req.auth[0]}:{req.auth[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    if req.json is not None:
        headers["Content-Type"] = "application/json"
        return json.dumps(req.json, ensure_ascii=False, separators=(",", ":")).encode(), headers
    return req.form, headers


async def _exchange(client: aiohttp.ClientSession, req: WireRequest,
                    progress: _Progress) -> tuple[int, bytes, float | None]:
    """The reply's status, its body (up to MAX_REPLY_BYTES) and its Retry-After in seconds."""
    data, headers = _body(req)
    async with client.request(req.method, req.url, data=data, headers=headers, allow_redirects=False,
                              trace_request_ctx=progress) as response:
        body = bytearray()
        while len(body) < MAX_REPLY_BYTES:
            chunk = await response.content.read(MAX_REPLY_BYTES - len(body))
            if not chunk:
                break
            body += chunk
        wait = retry_after(response.headers.get("Retry-After"), clock.now())
        return response.status, bytes(body), wait


def _describe(exc: Exception) -> str:
    # aiohttp's messages name the host and the failure, never the credentials (they travel
    # in headers or the body, never in the URL); an empty one gets its type.
    return str(exc) or type(exc).__name__
