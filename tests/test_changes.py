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
           "canceled_at": None, "expires_at": None, "sequence": 2}
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


# --- sending at volume: new messages, claims, retries, expiry, cancel ---------------------------

GATEWAY = {"id": 1, "is_active": True, "throughput_per_second": None, "max_in_flight": 16,
           "default_validity_seconds": None}
LATER = "2026-11-27T13:00:00.000000Z"


def fields(**values) -> dict:
    return {"to_number": "+14155550123", "from_sender": "ACME", "message": "hi", "callback_url": "https://x/cb",
            "encoding": "gsm7", "segments": 1, **values}


def waiting(**values) -> dict:
    return message(**{"state": states.QUEUED, "delivery_status": states.QUEUED, "external_message_id": None,
                      "attempts": 0, "next_attempt_at": EARLIER, **values})


def test_new_messages_wait_for_the_dispatcher_unless_a_synchronous_send_claims_its_own_at_once():
    facts = Facts(gateway={**GATEWAY, "default_validity_seconds": 600}, new_ids=(11, 12, 13))
    plan = changes.plan(changes.NewMessages(1, (fields(), fields(send_at=LATER), fields(validity_period=None)),
                                            batch=True), Facts(**{**facts.__dict__, "new_batch_id": 4}), NOW, 3600)
    now_due, scheduled, no_validity = plan.inserts
    assert plan.result.message_ids == (11, 12, 13) and plan.result.batch_id == 4
    assert (now_due["state"], now_due["next_attempt_at"], now_due["claimed_at"]) == (states.QUEUED, NOW, None)
    assert now_due["expires_at"] == clock.after(NOW, 600)  # the gateway's default validity
    assert (scheduled["state"], scheduled["next_attempt_at"]) == (states.SCHEDULED, LATER)
    assert scheduled["expires_at"] == clock.after(LATER, 600)  # validity runs from when it may be sent
    assert no_validity["expires_at"] is None and no_validity["validity_period"] is None
    assert [e["message_id"] for e in plan.events] == [11, 12, 13] and plan.new_batch["size"] == 3
    sync = changes.plan(changes.NewMessages(1, (fields(),), claimed=True), Facts(gateway=GATEWAY, new_ids=(20,)),
                        NOW, 3600).inserts[0]
    assert (sync["claimed_at"], sync["attempts"], sync["next_attempt_at"]) == (NOW, 1, None)


def test_new_messages_for_an_inactive_or_missing_gateway_or_a_reused_key_store_nothing():
    change = changes.NewMessages(1, (fields(),), idempotency_key="k", request_hash="h1")
    assert changes.plan(change, Facts(gateway={**GATEWAY, "is_active": False}, new_ids=(1,)), NOW, 0).outcome \
        == "inactive"
    assert changes.plan(change, Facts(gateway=None, new_ids=(1,)), NOW, 0).outcome == "missing"
    held = {"id": 5, "request_hash": "h1", "created_at": EARLIER}
    replay = changes.plan(change, Facts(gateway=GATEWAY, new_ids=(1,), key_holder=held), NOW, 0)
    assert replay.result.replayed and replay.result.message_ids == (5,) and not replay.inserts
    other = changes.plan(change, Facts(gateway=GATEWAY, key_holder={**held, "request_hash": "h2"}), NOW, 0)
    assert other.outcome == "key_conflict" and not other.inserts
    old = {**held, "request_hash": "h2", "created_at": "2026-11-25T12:00:00.000000Z"}  # past the 24 h window
    released = changes.plan(change, Facts(gateway=GATEWAY, new_ids=(9,), key_holder=old), NOW, 0)
    assert released.release == ("message", 5) and released.result.message_ids == (9,)


def test_a_claim_takes_due_messages_up_to_max_in_flight_and_fails_expired_ones_without_a_token():
    due = [waiting(id=i, expires_at=LATER) for i in (1, 2, 3)] + [waiting(id=4, expires_at=EARLIER)]
    facts = Facts(gateway={**GATEWAY, "max_in_flight": 3}, in_flight=1, due=tuple(due))
    plan = changes.plan(changes.Claim(1, limit=10), facts, NOW, 0)
    assert [m["id"] for m in plan.result.messages] == [1, 2]  # 3 in flight at most, 1 already is
    assert all(m["claimed_at"] == NOW and m["attempts"] == 1 and m["next_attempt_at"] is None
               for m in plan.result.messages)
    assert plan.result.expired == 0  # id 4 lies beyond where the claim stopped
    expired_first = changes.plan(changes.Claim(1, 10), Facts(gateway=GATEWAY, due=(due[3], due[0])), NOW, 0)
    assert expired_first.result.expired == 1 and [m["id"] for m in expired_first.result.messages] == [1]
    failed = next(m for m in expired_first.messages if m["id"] == 4)
    assert (failed["state"], failed["failure_code"]) == (states.FAILED, changes.EXPIRED_CODE)
    inactive = changes.plan(changes.Claim(1, 10), Facts(gateway={**GATEWAY, "is_active": False}, due=tuple(due)),
                            NOW, 0)
    assert inactive.result.messages == ()


def test_a_claim_on_a_paced_gateway_takes_only_its_tokens_and_says_when_to_come_back():
    paced = {**GATEWAY, "throughput_per_second": 2.0}
    due = tuple(waiting(id=i) for i in range(1, 6))
    plan = changes.plan(changes.Claim(1, 10), Facts(gateway=paced, due=due), NOW, 0)
    assert len(plan.result.messages) == 1 and plan.result.delays == (0.0,)  # burst 1
    assert plan.bucket["tokens"] == 0 and plan.result.wait > 0
    later = changes.plan(changes.Claim(1, 10), Facts(gateway=paced, due=due[1:], bucket=plan.bucket),
                         clock.after(NOW, 0.45), 0)
    assert len(later.result.messages) == 1 and 0 < later.result.delays[0] <= 0.05  # claimed just ahead


def test_a_scheduled_message_is_claimed_only_once_its_time_has_come():
    scheduled = waiting(id=1, state=states.SCHEDULED, delivery_status=states.SCHEDULED, next_attempt_at=LATER)
    assert changes.plan(changes.Claim(1, 10), Facts(gateway=GATEWAY, due=(scheduled,)), NOW, 0).result.messages == ()
    plan = changes.plan(changes.Claim(1, 10), Facts(gateway=GATEWAY, due=(scheduled,)), LATER, 0)
    assert plan.result.messages[0]["state"] == states.QUEUED
    assert plan.events[0]["state_before"] == states.SCHEDULED


def test_the_dispatcher_s_answers_are_retried_only_when_the_gateway_did_not_take_the_message():
    from api import retries
    from api.providers.base import AMBIGUOUS, SAFE
    claimed = waiting(claimed_at=EARLIER, attempts=2, next_attempt_at=None)
    policy = retries.Policy(max_attempts=5)
    refused = Outcome(False, failure_code="unreachable", failure_reason="refused", retry=SAFE)
    retry = changes.plan(SendOutcome(7, 1, refused, policy, 4.0), Facts(message=claimed), NOW, 0)
    assert retry.outcome == "retry" and retry.message["state"] == states.QUEUED
    assert retry.message["next_attempt_at"] == clock.after(NOW, 4.0) and retry.message["claimed_at"] is None
    assert "attempt 2 of 5" in retry.event["reason"] and "4" in retry.event["reason"]
    throttled = Outcome(False, failure_code="throttled", failure_reason="too fast", retry=SAFE)
    again = changes.plan(SendOutcome(7, 1, throttled, policy, 1.0), Facts(message=claimed), NOW, 0)
    assert again.outcome == "retry" and again.message["attempts"] == 1  # a throttle uses up no attempt
    last = changes.plan(SendOutcome(7, 1, refused, policy, 4.0), Facts(message={**claimed, "attempts": 5}), NOW, 0)
    assert (last.outcome, last.message["failure_code"]) == ("failed", "unreachable")
    timeout = Outcome(False, failure_code="timeout", failure_reason="no answer", retry=AMBIGUOUS)
    ambiguous = changes.plan(SendOutcome(7, 1, timeout, policy, 1.0), Facts(message=claimed), NOW, 0)
    assert ambiguous.outcome == "failed" and ambiguous.message["claimed_at"] is None
    allowed = changes.plan(SendOutcome(7, 1, timeout, retries.Policy(5, retry_ambiguous=True), 1.0),
                           Facts(message=claimed), NOW, 0)
    assert allowed.outcome == "retry"
    expiring = {**claimed, "expires_at": clock.after(NOW, 2.0)}
    too_late = changes.plan(SendOutcome(7, 1, refused, policy, 4.0), Facts(message=expiring), NOW, 0)
    assert too_late.outcome == "failed"  # the next attempt would come after its validity


def test_only_a_message_no_call_has_begun_for_can_be_canceled_or_expire():
    assert changes.plan(changes.Cancel(7), Facts(message=waiting()), NOW, 0).message["state"] == states.CANCELED
    claimed = waiting(claimed_at=EARLIER, next_attempt_at=None)
    assert changes.plan(changes.Cancel(7), Facts(message=claimed), NOW, 0).outcome == "not_cancelable"
    assert changes.plan(changes.Cancel(7), Facts(message=message()), NOW, 0).outcome == "not_cancelable"
    assert changes.plan(changes.Cancel(7), Facts(), NOW, 0).outcome == "missing"
    assert changes.plan(changes.Expiry(7), Facts(message=waiting(expires_at=EARLIER)), NOW, 0).outcome == "expired"
    assert changes.plan(changes.Expiry(7), Facts(message=waiting(expires_at=LATER)), NOW, 0).outcome == "unchanged"
    assert changes.plan(changes.Expiry(7), Facts(message={**claimed, "expires_at": EARLIER}), NOW, 0).outcome \
        == "unchanged"  # its call began: interruption, not expiry, is its end if it never comes back
