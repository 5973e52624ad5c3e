"""``http``: a generic JSON gateway, for anything that is not Jasmin.

smsgw POSTs ``{"to", "from", "content", "dlr-url"}`` with Basic Auth, and reads
the message id from any 2xx JSON object. The simulator plays one at ``/http/send``;
samples in ``tests/providers/http_json/testdata/``.
"""

from __future__ import annotations

from typing import Any, Mapping

from api.providers.base import (
    GATEWAY_ERROR, THROTTLED, Outcome, Provider, Submission, WireRequest, basic_auth, gateway_error,
    gateway_url, json_object, unreadable,
)

ID_FIELDS = ("message_id", "id", "messageId")  # in this order, as the contract reads a receipt's id
REASON_FIELDS = ("error", "message", "detail")


def build(gateway: Mapping[str, Any], sub: Submission) -> WireRequest:
    return WireRequest(
        method="POST",
        url=gateway_url(gateway),
        json={"to": sub.to, "from": sub.sender, "content": sub.text, "dlr-url": sub.dlr_url},
        auth=basic_auth(gateway),
    )


def read(status: int, body: bytes) -> Outcome:
    """Any 2xx JSON object naming the id as ``message_id``, ``id`` or ``messageId``
    (at the top level or inside ``data``). A 429 says: too fast."""
    parsed = json_object(body)
    if not 200 <= status < 300:
        reason = None
        if parsed:
            reason = next((str(parsed[k]) for k in REASON_FIELDS if parsed.get(k)), None)
        return gateway_error(status, body, parsed, reason, THROTTLED if status == 429 else GATEWAY_ERROR)
    if parsed is None:
        return unreadable(status, body, None, "a JSON object")
    external_id = _find_id(parsed) or _find_id(parsed.get("data"))
    if external_id is None:
        return unreadable(status, body, parsed, "a message id (message_id, id or messageId)")
    return Outcome(ok=True, external_id=external_id, remote_response=parsed)


def _find_id(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in ID_FIELDS:
        found = value.get(key)
        if isinstance(found, (str, int)) and not isinstance(found, bool) and str(found).strip():
            return str(found).strip()
    return None


PROVIDERS = (Provider("http", build, read, default_path="send", default_port=None),)
