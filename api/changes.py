"""What a change does to a message: one pure function, ``plan``, for every change.

A change is something that happened to a message (or to a receipt waiting for
one):

- ``Receipt``: a gateway reported a status for one of its external ids;
- ``ParkedReceipt``: a receipt that arrived before its message can now be applied;
- ``SendOutcome``: the gateway answered a send (``queued`` → ``submitted`` / ``failed``);
- ``Interruption``: a gateway call began (the message was claimed) and no answer was
  recorded long after any call could have ended: the process died (housekeeping);
- ``ParkedExpiry``: a parked receipt waited past ``SMSGW_UNMATCHED_TTL`` (housekeeping),
  or its gateway was deleted;
- ``NewMessages``: a send or a batch to store (``queued``, ``scheduled``, or claimed
  at once by a synchronous send), all or none;
- ``Claim``: the dispatcher takes the due messages of one gateway, as many as its
  token bucket and ``max_in_flight`` allow (``api.pacing``);
- ``Expiry``: a waiting message outlived its validity; ``Cancel``: a user stopped one;
- ``PauseGateway``: a gateway said "too fast": its bucket waits.

``plan`` is given the change, what the database holds about it (``Facts``) and
the time, and returns a ``Plan``: the message's values afterwards, the history
event, the parked-receipt row to add or resolve, and the changes this one
triggers (a send that names an external id applies the receipts parked for it).
It does no I/O. ``api.batches`` turns plans into statements, a whole batch at a
time; tests apply plans one by one and compare. No other code sets ``state`` or
``delivery_status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Union

from api import clock, notices, pacing, retries, states
from api.providers.base import Outcome

# Message columns a change may set: every write of a message sets all of them.
MUTABLE = ("state", "delivery_status", "status_conflict", "external_message_id", "remote_response",
           "failure_reason", "failure_code", "submitted_at", "delivered_at", "failed_at", "updated_at",
           "attempts", "next_attempt_at", "claimed_at", "canceled_at", "sequence")
# ... and what a plan reads of a message besides them (set once, when it is stored).
FIXED = ("id", "sms_gateway_id", "expires_at")
# What the dispatcher needs to send a message it claims.
TO_SEND = ("to_number", "from_sender", "message", "callback_url", "validity_period", "send_at",
           "client_reference")
MAX_EXTERNAL_ID = 255  # sms_messages.external_message_id


def keepable(external_id: str) -> bool:
    """Can a message keep this external id (and receipts find it by it)?"""
    return len(external_id) <= MAX_EXTERNAL_ID


# Parked receipts' status.
PENDING, APPLIED, EXPIRED = "pending", "applied", "expired"
# Events' kind.
RECEIPT, STATE = "receipt", "state"

INTERRUPTED = "interrupted"  # failure_code of a message whose gateway call never came back
INTERRUPTED_REASON = "interrupted: the process stopped before the gateway's answer was recorded; not resent"
EXPIRED_CODE = "expired"     # failure_code of a message not handed to its gateway within its validity
EXPIRED_REASON = "expired: not handed to the gateway within its validity period; never sent"
QUEUED_REASON = "stored before the gateway is contacted"
IDEMPOTENCY_WINDOW = 24 * 3600  # seconds an Idempotency-Key stays bound to its request


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
    """The gateway's answer to a send (what ``api.gateway_call.send`` returned) for one message.

    ``policy``: the dispatcher's attempts may be retried (``api.retries``), after
    ``delay`` seconds (its backoff, chosen with jitter by the caller: a plan has no
    randomness). A synchronous send has none: its caller hears the answer.
    """

    message_id: int
    gateway_id: int
    answer: Outcome
    policy: retries.Policy | None = None
    delay: float = 0.0
    want_row: bool = False  # answer ``Recorded`` (the outcome and the message's values), not just the outcome

    @property
    def key(self) -> tuple[int, str] | None:
        """The (gateway, external id) this answer gives its message, if it can keep one."""
        external_id = self.answer.external_id
        if self.answer.ok and external_id is not None and keepable(external_id):
            return (self.gateway_id, external_id)
        return None


@dataclass(frozen=True)
class Recorded:
    """A ``SendOutcome``'s answer when ``want_row``: a synchronous send answers with the
    message as it now is, without reading it back."""

    outcome: str
    values: Mapping[str, Any]  # the message's id, gateway, expires_at and every MUTABLE column


@dataclass(frozen=True)
class Interruption:
    message_id: int


@dataclass(frozen=True)
class ParkedExpiry:
    """A parked receipt's wait is over: its time ran out, or its gateway was deleted."""

    parked_id: int
    gateway_deleted: bool = False


@dataclass(frozen=True)
class NewMessages:
    """Messages to store for one gateway, in one transaction: all or none.

    ``rows`` are validated fields (``to_number``, ``from_sender``, ``message``,
    ``callback_url``, ``encoding``, ``segments``, optionally ``client_reference``,
    ``send_at``, ``validity_period`` — absent: the gateway's default; None: none).
    ``claimed``: a synchronous send, whose gateway call starts as soon as it is
    stored. ``batch``: a batch send, whose ``sms_batches`` row holds the key;
    otherwise the key is the message's own.
    """

    gateway_id: int
    rows: tuple[Mapping[str, Any], ...]
    claimed: bool = False
    batch: bool = False
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def key_kind(self) -> str:
        """Who holds its Idempotency-Key: the batch's row, or the message itself."""
        return "batch" if self.batch else "message"


@dataclass(frozen=True)
class Stored:
    """``NewMessages``' outcome when stored (or stored before, under the same key)."""

    message_ids: tuple[int, ...]
    batch_id: int | None = None
    replayed: bool = False  # the key's original request: nothing new was stored
    rows: tuple[Mapping[str, Any], ...] = ()  # the messages as stored (not when replayed)


@dataclass(frozen=True)
class Claim:
    """The dispatcher asks for at most ``limit`` due messages of one gateway."""

    gateway_id: int
    limit: int


@dataclass(frozen=True)
class Claimed:
    """``Claim``'s outcome: the messages to send now (their rows), and when to ask again."""

    messages: tuple[Mapping[str, Any], ...] = ()
    expired: int = 0
    wait: float | None = None  # seconds until the bucket allows another claim; None: not limited by it
    delays: tuple[float, ...] = ()  # for each message, seconds from ``now`` until its send may start
    now: str | None = None          # when the claim was planned: what ``delays`` count from


@dataclass(frozen=True)
class Expiry:
    message_id: int


@dataclass(frozen=True)
class Cancel:
    message_id: int


@dataclass(frozen=True)
class PauseGateway:
    """The gateway refused a send as too fast (Jasmin's throughput 403, HTTP 429): no
    replica sends through it for ``seconds``."""

    gateway_id: int
    seconds: float


Change = Union[Receipt, ParkedReceipt, SendOutcome, Interruption, ParkedExpiry, NewMessages, Claim, Expiry,
               Cancel, PauseGateway]


@dataclass(frozen=True)
class Facts:
    """What the database holds about a change, read under its locks."""

    message: Mapping[str, Any] | None = None  # the message the change is about, as it is now
    gateway_exists: bool = True               # (receipts) is there such a gateway?
    holder: int | None = None                 # (send outcomes) another message already holding the external id
    waiting: tuple[Mapping[str, Any], ...] = ()  # (send outcomes) receipts parked for the external id, oldest first
    parked: Mapping[str, Any] | None = None   # (parked expiry) the parked row
    gateway: Mapping[str, Any] | None = None  # (new messages, claims) the gateway's row, None: no such gateway
    key_holder: Mapping[str, Any] | None = None  # (new messages) the message or batch holding the key
    new_ids: tuple[int, ...] = ()             # (new messages) the ids the new rows get
    new_batch_id: int | None = None           # (new messages) the id a new batch row gets
    bucket: Mapping[str, Any] | None = None   # (claims, pauses) the gateway's pacing row
    in_flight: int = 0                        # (claims) its messages claimed and not yet answered
    due: tuple[Mapping[str, Any], ...] = ()   # (claims) its due messages, oldest first


@dataclass(frozen=True)
class Plan:
    outcome: str                               # what the change did, in a word (the receipt route's answer)
    message: dict[str, Any] | None = None      # the whole message afterwards; None: not written
    event: dict[str, Any] | None = None        # the history row to append
    park: dict[str, Any] | None = None         # a parked-receipt row to add
    resolve: dict[str, Any] | None = None      # values to set on the parked row the change is about
    later: tuple[Change, ...] = field(default=())  # changes this one triggers, applied next, in order
    result: Any = None                         # what the caller is answered, when not just ``outcome``
    messages: tuple[dict[str, Any], ...] = ()  # more messages written (claims)
    events: tuple[dict[str, Any], ...] = ()    # more history rows (new messages, claims)
    inserts: tuple[dict[str, Any], ...] = ()   # new messages to insert, with their ids
    new_batch: dict[str, Any] | None = None    # a sms_batches row to insert
    release: tuple[str, int] | None = None     # ("message"|"batch", id) whose old key is released
    bucket: dict[str, Any] | None = None       # the gateway's pacing row afterwards
    # the changes apps hear about (api.notices), for the outbox: filled in by ``plan`` itself
    notices: list[dict[str, Any]] = field(default_factory=list)


# --- the plan ------------------------------------------------------------------------


def plan(change: Change, facts: Facts, now: str, unmatched_ttl: float) -> Plan:
    """What ``change`` does, given ``facts``, at ``now`` (an ``api.clock`` timestamp).

    Each message it writes that an app would hear about (``api.notices``: its state or
    status changed, or it is new) gets its next ``sequence`` and a notice for the outbox.
    """
    planned = _plan(change, facts, now, unmatched_ttl)
    if planned.message is None and not planned.messages and not planned.inserts:
        return planned
    found = planned.notices
    if planned.message is not None:
        found.append(notices.noticed(facts.message, planned.message, now))
    if planned.messages:
        before = {m["id"]: m for m in facts.due}
        found.extend(notices.noticed(before.get(m["id"]), m, now) for m in planned.messages)
    found.extend(notices.noticed(None, row, now) for row in planned.inserts)
    found[:] = [notice for notice in found if notice is not None]
    return planned


def _plan(change: Change, facts: Facts, now: str, unmatched_ttl: float) -> Plan:
    if isinstance(change, Receipt):
        return _receipt(change, facts, now, unmatched_ttl)
    if isinstance(change, ParkedReceipt):
        return _parked_receipt(change, facts, now)
    if isinstance(change, SendOutcome):
        planned = _send_outcome(change, facts, now)
        if change.want_row:
            return replace(planned, result=Recorded(planned.outcome, planned.message or facts.message))
        return planned
    if isinstance(change, Interruption):
        return _interruption(facts, now)
    if isinstance(change, ParkedExpiry):
        return _parked_expiry(change, facts, now)
    if isinstance(change, NewMessages):
        return _new_messages(change, facts, now)
    if isinstance(change, Claim):
        return _claim(change, facts, now)
    if isinstance(change, Expiry):
        return _expiry(facts, now)
    if isinstance(change, Cancel):
        return _cancel(facts, now)
    if isinstance(change, PauseGateway):
        return Plan("paused", bucket=pacing.pause(facts.bucket, change.gateway_id, now, change.seconds))
    raise TypeError(f"not a change: {change!r}")


NOTHING_YET = {"external_message_id": None, "remote_response": None, "failure_reason": None, "failure_code": None,
               "submitted_at": None, "delivered_at": None, "failed_at": None, "canceled_at": None,
               "client_reference": None, "batch_id": None, "idempotency_key": None, "request_hash": None}


def new_message(fields: Mapping[str, Any], gateway: Mapping[str, Any], now: str, *, claimed: bool
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A message as first stored and its first event (``message_id`` as ``fields["id"]``).

    Claimed (a synchronous send): ``queued``, its first attempt begun. Otherwise it
    waits for the dispatcher: ``scheduled`` until a ``send_at`` in the future, else
    ``queued`` and due now. Its validity (``validity_period`` seconds, absent: the
    gateway's ``default_validity_seconds``, None: none) runs from when it may be sent.
    """
    send_at = fields.get("send_at")
    scheduled = not claimed and send_at is not None and send_at > now
    validity = fields["validity_period"] if "validity_period" in fields else gateway.get("default_validity_seconds")
    state = states.SCHEDULED if scheduled else states.QUEUED
    row = {**NOTHING_YET, **fields, "delivery_status": state, "state": state, "status_conflict": False,
           "validity_period": validity, "send_at": send_at,
           "expires_at": clock.after(max(send_at or now, now), validity) if validity is not None else None,
           "attempts": 1 if claimed else 0, "claimed_at": now if claimed else None, "sequence": 0,
           "next_attempt_at": None if claimed else (send_at if scheduled else now),
           "created_at": now, "updated_at": now}
    reason = QUEUED_REASON if claimed else (
        f"scheduled for {send_at}" if scheduled else "queued for the dispatcher")
    return row, _event(fields.get("id"), STATE, now, changed=True, state_after=state, reason=reason)


def _new_messages(change: NewMessages, facts: Facts, now: str) -> Plan:
    gateway = facts.gateway
    holder, release = facts.key_holder, None
    if holder is not None and clock.seconds_between(holder["created_at"], now) >= IDEMPOTENCY_WINDOW:
        holder, release = None, (change.key_kind, facts.key_holder["id"])
    if holder is not None:
        if holder["request_hash"] != change.request_hash:
            return Plan("key_conflict")
        if change.batch:
            return Plan("replayed", result=Stored((), batch_id=holder["id"], replayed=True))
        return Plan("replayed", result=Stored((holder["id"],), replayed=True))
    if gateway is None:
        return Plan("missing")
    if not gateway["is_active"]:
        return Plan("inactive")
    batch_id = facts.new_batch_id if change.batch else None
    key = {"idempotency_key": change.idempotency_key, "request_hash": change.request_hash}
    rows, events = [], []
    for message_id, fields in zip(facts.new_ids, change.rows):
        values = {**fields, "id": message_id, "sms_gateway_id": change.gateway_id, "batch_id": batch_id,
                  "idempotency_key": None, "request_hash": None}
        if not change.batch:
            values.update(key)
        row, event = new_message(values, gateway, now, claimed=change.claimed)
        rows.append(row)
        events.append(event)
    new_batch = None
    if change.batch:
        new_batch = {"id": batch_id, "sms_gateway_id": change.gateway_id, "size": len(rows),
                     "created_at": now, **key}
    bucket = None
    if change.claimed:  # its call starts now: it takes its token (see api.pacing)
        bucket = pacing.take(facts.bucket, change.gateway_id, gateway["throughput_per_second"], now, len(rows))
    return Plan("stored", inserts=tuple(rows), events=tuple(events), new_batch=new_batch, release=release,
                bucket=bucket,
                result=Stored(tuple(facts.new_ids), batch_id=batch_id, rows=tuple(rows)))


def no_call_begun(message: Mapping[str, Any]) -> bool:
    """Waiting for the dispatcher (scheduled, or queued and not claimed): no gateway call
    for it has begun, so it may still be canceled or expire, and is never interrupted."""
    return message["state"] in states.WAITING and message["claimed_at"] is None


def is_due(message: Mapping[str, Any], now: str) -> bool:
    """Waiting for the dispatcher, and its time has come."""
    return no_call_begun(message) and message["next_attempt_at"] is not None and message["next_attempt_at"] <= now


def has_expired(message: Mapping[str, Any], now: str) -> bool:
    return message["expires_at"] is not None and message["expires_at"] <= now


def claim_room(change: Claim, gateway: Mapping[str, Any] | None, bucket: Mapping[str, Any] | None,
               in_flight: int, now: str) -> tuple[int, int, float | None]:
    """How many messages ``change`` may take now (within its limit, the gateway's
    ``max_in_flight`` and its tokens; none for an inactive or unknown gateway), how many
    the bucket alone allows, and when it allows more (``pacing.available``). The batch
    sizes its read of due messages with it, and the plan claims with it."""
    if gateway is None or not gateway["is_active"]:
        return 0, 0, None
    allowed, wait = pacing.available(bucket, gateway["throughput_per_second"], now)
    return max(0, min(change.limit, gateway["max_in_flight"] - in_flight, allowed)), allowed, wait


def _claim(change: Claim, facts: Facts, now: str) -> Plan:
    """Claim what the gateway may take now: due, unexpired messages, oldest first, as many
    as the bucket has tokens and ``max_in_flight`` has room. An expired one ends
    ``failed`` instead (never sent) and takes no token."""
    gateway = facts.gateway
    if gateway is None or not gateway["is_active"]:
        return Plan("claimed", result=Claimed())
    room, allowed, wait = claim_room(change, gateway, facts.bucket, facts.in_flight, now)
    claimed, written, events, expired = [], [], [], 0
    for message in facts.due:
        if not is_due(message, now):
            continue  # changed earlier in this batch
        if has_expired(message, now):
            plan = _expiry(Facts(message=message), now)
            written.append(plan.message)
            events.append(plan.event)
            expired += 1
            continue
        if len(claimed) >= room:
            break
        attempt = message["attempts"] + 1
        updated = {**message, "state": states.QUEUED, "delivery_status": states.QUEUED, "attempts": attempt,
                   "claimed_at": now, "next_attempt_at": None, "updated_at": now}
        if message["state"] == states.SCHEDULED:  # its time has come: the change is worth a line
            events.append(_event(message["id"], STATE, now, changed=True, state_before=states.SCHEDULED,
                                 state_after=states.QUEUED, reason="its send_at has come: handed to the dispatcher"))
        claimed.append(updated)
        written.append(updated)
    rate = gateway["throughput_per_second"]
    delays = pacing.start_delays(facts.bucket, rate, now, len(claimed))
    bucket = pacing.take(facts.bucket, change.gateway_id, rate, now, len(claimed))
    if claimed and len(claimed) == allowed:
        wait = pacing.wait_for_token(bucket, rate, now)
    return Plan("claimed", messages=tuple(written), events=tuple(events), bucket=bucket,
                result=Claimed(tuple(claimed), expired, wait, delays, now))


def _expiry(facts: Facts, now: str) -> Plan:
    message = facts.message
    if message is None or not (no_call_begun(message) and has_expired(message, now)):
        return Plan("unchanged")
    return Plan(EXPIRED_CODE, message=_failed(message, now, EXPIRED_CODE, EXPIRED_REASON), event=_event(
        message["id"], STATE, now, changed=True, state_before=message["state"], state_after=states.FAILED,
        reason=EXPIRED_REASON))


def _cancel(facts: Facts, now: str) -> Plan:
    """Only a message no gateway call has begun for: once one has, the SMS may be on its way."""
    message = facts.message
    if message is None:
        return Plan("missing")
    if not no_call_begun(message):
        return Plan("not_cancelable")
    return Plan(states.CANCELED, message={
        **message, "state": states.CANCELED, "delivery_status": states.CANCELED, "next_attempt_at": None,
        "canceled_at": now, "updated_at": now,
    }, event=_event(message["id"], STATE, now, changed=True, state_before=message["state"],
                    state_after=states.CANCELED, reason="canceled before it was handed to the gateway"))


def _failed(message: Mapping[str, Any], now: str, code: str | None, reason: str | None) -> dict[str, Any]:
    return {**message, "state": states.FAILED, "delivery_status": states.FAILED, "failure_code": code,
            "failure_reason": reason, "failed_at": now, "updated_at": now, "next_attempt_at": None,
            "claimed_at": None}


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
    attempt = f"attempt {message['attempts']}: " if change.policy is not None else ""
    if not outcome.ok:
        reason = outcome.failure_reason or "failed"
        if change.policy is not None:
            seconds_left = clock.seconds_between(now, message["expires_at"]) if message["expires_at"] else None
            verdict = retries.verdict(outcome, message["attempts"], change.policy, seconds_left, change.delay)
            reason = verdict.reason
            if verdict.retry:
                return Plan("retry", message={
                    **message, "claimed_at": None, "next_attempt_at": clock.after(now, verdict.delay),
                    "attempts": message["attempts"] if verdict.counts else message["attempts"] - 1,
                    "updated_at": now,
                }, event=_event(message["id"], STATE, now, changed=False, state_before=states.QUEUED,
                                state_after=states.QUEUED, reason=reason, payload=outcome.remote_response))
        failed = {**_failed(message, now, outcome.failure_code, outcome.failure_reason),
                  "remote_response": outcome.remote_response}
        return Plan("failed", message=failed,
                    event=_event(message["id"], STATE, now, changed=True, state_before=states.QUEUED,
                                 state_after=states.FAILED, reason=reason, payload=outcome.remote_response))
    updated = {**message, "state": states.SUBMITTED, "delivery_status": states.SUBMITTED,
               "external_message_id": external_id, "remote_response": outcome.remote_response,
               "submitted_at": now, "updated_at": now, "claimed_at": None}
    if id_problem:
        updated["failure_reason"] = id_problem
    return Plan("submitted", message=updated, later=later, event=_event(
        message["id"], STATE, now, changed=True, state_before=states.QUEUED, state_after=states.SUBMITTED,
        payload=outcome.remote_response,
        reason=f"{attempt}the gateway accepted it as {outcome.external_id[:300]!r}"))


def _still_waiting(row: Mapping[str, Any], now: str) -> bool:
    """A parked receipt that may still find its message: pending, and its time not run out."""
    return row["status"] == PENDING and row["expires_at"] > now


def _interruption(facts: Facts, now: str) -> Plan:
    message = facts.message
    if message is None or message["state"] != states.QUEUED or message["claimed_at"] is None:
        return Plan("unchanged")  # its answer was recorded after all
    return Plan(INTERRUPTED, message=_failed(message, now, INTERRUPTED, INTERRUPTED_REASON), event=_event(message["id"], STATE, now, changed=True, state_before=states.QUEUED,
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

