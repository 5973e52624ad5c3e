"""Jasmin (0.11), in one place: its two send APIs, and the receipts its thrower posts.

- ``jasmin``: the REST API, ``POST /secure/send`` with JSON and Basic Auth; it
  answers ``{"data": "Success \\"<id>"}`` (Jasmin drops the closing quote).
- ``jasmin-http``: the HTTP API, ``POST /send`` with a form and the credentials
  as fields; it answers ``Success "<id>"`` in text/plain.
- The DLR thrower posts receipts to ``dlr-url`` and counts one as delivered
  only when the answer's body is exactly ``ACK/Jasmin``.

Facts from ``../shared/reference/jasmin.md``; real samples in
``tests/providers/jasmin/testdata/``. The simulator and the bench use these
names, so what smsgw sends, reads and acknowledges is written down once.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Mapping

from api import encoding
from api.providers.base import (
    GATEWAY_ERROR, THROTTLED, Outcome, Provider, Submission, WireRequest, basic_auth, gateway_error,
    gateway_url, json_object, unreadable,
)

SUCCESS = re.compile(r'Success "([^"]+)')
ERROR = re.compile(r'Error "([^"]*)')
# The keys Jasmin's send API knows (the REST API turns underscores into dashes).
SEND_KEYS = frozenset({
    "username", "password", "to", "from", "coding", "content", "hex-content", "priority", "sdt",
    "validity-period", "dlr", "dlr-url", "dlr-level", "dlr-method", "tags", "custom_tlvs",
})


# --- sending: the fields both APIs take ---------------------------------------


def send_fields(sub: Submission) -> dict[str, Any]:
    """The send fields both Jasmin APIs take: GSM-7 as ``content``, else UCS-2 as hex.

    Receipts at level 3 (the SMSC's answer and the handset's): level 2 alone
    says nothing when the SMSC rejects the message. ``validity-period`` (whole
    minutes) when the message has one, so the SMSC stops trying when smsgw would.
    """
    encoded = encoding.encode(sub.text)
    fields: dict[str, Any] = {"to": sub.to, "from": sub.sender, "coding": encoded.data_coding}
    if encoded.encoding == encoding.GSM7:
        fields["content"] = sub.text
    else:
        fields["hex-content"] = encoding.ucs2_hex(sub.text)
    if sub.validity_minutes is not None:
        fields["validity-period"] = int(sub.validity_minutes)
    fields.update({"dlr": "yes", "dlr-url": sub.dlr_url, "dlr-level": 3, "dlr-method": "POST"})
    return fields


def build_rest(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    return WireRequest(method="POST", url=gateway_url(gateway), json=send_fields(sub), auth=basic_auth(gateway))


def read_rest(status: int, body: bytes) -> Outcome:
    """``200 {"data": "Success \\"<id>"}``, or an error status with ``{"message": "Error \\"<text>\\""}``."""
    parsed = json_object(body)
    if status != 200:
        text = str((parsed or {}).get("message") or (parsed or {}).get("data") or "")
        return _error(status, body, parsed, text)
    match = SUCCESS.search(str((parsed or {}).get("data", "")))
    if parsed is None or match is None:
        return unreadable(status, body, parsed, 'a Jasmin REST reply {"data": "Success \\"<id>"}')
    return Outcome(ok=True, external_id=match.group(1), remote_response=parsed)


def build_http(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    form = {key: str(value) for key, value in send_fields(sub).items()}
    form["username"] = gateway.get("username") or ""
    form["password"] = gateway.get("password") or ""
    return WireRequest(method="POST", url=gateway_url(gateway), form=form)


def read_http(status: int, body: bytes) -> Outcome:
    """``200 Success "<id>"`` in text/plain, or an error status with ``Error "<text>"``."""
    text = body[:2000].decode("utf-8", "replace").strip()
    if status != 200:
        return _error(status, body, None, text)
    match = SUCCESS.match(text)
    if match is None:
        return unreadable(status, body, None, 'Jasmin\'s reply Success "<id>"')
    return Outcome(ok=True, external_id=match.group(1), remote_response={"http_status": status, "body": text})


def _error(status: int, body: bytes, parsed: dict[str, Any] | None, text: str) -> Outcome:
    match = ERROR.search(text)
    detail = match.group(1) if match else (text or None)
    # Jasmin answers 403 "User throughput exceeded" when its per-user rate limit
    # refuses the send: not a fault of the message, a reason to slow down.
    code = THROTTLED if status == 403 and detail and "throughput exceeded" in detail.lower() else GATEWAY_ERROR
    return gateway_error(status, body, parsed, detail, code)


PROVIDERS = (
    Provider("jasmin", build_rest, read_rest, default_path="secure/send", default_port=8080),
    Provider("jasmin-http", build_http, read_http, default_path="send", default_port=1401),
)


# --- receipts: what the DLR thrower posts (jasmin/routing/throwers.py) --------

ACK = "ACK/Jasmin"  # the only answer that stops the thrower's retries
THROWER_AGENT_PREFIX = "Jasmin gateway/"  # then the version and the thrower's name
THROWER_USER_AGENT = THROWER_AGENT_PREFIX + "1.0 DLRThrower"
THROWER_HEADERS = {"Accept": "text/plain", "User-Agent": THROWER_USER_AGENT}
LEVEL1_OK = "ESME_ROK"
FINAL_STATUSES = ("DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD")


def is_thrower(headers: Mapping[str, str]) -> bool:
    """Jasmin's thrower says who it is, and asks for text/plain.

    ``headers``: Starlette's (any case), or a mapping keyed in lower case.
    """
    return headers.get("user-agent", "").startswith(THROWER_AGENT_PREFIX) or \
        headers.get("accept", "").strip().lower() == "text/plain"


def level1_receipt(message_id: str, connector: str, status: str = LEVEL1_OK) -> dict[str, str]:
    """The SMSC-level receipt, from the submit's answer: its fields, in the thrower's order."""
    return {"id": message_id, "level": "1", "message_status": status, "connector": connector}


def level2_receipt(message_id: str, status: str, smsc_id: str, text: str,
                   submitted: datetime, done: datetime) -> dict[str, str]:
    """The handset-level receipt: its fields, in the thrower's order.

    ``connector`` carries the SMSC's message id (in lower case), not the connector's.
    """
    delivered = status == "DELIVRD"
    return {
        "id": message_id, "level": "2", "message_status": status, "connector": smsc_id.lower(),
        "id_smsc": smsc_id, "sub": "001", "dlvrd": "001" if delivered else "000",
        "subdate": _stamp(submitted), "donedate": _stamp(done), "err": "000" if delivered else "001",
        "text": text[:20],
    }


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%y%m%d%H%M")
