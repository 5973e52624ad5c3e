"""Which change of a message an app hears about, and to which endpoints it goes: pure.

Every write of a message passes through ``noticed`` (``api.batches`` calls it
for each message a batch writes, in order), which says whether the write is an
event an app hears about — the message's state, raw status or conflict flag
changed, or it was just stored — and if so gives the message its next
``sequence`` and the outbox row (``webhook_events``) of the change. Events are
written, and deliveries made for the endpoints subscribed (``deliveries``), in
the same transaction as the change itself: there is no change without its
webhook, and no webhook for a change that was rolled back.

``sequence`` grows with each event of one message, so an app that gets two
callbacks out of order keeps the one with the higher number.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from api import states
from api.webhook_schedule import PENDING

QUEUED, SUBMITTED, DELIVERED, FAILED, EXPIRED, CANCELED, STATUS_UPDATED = (
    "message.queued", "message.submitted", "message.delivered", "message.failed", "message.expired",
    "message.canceled", "message.status_updated")
EVENT_TYPES = (QUEUED, SUBMITTED, DELIVERED, FAILED, EXPIRED, CANCELED, STATUS_UPDATED)

# A state whose arrival has an event of its own; any other change is STATUS_UPDATED
# (e.g. scheduled, a level-1 "accepted", a raw status or a conflict flag that changed).
BY_STATE = {states.QUEUED: QUEUED, states.SUBMITTED: SUBMITTED, states.DELIVERED: DELIVERED,
            states.FAILED: FAILED, states.CANCELED: CANCELED}
# What the outbox keeps of a message: what changes. The rest (its text, number, ...)
# is set once when it is stored, and read with the event when it is delivered.
SNAPSHOT = ("state", "delivery_status", "status_conflict", "external_message_id", "remote_response",
            "failure_reason", "failure_code", "submitted_at", "delivered_at", "failed_at", "updated_at",
            "attempts", "next_attempt_at", "canceled_at", "sequence")
EXPIRED_STATUS = "expired"  # the failure code smsgw gives, and the raw status SMSCs report, for validity run out


def event_type(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str | None:
    """The event a write of a message is (``before`` None: it was just stored), or None
    when nothing an app hears about changed (a claim, a retry's new due time...)."""
    state = after["state"]
    if before is not None:
        if (before["state"], before["delivery_status"], bool(before["status_conflict"])) == (
                state, after["delivery_status"], bool(after["status_conflict"])):
            return None
        if before["state"] == state:
            return STATUS_UPDATED
    if state == states.FAILED and EXPIRED_STATUS in (after["failure_code"], after["delivery_status"]):
        return EXPIRED
    return BY_STATE.get(state, STATUS_UPDATED)


def noticed(before: Mapping[str, Any] | None, after: dict[str, Any], now: str) -> dict[str, Any] | None:
    """The outbox row of this write (``after`` gets its next ``sequence``), or None."""
    kind = event_type(before, after)
    if kind is None:
        return None
    after["sequence"] = (before["sequence"] if before is not None else 0) + 1
    return {"message_id": after["id"], "sequence": after["sequence"], "sms_gateway_id": after["sms_gateway_id"],
            "type": kind, "occurred_at": now, "message": after}


def subscribes(endpoint: Mapping[str, Any], kind: str, gateway_id: int) -> bool:
    """Does ``endpoint`` (active or not) want events of ``kind`` about this gateway's messages?"""
    return kind in endpoint["events"] and (endpoint["gateway_ids"] is None or gateway_id in endpoint["gateway_ids"])


def outbox(notices: Iterable[Mapping[str, Any]], endpoints: list[Mapping[str, Any]], now: str
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events to keep and the deliveries to make.

    An event is kept when some endpoint subscribes to it, active or not, so a
    replay after an endpoint was disabled still finds it; it gets a delivery, due
    at once, for each active one. With no endpoint, nothing is written.
    """
    events, deliveries = [], []
    for notice in notices:
        kind, gateway_id = notice["type"], notice["sms_gateway_id"]
        wanted = [e for e in endpoints if subscribes(e, kind, gateway_id)]
        if not wanted:
            continue
        message = notice["message"]
        events.append({"message_id": notice["message_id"], "sequence": notice["sequence"],
                       "sms_gateway_id": gateway_id, "type": kind, "occurred_at": notice["occurred_at"],
                       "snapshot": {name: message[name] for name in SNAPSHOT}})
        deliveries.extend(new_delivery(e["id"], notice["message_id"], notice["sequence"], kind, now)
                          for e in wanted if e["is_active"])
    return events, deliveries


def new_delivery(endpoint_id: int, message_id: int, sequence: int, kind: str, now: str) -> dict[str, Any]:
    return {"endpoint_id": endpoint_id, "message_id": message_id, "sequence": sequence, "event_type": kind,
            "status": PENDING, "attempts": 0, "next_attempt_at": now, "last_attempt_at": None,
            "last_status_code": None, "last_latency_ms": None, "last_error": None, "last_response": None,
            "delivered_at": None, "created_at": now, "updated_at": now}
