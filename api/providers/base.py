"""What every provider shares: the send in, the request out, the outcome back.

Nothing here knows a protocol. A provider module builds a ``WireRequest``
from a ``Submission`` and reads the gateway's reply into an ``Outcome``, both
pure, with the reply helpers below; ``api.gateway_call`` does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

from api import jsonsafe

# failure_code: why a send failed, in a word a program can branch on.
GATEWAY_ERROR = "gateway_error"        # the gateway answered with an error status
THROTTLED = "throttled"                # ... that says: too fast (Jasmin 403 throughput, HTTP 429)
UNREADABLE_REPLY = "unreadable_reply"  # a reply we could not read an id from
UNREACHABLE = "unreachable"            # no connection, or it broke
TIMEOUT = "timeout"                    # no answer within SMSGW_GATEWAY_TIMEOUT
SECRET_UNAVAILABLE = "secret_unavailable"  # the password is sealed with a key this process lacks

MAX_RETRY_AFTER = 3600.0  # seconds: a gateway asking for longer is still retried within the hour

# retry: may a failed send be tried again? (``api.retries`` decides whether it is)
SAFE = "safe"            # the gateway did not take the message: trying again cannot send it twice
AMBIGUOUS = "ambiguous"  # the gateway may have taken it: trying again may send it twice
# None: final, accepted or definitively refused (bad credentials, a bad number...)


@dataclass(frozen=True)
class Submission:
    """What one send hands the gateway, independent of the wire format."""

    to: str
    sender: str
    text: str
    dlr_url: str
    validity_minutes: int | None = None  # how long the SMSC may keep trying; None: its default


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
    retry: str | None = None          # SAFE, AMBIGUOUS, or None: final
    retry_after: float | None = None  # seconds, from the reply's Retry-After

    @property
    def timed_out(self) -> bool:
        return self.failure_code == TIMEOUT


@dataclass(frozen=True)
class Provider:
    """One ``provider_type``: its wire format, and what such a gateway usually listens on."""

    name: str
    build: Callable[[Mapping[str, Any], Submission], WireRequest]
    read: Callable[[int, bytes], Outcome]
    default_path: str
    default_port: int | None  # None: 80, or 443 with use_ssl


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


# --- reading replies ----------------------------------------------------------


def json_object(body: bytes) -> dict[str, Any] | None:
    """The reply as a storable JSON object, or None when it is not one."""
    try:
        value = jsonsafe.loads(body)
    except (ValueError, RecursionError):
        return None
    return jsonsafe.scrub(value) if isinstance(value, dict) else None


def as_remote_response(status: int, body: bytes, parsed: dict[str, Any] | None) -> dict[str, Any]:
    """What is stored of a reply: the JSON object, else the status and the start of the body."""
    if parsed is not None:
        return parsed
    return {"http_status": status, "body": jsonsafe.scrub(body[:2000].decode("utf-8", "replace"))}


def gateway_error(status: int, body: bytes, parsed: dict[str, Any] | None, detail: str | None,
                  code: str = GATEWAY_ERROR) -> Outcome:
    """An error status, read; ``code`` is THROTTLED when the provider recognised "too fast"."""
    reason = f"gateway answered HTTP {status}"
    if detail:
        reason += f": {jsonsafe.scrub(detail[:500])}"
    return Outcome(ok=False, remote_response=as_remote_response(status, body, parsed),
                   failure_reason=reason, failure_code=code, retry=retry_kind(status, code))


def retry_kind(status: int, code: str = GATEWAY_ERROR) -> str | None:
    """Whether an error status may be tried again.

    A throttle (429, Jasmin's throughput 403) and a 503 say the gateway did not
    take the message: SAFE. Any other 5xx may come after the gateway passed the
    message on: AMBIGUOUS. Any other 4xx (bad credentials, a bad number) would
    only be refused again: None, final.
    """
    if status in (429, 503) or code == THROTTLED:
        return SAFE
    if 500 <= status < 600:
        return AMBIGUOUS
    return None


def unreadable(status: int, body: bytes, parsed: dict[str, Any] | None, expected: str) -> Outcome:
    return Outcome(
        ok=False,
        remote_response=as_remote_response(status, body, parsed),
        failure_reason=f"gateway reply could not be understood (HTTP {status}): expected {expected}",
        failure_code=UNREADABLE_REPLY,
    )


def retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header in seconds from ``now``: delta-seconds or an HTTP date.

    Bounded to 0..MAX_RETRY_AFTER, so a date in the past means "now" and a
    gateway cannot park a message for a day; anything unreadable is None (ignored).
    """
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        seconds = float(int(digits)) if len(digits) <= 9 else MAX_RETRY_AFTER  # more digits: years
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:  # "-0000": a time in UTC, as HTTP dates are
            moment = moment.replace(tzinfo=now.tzinfo)
        seconds = (moment - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
