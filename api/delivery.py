"""Applying one receipt to one message: the state decision, the update, the event.

Called with the message's row locked (inside ``db.write_transaction``), both
when a receipt arrives for a known message and when a receipt that arrived
first is applied to the message it was waiting for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from api import clock, db, events, states
from api.tables import messages


@dataclass(frozen=True)
class Incoming:
    """A receipt as it is applied: its raw status, fields, where and when it came from."""

    status: str
    payload: dict[str, Any]
    source_address: str | None
    received_at: str


async def apply_to_message(connection, dialect: str, message: Mapping[str, Any], receipt: Incoming) -> states.Decision:
    decision = states.decide(message["state"], message["delivery_status"], receipt.status)
    values: dict[str, Any] = {}
    if decision.changed:
        values.update(
            state=decision.state, delivery_status=decision.delivery_status,
            delivered_at=receipt.received_at, updated_at=clock.now_iso(),
            remote_response=db.json_merged(dialect, messages.c.remote_response, receipt.payload),
        )
        # failed_at says when it failed, if it is failed now (delivered wins over a failure)
        values["failed_at"] = receipt.received_at if decision.state == states.FAILED else None
    if decision.conflict and not message["status_conflict"]:
        values["status_conflict"] = True
    if values:
        await connection.execute(messages.update().where(messages.c.id == message["id"]).values(**values))
    await events.record(
        connection, message["id"], events.RECEIPT, changed=decision.changed, reason=decision.reason,
        raw_status=receipt.status, state_before=message["state"], state_after=decision.state,
        payload=receipt.payload, source_address=receipt.source_address, received_at=receipt.received_at,
    )
    return decision
