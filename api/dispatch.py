"""Handing a message to a gateway: one wire format per ``provider_type``.

Each format is two pure functions — build the HTTP request, read the reply —
so tests call them directly with real wire samples; ``send`` is the only I/O.
Whatever happens, ``send`` returns an ``Outcome``: it never raises, because a
message must never be left ``queued`` by a gateway fault.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import httpx

from api import jsonsafe

log = logging.getLogger("smsgw.dispatch")

MAX_REPLY_BYTES = 64 * 1024
JASMIN_SUCCESS = re.compile(r'Success "([^"]+)')
JASMIN_ERROR = re.compile(r'Error "([^"]*)')
ID_FIELDS = ("message_id", "id", "messageId")


@dataclass(frozen=True)
class Submission:
    """What one send hands the gateway, independent of the wire format."""

    to: str
    sender: str
    text: str
    dlr_url: str


@dataclass(frozen=True)
class WireRequest:
    method: str
    url: str
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    external_id: str | None = None
    remote_response: dict[str, Any] | None = None
    failure_reason: str | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class WireFormat:
    build: Callable[[Mapping[str, Any], Submission], WireRequest]
    read: Callable[[int, bytes], Outcome]


def gateway_url(gateway: Mapping[str, Any]) -> str:
    scheme = "https" if gateway["use_ssl"] else "http"
    host = gateway["server_host"]
    if ":" in host and not host.startswith("["):  # an IPv6 literal needs its brackets
        host = f"[{host}]"
    return f"{scheme}://{host}:{gateway['server_port']}/{gateway['api_path'].lstrip('/')}"


def basic_auth(gateway: Mapping[str, Any]) -> tuple[str, str] | None:
    if gateway.get("username") is None:
        return None
    return (gateway["username"], gateway.get("password") or "")


# --- jasmin: Jasmin's REST API, POST /secure/send --------------------------


def build_jasmin_rest(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    return WireRequest(
        method="POST",
        url=gateway_url(gateway),
        json={
            "to": sub.to,
            "from": sub.sender,
            "content": sub.text,
            "dlr": "yes",
            "dlr-url": sub.dlr_url,
            # Level 3: the SMSC's answer and the handset's. Level 2 alone says
            # nothing when the SMSC rejects the message.
            "dlr-level": 3,
            "dlr-method": "POST",
        },
        auth=basic_auth(gateway),
    )


def read_jasmin_rest(status: int, body: bytes) -> Outcome:
    """``200 {"data": "Success \\"<id>"}`` (Jasmin drops the closing quote), or an error."""
    parsed = _json_object(body)
    if status != 200:
        return _gateway_error(status, body, parsed, _jasmin_error_text(parsed))
    match = JASMIN_SUCCESS.search(str((parsed or {}).get("data", "")))
    if parsed is None or match is None:
        return _unreadable(status, body, parsed, 'a Jasmin REST reply {"data": "Success \\"<id>"}')
    return Outcome(ok=True, external_id=match.group(1), remote_response=parsed)


def _jasmin_error_text(parsed: dict[str, Any] | None) -> str | None:
    if not parsed:
        return None
    text = str(parsed.get("message") or parsed.get("data") or "")
    match = JASMIN_ERROR.search(text)
    return match.group(1) if match else (text or None)


# --- http: a generic JSON gateway ---------------------------------------------


def build_http_json(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    return WireRequest(
        method="POST",
        url=gateway_url(gateway),
        json={"to": sub.to, "from": sub.sender, "content": sub.text, "dlr-url": sub.dlr_url},
        auth=basic_auth(gateway),
    )


def read_http_json(status: int, body: bytes) -> Outcome:
    """Any 2xx JSON object naming the id as ``message_id``, ``id`` or ``messageId``
    (at the top level or inside ``data``)."""
    parsed = _json_object(body)
    if not 200 <= status < 300:
        reason = None
        if parsed:
            reason = next((str(parsed[k]) for k in ("error", "message", "detail") if parsed.get(k)), None)
        return _gateway_error(status, body, parsed, reason)
    if parsed is None:
        return _unreadable(status, body, None, "a JSON object")
    external_id = _find_id(parsed) or _find_id(parsed.get("data"))
    if external_id is None:
        return _unreadable(status, body, parsed, "a message id (message_id, id or messageId)")
    return Outcome(ok=True, external_id=external_id, remote_response=parsed)


def _find_id(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in ID_FIELDS:
        found = value.get(key)
        if isinstance(found, (str, int)) and not isinstance(found, bool) and str(found).strip():
            return str(found).strip()
    return None


FORMATS: dict[str, WireFormat] = {
    "jasmin": WireFormat(build_jasmin_rest, read_jasmin_rest),
    "http": WireFormat(build_http_json, read_http_json),
}


# --- shared reply handling --------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The reply as a storable JSON object, or None when it is not one."""
    try:
        value = jsonsafe.loads(body)
    except (ValueError, RecursionError):
        return None
    return jsonsafe.scrub(value) if isinstance(value, dict) else None


def _as_remote_response(status: int, body: bytes, parsed: dict[str, Any] | None) -> dict[str, Any]:
    if parsed is not None:
        return parsed
    return {"http_status": status, "body": jsonsafe.scrub(body[:2000].decode("utf-8", "replace"))}


def _gateway_error(status: int, body: bytes, parsed: dict[str, Any] | None, detail: str | None) -> Outcome:
    reason = f"gateway answered HTTP {status}"
    if detail:
        reason += f": {detail[:500]}"
    return Outcome(ok=False, remote_response=_as_remote_response(status, body, parsed), failure_reason=reason)


def _unreadable(status: int, body: bytes, parsed: dict[str, Any] | None, expected: str) -> Outcome:
    return Outcome(
        ok=False,
        remote_response=_as_remote_response(status, body, parsed),
        failure_reason=f"gateway reply could not be understood (HTTP {status}): expected {expected}",
    )


# --- the I/O ----------------------------------------------------------------


async def send(
    client: httpx.AsyncClient,
    gateway: Mapping[str, Any],
    sub: Submission,
    timeout: float,
) -> Outcome:
    """Send ``sub`` through ``gateway``; the whole exchange is bounded by ``timeout``."""
    wire = FORMATS[gateway["provider_type"]]
    try:
        req = wire.build(gateway, sub)
        async with asyncio.timeout(timeout):
            status, body = await _exchange(client, req, timeout)
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(ok=False, timed_out=True,
                       failure_reason=f"gateway did not answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        return Outcome(ok=False, failure_reason=f"could not connect to the gateway: {_describe(exc)}")
    except httpx.HTTPError as exc:
        return Outcome(ok=False, failure_reason=f"gateway connection failed: {_describe(exc)}")
    except Exception as exc:  # e.g. httpx.InvalidURL: the message must still end failed
        log.error("sending through gateway %s failed unexpectedly: %s", gateway.get("id"), type(exc).__name__)
        return Outcome(ok=False, failure_reason=f"the gateway could not be called ({type(exc).__name__})")
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
