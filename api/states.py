"""Delivery state: what a raw status means, and whether a receipt may change a message.

Gateways report raw statuses (Jasmin's ``ESME_ROK``, ``DELIVRD``, ``UNDELIV``...).
smsgw keeps the raw one, lowercased, in ``delivery_status`` (the contract) and a
normalised ``state`` beside it:

    scheduled → queued → submitted → accepted → delivered
         ↘         ↘ ↘           ↘        ↘   ↘ failed
          canceled    (failed: refused, expired, interrupted)

``scheduled`` and ``queued`` messages wait for the dispatcher (``api.changes``
moves them; receipts cannot: they have no external id yet). ``canceled`` is
final and only ever set by a cancel.

The rule, which makes the outcome independent of the order receipts arrive in
and of how often each arrives: states are ranked
``queued < submitted < accepted < failed < delivered``; a receipt changes the
message only when its (rank, raw status) is greater than the message's — so a
late ``ESME_ROK`` never undoes ``DELIVRD``, a repeated receipt changes nothing,
and between two final reports that disagree, ``delivered`` wins (a handset's
confirmation outranks any failure report) and the message is flagged
``status_conflict``. Within one state, ties are broken by the raw status's
alphabetical order, so the same set of receipts always gives the same result.
A raw status this table does not know changes nothing and is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QUEUED, SUBMITTED, ACCEPTED, DELIVERED, FAILED = "queued", "submitted", "accepted", "delivered", "failed"
SCHEDULED, CANCELED = "scheduled", "canceled"
RANK = {SCHEDULED: 0, QUEUED: 0, SUBMITTED: 1, ACCEPTED: 2, CANCELED: 3, FAILED: 3, DELIVERED: 4}
FINAL = frozenset({DELIVERED, FAILED, CANCELED})
WAITING = frozenset({SCHEDULED, QUEUED})  # not yet handed to a gateway: a cancel may stop them

# Raw statuses (lowercased) and the state each means.
RAW_TO_STATE: dict[str, str] = {
    # the SMSC took it (Jasmin level 1, SMPP) or it is on its way
    "esme_rok": ACCEPTED, "acceptd": ACCEPTED, "accepted": ACCEPTED, "enroute": ACCEPTED,
    "sent": ACCEPTED, "buffered": ACCEPTED, "unknown": ACCEPTED,
    # the handset has it
    "delivrd": DELIVERED, "delivered": DELIVERED,
    # it will never arrive
    "undeliv": FAILED, "undelivered": FAILED, "rejectd": FAILED, "rejected": FAILED,
    "expired": FAILED, "deleted": FAILED, "failed": FAILED, "error": FAILED,
    # smsgw's own
    "queued": QUEUED, "submitted": SUBMITTED,
}
# Level-1 SMPP errors (ESME_R...) are failures, except a throttled submit, which
# Jasmin retries by itself: that one says nothing about the message's fate yet.
SMPP_ERROR = re.compile(r"^esme_r\w+$")
NOT_A_VERDICT = frozenset({"esme_rthrottled"})


def state_of(raw: str) -> str | None:
    """The state a raw status means, or None when it is not in the table."""
    raw = raw.lower()
    if raw in RAW_TO_STATE:
        return RAW_TO_STATE[raw]
    if SMPP_ERROR.match(raw) and raw not in NOT_A_VERDICT:
        return FAILED
    return None


@dataclass(frozen=True)
class Decision:
    changed: bool
    state: str            # the message's state after this receipt
    delivery_status: str  # its raw status after this receipt
    conflict: bool        # a final report that disagrees with the final state
    reason: str           # why it changed, or why not


def decide(state: str, delivery_status: str, raw: str) -> Decision:
    """What one receipt with raw status ``raw`` does to a message now at (state, delivery_status)."""
    raw = raw.lower()
    incoming = state_of(raw)
    if incoming is None:
        return Decision(False, state, delivery_status, False, "unknown status: recorded, state kept")
    conflict = state in FINAL and incoming in FINAL and incoming != state
    if (RANK[incoming], raw) > (RANK[state], delivery_status):
        reason = "conflicting final status: delivered wins" if conflict else "applied"
        return Decision(True, incoming, raw, conflict, reason)
    if raw == delivery_status:
        reason = "duplicate: nothing changes"
    elif conflict:
        reason = "conflicting final status: delivered wins, kept"
    elif state in FINAL:
        reason = f"already final ({state}): a later {incoming} report changes nothing"
    else:
        reason = f"does not move the message forward from {state}"
    return Decision(False, state, delivery_status, conflict, reason)
