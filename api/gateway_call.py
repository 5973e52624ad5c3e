"""The one HTTP call to a gateway: handing it a message, the I/O and only that.

What goes on the wire and how a reply reads is each provider's, in
``api.providers`` (pure functions, tested on real wire samples); ``send`` calls
the gateway's provider to build the request and read the reply. Whatever
happens, ``send`` returns an ``Outcome``: it never raises, because a message
must never be left ``queued`` by a gateway fault.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

import httpx

from api import passwords, providers, secrets
from api.providers.base import SECRET_UNAVAILABLE, TIMEOUT, UNREACHABLE, Outcome, Submission, WireRequest

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
    try:
        req = wire.build(gateway, sub)
        async with asyncio.timeout(timeout):
            status, body = await _exchange(client, req, timeout)
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(ok=False, failure_code=TIMEOUT,
                       failure_reason=f"gateway did not answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        return Outcome(ok=False, failure_code=UNREACHABLE,
                       failure_reason=f"could not connect to the gateway: {_describe(exc)}")
    except httpx.HTTPError as exc:
        return Outcome(ok=False, failure_code=UNREACHABLE,
                       failure_reason=f"gateway connection failed: {_describe(exc)}")
    except Exception as exc:  # e.g. httpx.InvalidURL: the message must still end failed
        log.error("sending through gateway %s failed unexpectedly: %s", gateway.get("id"), type(exc).__name__)
        return Outcome(ok=False, failure_code=UNREACHABLE,
                       failure_reason=f"the gateway could not be called ({type(exc).__name__})")
    return wire.read(status, body)


async def _exchange(client: httpx.AsyncClient, req: WireRequest, timeout: float) -> tuple[int, bytes]:
    async with client.stream(
        req.method, req.url, json=req.json, data=req.form, headers=req.headers,
        auth=req.auth, timeout=timeout, follow_redirects=False,
    ) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= MAX_REPLY_BYTES:
                break
        return response.status_code, bytes(body[:MAX_REPLY_BYTES])


def _describe(exc: Exception) -> str:
    # httpx's messages name the failure, never the credentials; an empty one gets its type.
    return str(exc) or type(exc).__name__
