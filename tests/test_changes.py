"""The plan, called directly: what each kind of change does to a message, with no database."""

from __future__ import annotations

from api import changes, clock, states
from api.changes import Facts, Interruption, ParkedExpiry, ParkedReceipt, Receipt, SendOutcome
from api.providers.base import Outcome

NOW = "2026-11-27T12:00:00.000000Z"
EARLIER = "2026-11-27T11:59:00.000000Z"


def message(**values) -> dict:
    row = {"id": 7, "sms_gateway_id": 1, "state": states.SUBMITTED, "delivery_status": states.SUBMITTED,
           "status_conflict": False, "external_message_id": "ext-7", "remote_response": {"data": "Success"},
           "failure_reason": None, "failure_code": None, "submitted_at": EARLIER, "delivered_at": None,
           "failed_at": None, "updated_at": EARLIER, "attempts": 1, "next_attempt_at": None, "claimed_at": None,
           "canceled_at": None, "expires_at": None}
    return {**row, **values}


def receipt(status: str, external_id: str = "ext-7", **payload) -> Receipt:
    return Receipt(external_id, status, {"id": external_id, **payload}, 1, "10.0.0.1", EARLIER)


def parked(row_id: int, status: str, expires_at: str = "2026-11-29T12:00:00.000000Z") -> dict:
    return {"id": row_id, "sms_gateway_id": 1, "external_message_id": "ext-7", "raw_status": status,
            "payload": {"id": "ext-7", "stat": status}, "source_address": "10.0.0.2", "status": changes.PENDING,
            "message_id": None, "received_at": EARLIER, "expires_at": expires_at, "resolved_at": None}


def test_a_receipt_moves_its_message_forward_and_merges_its_fields():
    plan = changes.plan(receipt("DELIVRD".lower(), err="000"), Facts(message=message()), NOW, 3600)
    assert plan.outcome == "applied"
    assert (plan.message["state"], plan.message["delivery_status"]) == (states.DELIVERED, "delivrd")
    assert plan.message["remote_response"] == {"data": "Success", "id": "ext-7", "err": "000"}
    assert plan.message["delivered_at"] == EARLIER and plan.message["failed_at"] is None
    assert plan.event["kind"] == changes.RECEIPT and plan.event["changed"] is True
    assert (plan.park, plan.resolve, plan.later) == (None, None, ())


def test_a_late_receipt_changes_nothing_but_is_recorded():
    done = message(state=states.DELIVERED, delivery_status="delivrd")
    plan = changes.plan(receipt("esme_rok"), Facts(message=done), NOW, 3600)
    assert plan.message is None  # nothing to write but the event
    assert plan.event["changed"] is False and "already final" in plan.event["reason"]
    flagged = changes.plan(receipt("undeliv"), Facts(message=done), NOW, 3600)
    assert flagged.message["status_conflict"] is True and flagged.message["state"] == states.DELIVERED


def test_a_receipt_without_its_message_is_parked_until_the_ttl_and_ignored_for_an_unknown_gateway():
    plan = changes.plan(receipt("esme_rok", "ext-9"), Facts(message=None, gateway_exists=True), NOW, 3600)
    assert plan.outcome == "parked" and plan.message is None and plan.event is None
    assert plan.park["status"] == changes.PENDING and plan.park["expires_at"] == clock.after(NOW, 3600)
    ignored = changes.plan(receipt("esme_rok", "ext-9"), Facts(message=None, gateway_exists=False), NOW, 3600)
    assert (ignored.outcome, ignored.park, ignored.event) == ("ignored", None, None)


def test_an_accepted_send_submits_the_message_and_applies_the_receipts_waiting_for_its_id():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED, external_message_id=None)
    waiting = (parked(1, "esme_rok"), parked(2, "delivrd"), parked(3, "undeliv", expires_at=EARLIER))
    outcome = SendOutcome(7, 1, Outcome(True, "ext-7", {"data": 'Success "ext-7'}))
    plan = changes.plan(outcome, Facts(message=queued, waiting=waiting), NOW, 3600)
    assert plan.outcome == "submitted" and plan.message["external_message_id"] == "ext-7"
    # the expired one is not applied; the others come next, oldest first
    assert [later.parked["id"] for later in plan.later] == [1, 2]
    applied = changes.plan(plan.later[1], Facts(message=plan.message), NOW, 3600)
    assert applied.message["state"] == states.DELIVERED
    assert applied.resolve == {"status": changes.APPLIED, "message_id": 7, "resolved_at": NOW}


def test_an_id_another_message_holds_is_not_taken_and_the_message_says_why():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED, external_message_id=None)
    plan = changes.plan(SendOutcome(7, 1, Outcome(True, "ext-3")), Facts(message=queued, holder=3), NOW, 3600)
    assert plan.message["state"] == states.SUBMITTED and plan.message["external_message_id"] is None
    assert "already held by message 3" in plan.message["failure_reason"]
    too_long = changes.plan(SendOutcome(7, 1, Outcome(True, "x" * 256)), Facts(message=queued), NOW, 3600)
    assert too_long.message["external_message_id"] is None and "256 characters" in too_long.message["failure_reason"]


def test_a_refused_send_fails_the_message_with_its_code():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED, external_message_id=None)
    plan = changes.plan(SendOutcome(7, 1, Outcome(False, failure_code="timeout", failure_reason="no answer")),
                        Facts(message=queued), NOW, 3600)
    assert (plan.outcome, plan.message["state"], plan.message["failure_code"]) == ("failed", states.FAILED, "timeout")


def test_a_late_answer_gives_an_interrupted_message_its_id_but_never_replaces_one():
    interrupted = message(state=states.FAILED, delivery_status=states.FAILED, external_message_id=None,
                          failure_code=changes.INTERRUPTED)
    plan = changes.plan(SendOutcome(7, 1, Outcome(True, "ext-7")), Facts(message=interrupted), NOW, 3600)
    assert plan.outcome == "late" and plan.message["state"] == states.FAILED
    assert plan.message["external_message_id"] == "ext-7" and plan.event["changed"] is False
    keyed = changes.plan(SendOutcome(7, 1, Outcome(True, "ext-8")), Facts(message=message()), NOW, 3600)
    assert keyed.outcome == "late" and keyed.message is None and keyed.later == ()


def test_housekeeping_interrupts_only_a_message_still_queued_and_expires_only_a_pending_receipt_past_its_time():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED, external_message_id=None,
                     claimed_at=EARLIER)
    plan = changes.plan(Interruption(7), Facts(message=queued), NOW, 3600)
    assert plan.message["failure_code"] == changes.INTERRUPTED and plan.message["state"] == states.FAILED
    assert plan.message["claimed_at"] is None
    waiting = {**queued, "claimed_at": None, "next_attempt_at": NOW}  # waits for the dispatcher: no call began
    assert changes.plan(Interruption(7), Facts(message=waiting), NOW, 3600).outcome == "unchanged"
    assert changes.plan(Interruption(7), Facts(message=message()), NOW, 3600).outcome == "unchanged"
    assert changes.plan(ParkedExpiry(1), Facts(parked=parked(1, "esme_rok", expires_at=EARLIER)), NOW,
                        3600).resolve["status"] == changes.EXPIRED
    assert changes.plan(ParkedExpiry(1), Facts(parked=parked(1, "esme_rok")), NOW, 3600).outcome == "unchanged"


def test_a_parked_receipt_is_applied_as_the_receipt_it_was():
    row = parked(4, "delivrd")
    plan = changes.plan(ParkedReceipt(row), Facts(message=message()), NOW, 3600)
    assert plan.event["source_address"] == "10.0.0.2" and plan.event["received_at"] == EARLIER
    assert plan.message["remote_response"]["stat"] == "delivrd"
