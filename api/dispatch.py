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

from api import encoding, jsonsafe, passwords, secrets

log = logging.getLogger("smsgw.dispatch")

MAX_REPLY_BYTES = 64 * 1024
JASMIN_SUCCESS = re.compile(r'Success "([^"]+)')
JASMIN_ERROR = re.compile(r'Error "([^"]*)')
ID_FIELDS = ("message_id", "id", "messageId")

# failure_code: why a send failed, in a word a program can branch on.
GATEWAY_ERROR = "gateway_error"        # the gateway answered with an error status
THROTTLED = "throttled"                # ... that says: too fast (Jasmin 403 throughput, HTTP 429)
UNREADABLE_REPLY = "unreadable_reply"  # a reply we could not read an id from
UNREACHABLE = "unreachable"            # no connection, or it broke
TIMEOUT = "timeout"                    # no answer within SMSGW_GATEWAY_TIMEOUT
SECRET_UNAVAILABLE = "secret_unavailable"  # the password is sealed with a key this process lacks


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
    failure_code: str | None = None

    @property
    def timed_out(self) -> bool:
        return self.failure_code == TIMEOUT


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


# --- Jasmin: the REST API (JSON, Basic Auth) and the HTTP API (form, credentials as fields)


def jasmin_fields(sub: Submission) -> dict[str, Any]:
    """The send fields both Jasmin APIs take: GSM-7 as ``content``, else UCS-2 as hex.

    Receipts at level 3 (the SMSC's answer and the handset's): level 2 alone
    says nothing when the SMSC rejects the message.
    """
    encoded = encoding.encode(sub.text)
    fields: dict[str, Any] = {"to": sub.to, "from": sub.sender, "coding": encoded.data_coding}
    if encoded.encoding == encoding.GSM7:
        fields["content"] = sub.text
    else:
        fields["hex-content"] = encoding.ucs2_hex(sub.text)
    fields.update({"dlr": "yes", "dlr-url": sub.dlr_url, "dlr-level": 3, "dlr-method": "POST"})
    return fields


def build_jasmin_rest(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    return WireRequest(method="POST", url=gateway_url(gateway), json=jasmin_fields(sub),
                       auth=basic_auth(gateway))


def read_jasmin_rest(status: int, body: bytes) -> Outcome:
    """``200 {"data": "Success \\"<id>"}`` (Jasmin drops the closing quote), or
    an error status with ``{"message": "Error \\"<text>\\""}``."""
    parsed = _json_object(body)
    if status != 200:
        text = str((parsed or {}).get("message") or (parsed or {}).get("data") or "")
        return _jasmin_error(status, body, parsed, text)
    match = JASMIN_SUCCESS.search(str((parsed or {}).get("data", "")))
    if parsed is None or match is None:
        return _unreadable(status, body, parsed, 'a Jasmin REST reply {"data": "Success \\"<id>"}')
    return Outcome(ok=True, external_id=match.group(1), remote_response=parsed)


def build_jasmin_http(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    form = {key: str(value) for key, value in jasmin_fields(sub).items()}
    form["username"] = gateway.get("username") or ""
    form["password"] = gateway.get("password") or ""
    return WireRequest(method="POST", url=gateway_url(gateway), form=form)


def read_jasmin_http(status: int, body: bytes) -> Outcome:
    """``200 Success "<id>"`` in text/plain, or an error status with ``Error "<text>"``."""
    text = body[:2000].decode("utf-8", "replace").strip()
    if status != 200:
        return _jasmin_error(status, body, None, text)
    match = JASMIN_SUCCESS.match(text)
    if match is None:
        return _unreadable(status, body, None, 'Jasmin\'s reply Success "<id>"')
    return Outcome(ok=True, external_id=match.group(1), remote_response={"http_status": status, "body": text})


def _jasmin_error(status: int, body: bytes, parsed: dict[str, Any] | None, text: str) -> Outcome:
    match = JASMIN_ERROR.search(text)
    detail = match.group(1) if match else (text or None)
    # Jasmin answers 403 "User throughput exceeded" when its per-user rate limit
    # refuses the send: not a fault of the message, a reason to slow down.
    code = THROTTLED if status == 403 and detail and "throughput exceeded" in detail.lower() else GATEWAY_ERROR
    return _gateway_error(status, body, parsed, detail, code)


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
        return _gateway_error(status, body, parsed, reason, THROTTLED if status == 429 else GATEWAY_ERROR)
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


@dataclass(frozen=True)
class Provider:
    """A wire format, and what a gateway of that type usually listens on."""

    build: Callable[[Mapping[str, Any], Submission], WireRequest]
    read: Callable[[int, bytes], Outcome]
    default_path: str
    default_port: int | None  # None: 80, or 443 with use_ssl


FORMATS: dict[str, Provider] = {
    "jasmin": Provider(build_jasmin_rest, read_jasmin_rest, "secure/send", 8080),
    "jasmin-http": Provider(build_jasmin_http, read_jasmin_http, "send", 1401),
    "http": Provider(build_http_json, read_http_json, "send", None),
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


def _gateway_error(status: int, body: bytes, parsed: dict[str, Any] | None, detail: str | None,
                   code: str = GATEWAY_ERROR) -> Outcome:
    reason = f"gateway answered HTTP {status}"
    if detail:
        reason += f": {jsonsafe.scrub(detail[:500])}"
    return Outcome(ok=False, remote_response=_as_remote_response(status, body, parsed),
                   failure_reason=reason, failure_code=code)


def _unreadable(status: int, body: bytes, parsed: dict[str, Any] | None, expected: str) -> Outcome:
    return Outcome(
        ok=False,
        remote_response=_as_remote_response(status, body, parsed),
        failure_reason=f"gateway reply could not be understood (HTTP {status}): expected {expected}",
        failure_code=UNREADABLE_REPLY,
    )


# --- the I/O ----------------------------------------------------------------


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
    wire = FORMATS[gateway["provider_type"]]
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
