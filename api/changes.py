"""What a change does to a message: one pure function, ``plan``, for every change.

A change is something that happened to a message (or to a receipt waiting for
one):

- ``Receipt``: a gateway reported a status for one of its external ids;
- ``ParkedReceipt``: a receipt that arrived before its message can now be applied;
- ``SendOutcome``: the gateway answered a send (``queued`` → ``submitted`` / ``failed``);
- ``Interruption``: a message stayed ``queued`` past any gateway answer (housekeeping);
- ``ParkedExpiry``: a parked receipt waited past ``SMSGW_UNMATCHED_TTL`` (housekeeping),
  or its gateway was deleted.

``plan`` is given the change, what the database holds about it (``Facts``) and
the time, and returns a ``Plan``: the message's values afterwards, the history
event, the parked-receipt row to add or resolve, and the changes this one
triggers (a send that names an external id applies the receipts parked for it).
It does no I/O. ``api.batches`` turns plans into statements, a whole batch at a
time; tests apply plans one by one and compare. No other code sets ``state`` or
``delivery_status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from api import clock, states
from api.providers.base import Outcome

# Message columns a change may set: every write of a message sets all of them.
MUTABLE = ("state", "delivery_status", "status_conflict", "external_message_id", "remote_response",
           "failure_reason", "failure_code", "submitted_at", "delivered_at", "failed_at", "updated_at")
MAX_EXTERNAL_ID = 255  # sms_messages.external_message_id


def keepable(external_id: str) -> bool:
    """Can a message keep this external id (and receipts find it by it)?"""
    return len(external_id) <= MAX_EXTERNAL_ID


# Parked receipts' status.
PENDING, APPLIED, EXPIRED = "pending", "applied", "expired"
# Events' kind.
RECEIPT, STATE = "receipt", "state"

INTERRUPTED = "interrupted"  # failure_code of a message interrupted while queued
INTERRUPTED_REASON = "interrupted: the process stopped before the gateway's answer was recorded; not resent"
QUEUED_REASON = "stored before the gateway is contacted"


# --- changes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt on its way through: parsed from the gateway's fields
    (``api.receipts.parse_receipt``), then stamped with where and when it came from."""

    external_id: str | None
    status: str                       # raw, lowercased
    payload: dict[str, Any]           # the fields, scrubbed, secrets removed: merged into remote_response
    gateway_id: int | None = None
    source_address: str | None = None
    received_at: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.gateway_id, self.external_id)


@dataclass(frozen=True)
class ParkedReceipt:
    """A parked receipt (its ``unmatched_receipts`` row) applied to the message that now holds its id."""

    parked: Mapping[str, Any]


@dataclass(frozen=True)
class SendOutcome:
    """The gateway's answer to a send (what ``api.gateway_call.send`` returned) for one message."""

    message_id: int
    gateway_id: int
    answer: Outcome

    @property
    def key(self) -> tuple[int, str] | None:
        """The (gateway, external id) this answer gives its message, if it can keep one."""
        external_id = self.answer.external_id
        if self.answer.ok and external_id is not None and keepable(external_id):
            return (self.gateway_id, external_id)
        return None


@dataclass(frozen=True)
class Interruption:
    message_id: int


@dataclass(frozen=True)
class ParkedExpiry:
    """A parked receipt's wait is over: its time ran out, or its gateway was deleted."""

    parked_id: int
    gateway_deleted: bool = False


Change = Union[Receipt, ParkedReceipt, SendOutcome, Interruption, ParkedExpiry]


@dataclass(frozen=True)
class Facts:
    """What the database holds about a change, read under its locks."""

    message: Mapping[str, Any] | None = None  # the message the change is about, as it is now
    gateway_exists: bool = True               # (receipts) is there such a gateway?
    holder: int | None = None                 # (send outcomes) another message already holding the external id
    waiting: tuple[Mapping[str, Any], ...] = ()  # (send outcomes) receipts parked for the external id, oldest first
    parked: Mapping[str, Any] | None = None   # (parked expiry) the parked row


@dataclass(frozen=True)
class Plan:
    outcome: str                               # what the change did, in a word (the receipt route's answer)
    message: dict[str, Any] | None = None      # the whole message afterwards; None: not written
    event: dict[str, Any] | None = None        # the history row to append
    park: dict[str, Any] | None = None         # a parked-receipt row to add
    resolve: dict[str, Any] | None = None      # values to set on the parked row the change is about
    later: tuple[Change, ...] = field(default=())  # changes this one triggers, applied next, in order


# --- the plan ------------------------------------------------------------------------


def plan(change: Change, facts: Facts, now: str, unmatched_ttl: float) -> Plan:
    """What ``change`` does, given ``facts``, at ``now`` (an ``api.clock`` timestamp)."""
    if isinstance(change, Receipt):
        return _receipt(change, facts, now, unmatched_ttl)
    if isinstance(change, ParkedReceipt):
        return _parked_receipt(change, facts, now)
    if isinstance(change, SendOutcome):
        return _send_outcome(change, facts, now)
    if isinstance(change, Interruption):
        return _interruption(facts, now)
    if isinstance(change, ParkedExpiry):
        return _parked_expiry(change, facts, now)
    raise TypeError(f"not a change: {change!r}")


def new_message(fields: Mapping[str, Any], now: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A message as first stored, ``queued``, before its gateway is called, and its first event
    (without ``message_id``: the row has no id yet)."""
    row = {**fields, "delivery_status": states.QUEUED, "state": states.QUEUED, "status_conflict": False,
           "created_at": now, "updated_at": now}
    return row, _event(None, STATE, now, changed=True, state_after=states.QUEUED, reason=QUEUED_REASON)


def _receipt(receipt: Receipt, facts: Facts, now: str, unmatched_ttl: float) -> Plan:
    message = facts.message
    if message is None:
        if not facts.gateway_exists:
            return Plan("ignored")  # no such gateway: nothing will ever match
        return Plan("parked", park={
            "sms_gateway_id": receipt.gateway_id, "external_message_id": receipt.external_id,
            "raw_status": receipt.status, "payload": receipt.payload, "source_address": receipt.source_address,
            "status": PENDING, "message_id": None, "received_at": receipt.received_at,
            "expires_at": clock.after(now, unmatched_ttl), "resolved_at": None,
        })
    updated, event = _apply_receipt(message, receipt, now)
    return Plan("applied", message=updated, event=event)


def _parked_receipt(change: ParkedReceipt, facts: Facts, now: str) -> Plan:
    row = change.parked
    receipt = Receipt(row["external_message_id"], row["raw_status"], row["payload"] or {},
                      row["sms_gateway_id"], row["source_address"], row["received_at"])
    updated, event = _apply_receipt(facts.message, receipt, now)
    return Plan("applied", message=updated, event=event,
                resolve={"status": APPLIED, "message_id": facts.message["id"], "resolved_at": now})


def _apply_receipt(message: Mapping[str, Any], receipt: Receipt, now: str) -> tuple[dict | None, dict]:
    """The rule of ``api.states``: the message moves only forward, whatever the order receipts come in."""
    decision = states.decide(message["state"], message["delivery_status"], receipt.status)
    updated = dict(message)
    if decision.changed:
        updated.update(
            state=decision.state, delivery_status=decision.delivery_status,
            delivered_at=receipt.received_at, updated_at=now,
            # merged shallow: a key of the receipt replaces the stored key whole
            remote_response={**(message["remote_response"] or {}), **receipt.payload},
            # when it failed, if it is failed now (delivered wins over a failure)
            failed_at=receipt.received_at if decision.state == states.FAILED else None,
        )
    if decision.conflict:
        updated["status_conflict"] = True
    if updated == message:
        updated = None  # nothing to write (a duplicate, a late or out-of-order report): only the event
    event = _event(message["id"], RECEIPT, now, changed=decision.changed, reason=decision.reason,
                   raw_status=receipt.status, state_before=message["state"], state_after=decision.state,
                   payload=receipt.payload, source_address=receipt.source_address,
                   received_at=receipt.received_at)
    return updated, event


def _send_outcome(change: SendOutcome, facts: Facts, now: str) -> Plan:
    message, outcome = facts.message, change.answer
    external_id, id_problem = outcome.external_id, None
    if outcome.ok and not keepable(external_id):
        external_id, id_problem = None, (
            f"gateway returned an id of {len(external_id)} characters (at most {MAX_EXTERNAL_ID} are "
            "kept); receipts cannot be matched to this message")
    elif outcome.ok and facts.holder is not None and facts.holder != message["id"]:
        # The gateway reused an id another message of this gateway holds. The SMS went
        # out, so the message is submitted; receipts for that id match the earlier
        # message, and this one says why it will never get one.
        external_id, id_problem = None, (
            f"gateway returned id {outcome.external_id!r}, already held by message {facts.holder}; "
            "receipts cannot be matched to this message")
    waiting = facts.waiting if external_id is not None else ()
    later = tuple(ParkedReceipt(row) for row in waiting if _still_waiting(row, now))
    state = message["state"]
    if state != states.QUEUED:
        # e.g. marked interrupted meanwhile: the state stays, but an accepted send gives
        # a message without an external id its id, so its receipts still find it (and, if
        # it was delivered after all, "delivered wins" says so, flagged). An id the
        # message holds already is kept: receipts for it may still come.
        updated = None
        if outcome.ok and external_id is not None and message["external_message_id"] is None:
            updated = {**message, "external_message_id": external_id, "submitted_at": now, "updated_at": now}
        else:
            later = ()
        return Plan("late", message=updated, later=later, event=_event(
            message["id"], STATE, now, changed=False, state_before=state, state_after=state,
            payload=outcome.remote_response,
            reason="the gateway's answer came after the message had left queued"))
    if not outcome.ok:
        reason = outcome.failure_reason or "failed"
        return Plan("failed", message={
            **message, "state": states.FAILED, "delivery_status": states.FAILED,
            "failure_reason": outcome.failure_reason, "failure_code": outcome.failure_code,
            "remote_response": outcome.remote_response, "failed_at": now, "updated_at": now,
        }, event=_event(message["id"], STATE, now, changed=True, state_before=states.QUEUED,
                        state_after=states.FAILED, reason=reason, payload=outcome.remote_response))
    updated = {**message, "state": states.SUBMITTED, "delivery_status": states.SUBMITTED,
               "external_message_id": external_id, "remote_response": outcome.remote_response,
               "submitted_at": now, "updated_at": now}
    if id_problem:
        updated["failure_reason"] = id_problem
    return Plan("submitted", message=updated, later=later, event=_event(
        message["id"], STATE, now, changed=True, state_before=states.QUEUED, state_after=states.SUBMITTED,
        payload=outcome.remote_response, reason=f"the gateway accepted it as {outcome.external_id[:300]!r}"))


def _still_waiting(row: Mapping[str, Any], now: str) -> bool:
    """A parked receipt that may still find its message: pending, and its time not run out."""
    return row["status"] == PENDING and row["expires_at"] > now


def _interruption(facts: Facts, now: str) -> Plan:
    message = facts.message
    if message is None or message["state"] != states.QUEUED:
        return Plan("unchanged")  # its answer was recorded after all
    return Plan(INTERRUPTED, message={
        **message, "state": states.FAILED, "delivery_status": states.FAILED, "failure_code": INTERRUPTED,
        "failure_reason": INTERRUPTED_REASON, "failed_at": now, "updated_at": now,
    }, event=_event(message["id"], STATE, now, changed=True, state_before=states.QUEUED,
                    state_after=states.FAILED, reason=INTERRUPTED_REASON))


def _parked_expiry(change: ParkedExpiry, facts: Facts, now: str) -> Plan:
    row = facts.parked
    if row is None or row["status"] != PENDING or (_still_waiting(row, now) and not change.gateway_deleted):
        return Plan("unchanged")
    return Plan(EXPIRED, resolve={"status": EXPIRED, "message_id": None, "resolved_at": now})


def _event(message_id: int | None, kind: str, now: str, *, changed: bool, reason: str,
           raw_status: str | None = None, state_before: str | None = None, state_after: str | None = None,
           payload: dict | None = None, source_address: str | None = None,
           received_at: str | None = None) -> dict[str, Any]:
    return {"message_id": message_id, "kind": kind, "raw_status": raw_status, "state_before": state_before,
            "state_after": state_after, "changed": changed, "reason": reason, "payload": payload,
            "source_address": source_address, "received_at": received_at or now, "created_at": now}

