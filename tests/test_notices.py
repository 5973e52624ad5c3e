"""Which writes of a message an app hears about, and where they go (api.notices): pure."""

from api import changes, notices, retries, states
from api.changes import Cancel, Claim, Facts, SendOutcome
from api.providers.base import Outcome
from tests.test_changes import EARLIER, NOW, message, receipt

def test_each_state_a_message_reaches_has_its_event():
    submitted = message()
    assert notices.event_type(submitted, message(state=states.DELIVERED, delivery_status="delivrd")) == notices.DELIVERED
    assert notices.event_type(submitted, message(state=states.FAILED, delivery_status="undeliv")) == notices.FAILED
    assert notices.event_type(submitted, message(state=states.ACCEPTED, delivery_status="esme_rok")) == \
        notices.STATUS_UPDATED  # level 1: no event of its own
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED)
    assert notices.event_type(queued, submitted) == notices.SUBMITTED
    assert notices.event_type(queued, message(state=states.CANCELED, delivery_status=states.CANCELED)) == \
        notices.CANCELED
    assert notices.event_type(None, queued) == notices.QUEUED
    assert notices.event_type(None, message(state=states.SCHEDULED, delivery_status=states.SCHEDULED)) == \
        notices.STATUS_UPDATED


def test_expiry_is_its_own_event_whether_smsgw_or_the_smsc_says_so():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED)
    ours = message(state=states.FAILED, delivery_status=states.FAILED, failure_code="expired")
    theirs = message(state=states.FAILED, delivery_status="expired")
    assert notices.event_type(queued, ours) == notices.EXPIRED
    assert notices.event_type(message(), theirs) == notices.EXPIRED


def test_a_write_that_changes_nothing_an_app_sees_is_no_event():
    queued = message(state=states.QUEUED, delivery_status=states.QUEUED, claimed_at=None)
    assert notices.event_type(queued, {**queued, "claimed_at": NOW, "attempts": 2}) is None
    delivered = message(state=states.FAILED, delivery_status="undeliv")
    assert notices.event_type(delivered, {**delivered, "status_conflict": True}) == notices.STATUS_UPDATED
    assert notices.event_type(delivered, {**delivered, "delivery_status": "rejectd"}) == notices.STATUS_UPDATED


def test_a_plan_numbers_each_event_of_a_message_and_only_events():
    plan = changes.plan(receipt("delivrd"), Facts(message=message()), NOW, 3600)
    assert plan.message["sequence"] == 3
    [notice] = plan.notices
    assert (notice["type"], notice["sequence"], notice["message_id"], notice["occurred_at"]) == \
        (notices.DELIVERED, 3, 7, NOW)
    duplicate = changes.plan(receipt("submitted"), Facts(message=message()), NOW, 3600)
    assert duplicate.notices == []


def test_a_claim_of_a_scheduled_message_is_queued_and_a_retry_is_nothing():
    waiting = message(state=states.SCHEDULED, delivery_status=states.SCHEDULED, next_attempt_at=EARLIER,
                      attempts=0, external_message_id=None, to_number="+4915100000", from_sender="A", message="m",
                      callback_url="http://x", validity_period=None, send_at=EARLIER, client_reference=None)
    gateway = {"id": 1, "is_active": True, "throughput_per_second": None, "max_in_flight": 16,
               "default_validity_seconds": None}
    plan = changes.plan(Claim(1, 5), Facts(gateway=gateway, due=(waiting,)), NOW, 3600)
    assert [n["type"] for n in plan.notices] == [notices.QUEUED]
    claimed = plan.messages[0]
    failed_once = Outcome(ok=False, failure_reason="503", failure_code="unavailable", retry="safe")
    again = changes.plan(SendOutcome(7, 1, failed_once, policy=retries.Policy(5, False), delay=1.0),
                         Facts(message=claimed), NOW, 3600)
    assert again.outcome == "retry" and again.notices == []


def test_a_cancel_is_an_event():
    plan = changes.plan(Cancel(7), Facts(message=message(state=states.QUEUED, delivery_status=states.QUEUED,
                                                         next_attempt_at=NOW)), NOW, 3600)
    assert [n["type"] for n in plan.notices] == [notices.CANCELED]


def endpoint(endpoint_id, events=notices.EVENT_TYPES, gateway_ids=None, is_active=True) -> dict:
    return {"id": endpoint_id, "events": list(events), "gateway_ids": gateway_ids, "is_active": is_active}


def test_the_outbox_keeps_what_someone_subscribes_to_and_delivers_to_the_active_only():
    after = message(state=states.DELIVERED, delivery_status="delivrd", sequence=3)
    notice = {"message_id": 7, "sequence": 3, "sms_gateway_id": 1, "type": notices.DELIVERED,
              "occurred_at": NOW, "message": after}
    events, deliveries = notices.outbox([notice], [
        endpoint(1), endpoint(2, events=[notices.FAILED]), endpoint(3, gateway_ids=[2]),
        endpoint(4, is_active=False), endpoint(5, gateway_ids=[1, 2])], NOW)
    assert [(e["message_id"], e["sequence"], e["type"]) for e in events] == [(7, 3, notices.DELIVERED)]
    assert events[0]["snapshot"]["state"] == states.DELIVERED and "message" not in events[0]["snapshot"]
    assert [d["endpoint_id"] for d in deliveries] == [1, 5]
    assert all(d["status"] == "pending" and d["next_attempt_at"] == NOW for d in deliveries)
    assert notices.outbox([notice], [endpoint(2, events=[notices.FAILED])], NOW) == ([], [])
