"""What the guard decides, as pure functions: no I/O, no mitmproxy.

The guard only ever forwards a request it has reduced to a canonical DLR path
(``/api/sms-gateways/<id>/dlr`` or ``/webhooks/jasmin/<id>/dlr``, the id
written without leading zeros) and forwards it to exactly that path. The raw
path is matched strictly: percent-escapes, doubled or trailing slashes, dot
segments, ``;params``, other cases and non-integer ids are not DLR paths, so
they get 404 here and never reach the API under a spelling the API might
route differently from the guard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from api.callback_tokens import token_matches, well_formed
from api.db import MAX_ID

DLR_PATH = re.compile(r"^/(api/sms-gateways|webhooks/jasmin)/([1-9][0-9]{0,18})/dlr$")
DLR_METHODS = ("POST", "GET")  # Jasmin throws receipts with either
TOKEN_PARAM = "token"
TOKEN_HEADER = "X-Callback-Token"

MISSING, CONFLICT = "missing", "conflict"
# What the token store answers when it did not look: its budget of database reads is
# spent. "Forbidden" would be a guess (the gateway or its token may be a moment old).
UNCHECKED = "unchecked"


@dataclass(frozen=True)
class Target:
    gateway_id: int
    path: str   # canonical, what the API is sent
    query: str  # the query string without the token


@dataclass(frozen=True)
class Verdict:
    status: int
    message: str
    retry_after: int | None = None  # seconds, for a Retry-After header
    close: bool = False  # end the connection after answering: what follows cannot be trusted

    @property
    def allowed(self) -> bool:
        return self.status == 200


ALLOW = Verdict(200, "OK.")
NOT_FOUND = Verdict(404, "Not found.")
# A request whose head is broken: its framing is suspect, so the bytes behind it are
# not read as a request of their own (they may be one smuggled in its body).
MALFORMED = Verdict(400, "Bad request.", close=True)
MISSING_TOKEN = Verdict(401, "Unauthorized.")
CONFLICTING_TOKEN = Verdict(400, "Conflicting callback tokens: send exactly one.")
FORBIDDEN = Verdict(403, "Forbidden.")  # a wrong token and an unknown gateway look alike
UNAVAILABLE = Verdict(503, "Service unavailable.")
# Not looked at (too many database reads this second): try again. Not cached by nginx.
RETRY = Verdict(503, "Service unavailable, retry shortly.", retry_after=1)


def plain_headers(fields) -> bool:
    """Whether no header name or value (raw ``(name, value)`` bytes) holds CR, LF or NUL.

    mitmproxy keeps an obs-folded line ("a\r\n b") and a bare CR inside the value
    it read. Forwarded as they are, the API's parser would see a header line the
    guard never judged (a ``Transfer-Encoding`` hidden in a fold: smuggling). RFC
    9112 5.2 allows refusing them, so the guard does (400), whatever header it is."""
    return not any(b"\r" in part or b"\n" in part or b"\0" in part for field in fields for part in field)


def parse_target(method: str, raw_target: str) -> Target | None:
    """The DLR this request is for, or None when it is not a DLR request at all.

    ``raw_target`` is the request target exactly as the client sent it (path and
    query, origin form). Only ``[path]?[query]`` with a canonical path passes.
    """
    if method not in DLR_METHODS:
        return None
    path, _, query = raw_target.partition("?")
    match = DLR_PATH.match(path)
    if match is None or "#" in raw_target:
        return None
    gateway_id = int(match.group(2))
    if gateway_id > MAX_ID:
        return None
    pairs = parse_qsl(query, keep_blank_values=True)
    rest = urlencode([(k, v) for k, v in pairs if k != TOKEN_PARAM])
    return Target(gateway_id=gateway_id, path=f"/{match.group(1)}/{gateway_id}/dlr", query=rest)


def find_token(raw_target: str, header_values: list[str]) -> str:
    """The one callback token a request carries, or MISSING, or CONFLICT.

    Two ``token`` parameters, two headers, or a parameter and a header that
    differ are a conflict: the guard never picks one of several answers.
    """
    query = raw_target.partition("?")[2]
    params = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == TOKEN_PARAM]
    headers = [v.strip() for v in header_values]
    if len(params) > 1 or len(headers) > 1:
        return CONFLICT
    values = params + headers
    if not any(values):
        return MISSING  # none given, or only empty ones
    if len(set(values)) > 1:
        return CONFLICT  # a parameter and a header that differ (one may be empty)
    return values[0]


def verdict_for_token(token: str, credentials, now_iso: str) -> Verdict:
    """Compare ``token`` with the gateway's current and (each within its grace) previous tokens.

    ``credentials`` is the gateway's ``Credentials``, None when there is no such
    gateway, or UNCHECKED when the store could not look (a retry, not a refusal).
    """
    if token == MISSING:
        return MISSING_TOKEN
    if token == CONFLICT:
        return CONFLICTING_TOKEN
    if not well_formed(token):
        return FORBIDDEN  # no gateway has such a token: nothing to look up
    if credentials == UNCHECKED:
        return RETRY
    if credentials is None:
        return FORBIDDEN
    ok = token_matches(token, credentials.current, credentials.previous, now_iso)
    return ALLOW if ok else FORBIDDEN


def worth_a_fresh_look(token: str, verdict: Verdict) -> bool:
    """A refusal of a token that could be valid is checked again against the database:
    the gateway, or this token, may be newer than what the guard had cached."""
    return verdict == FORBIDDEN and well_formed(token)
