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
import dataclasses
import logging
from typing import Any, Mapping

import httpx

from api import clock, passwords, providers, secrets
from api.providers.base import (
    AMBIGUOUS, SAFE, SECRET_UNAVAILABLE, TIMEOUT, UNREACHABLE, Outcome, Submission, WireRequest, retry_after,
)

log = logging.getLogger("smsgw.gateway_call")

MAX_REPLY_BYTES = 64 * 1024


async def send(
    client: httpx.AsyncClient,
    gateway: Mapping[str, Any],
    sub: Submission,
    timeout: float,
    keyring: secrets.Keyring = secrets.Keyring(),
) -> Outcome:
    """Send ``sub`` through ``gateway``; the whole exchange is bounded by ``timeout``.

    The password is opened here and nowhere else, and only for this request.
    """
    wire = providers.get(gateway["provider_type"])
    try:
        gateway = passwords.opened(keyring, gateway)
    except secrets.SecretUnavailable as exc:
        # an operator's fault (a missing SMSGW_SECRET_KEY_PREVIOUS), not the gateway's: it is not called
        log.error("gateway %s cannot be used: its password was %s", gateway.get("id"), exc)
        return Outcome(ok=False, failure_code=SECRET_UNAVAILABLE,
                       failure_reason=f"smsgw cannot read this gateway's password: it was {exc}")
    progress = _Progress()
    try:
        req = wire.build(gateway, sub)
        async with asyncio.timeout(timeout):
            status, body, wait = await _exchange(client, req, timeout, progress)
    # ConnectTimeout and PoolTimeout are TimeoutExceptions: caught here first, the request never left
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return _not_connected(_describe(exc))
    except (TimeoutError, httpx.TimeoutException):
        if progress.connecting and not progress.sent:  # our own deadline, met while connecting
            return _not_connected(f"no connection within {timeout:g} s")
        return Outcome(ok=False, failure_code=TIMEOUT, retry=AMBIGUOUS,
                       failure_reason=f"gateway did not answer within {timeout:g} s")
    except httpx.HTTPError as exc:  # the connection broke after the request may have left
        return Outcome(ok=False, failure_code=UNREACHABLE, retry=AMBIGUOUS,
                       failure_reason=f"gateway connection failed: {_describe(exc)}")
    except Exception as exc:  # e.g. httpx.InvalidURL: the message must still end failed, and for good
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
    """How far a request got, from httpcore's trace: did it start connecting, did it leave?

    Our ``asyncio.timeout`` starts before httpx's connect timeout and so usually
    fires first; this tells a gateway that never accepted the connection (safe
    to retry) from one that never answered (ambiguous).
    """

    connecting: bool = False
    sent: bool = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith((".connect_tcp.started", ".connect_unix_socket.started")):
            self.connecting = True
        elif event.endswith(".send_request_headers.started"):
            self.sent = True


async def _exchange(client: httpx.AsyncClient, req: WireRequest, timeout: float,
                    progress: _Progress) -> tuple[int, bytes, float | None]:
    """The reply's status, its body (up to MAX_REPLY_BYTES) and its Retry-After in seconds."""
    async with client.stream(
        req.method, req.url, json=req.json, data=req.form, headers=req.headers,
        auth=req.auth, timeout=timeout, follow_redirects=False, extensions={"trace": progress.trace},
    ) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_REPLY_BYTES:
                break
        wait = retry_after(response.headers.get("retry-after"), clock.now())
        return response.status_code, bytes(body[:MAX_REPLY_BYTES]), wait


def _describe(exc: Exception) -> str:
    # httpx's messages name the failure, never the credentials; an empty one gets its type.
    return str(exc) or type(exc).__name__
