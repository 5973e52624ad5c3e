"""Status webhook deliveries over the live API, on SQLite and PostgreSQL: the list (newest
first, paged, by status), retry (never while delivering, never to an endpoint that is off)
and replay of a time window (exactly the matching events; ended deliveries queued again,
pending ones left alone). The events and deliveries are written straight into the tables,
in the past or due far ahead, so the webhook worker never touches what a test reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# hooks_api and hooks are fixtures: one API (per database) for both webhook test modules.
from tests.test_webhook_endpoints_api import (  # noqa: F401
    hooks, hooks_api, make_endpoint, make_gateway, refused, run_sql,
)
from tests.servers import error_body

FAR = "2099-01-01T00:00:00.000000Z"  # due then: no worker claims it during a test
OLD = "2021-01-01T09:00:00.000000Z"
RETURNING_ID = " RETURNING id"


def stamp(hour: int, minute: int = 0) -> str:
    return f"2021-01-01T{hour:02d}:{minute:02d}:00.000000Z"


def insert_message(api, gateway_id: int) -> int:
    """A delivered message stored past the pipeline: it makes no event of its own."""
    return run_sql(api, "INSERT INTO sms_messages (sms_gateway_id, to_number, from_sender, message, callback_url, "
                        "delivery_status, state, status_conflict, created_at, updated_at, sequence) VALUES "
                        f"({gateway_id}, '+14155550100', 'ACME', 'hi', 'https://sms.example.test/dlr', 'delivrd', "
                        f"'delivered', false, '{OLD}', '{OLD}', 9)" + RETURNING_ID)[0][0]


def insert_event(api, message_id: int, sequence: int, gateway_id: int, kind: str, occurred_at: str) -> None:
    run_sql(api, "INSERT INTO webhook_events (message_id, sequence, sms_gateway_id, type, occurred_at, snapshot) "
                 f"VALUES ({message_id}, {sequence}, {gateway_id}, '{kind}', '{occurred_at}', '{{}}')")


def insert_delivery(api, endpoint_id: int, message_id: int, sequence: int, kind: str, status: str,
                    attempts: int = 1, next_attempt_at: str | None = None) -> int:
    due = f"'{next_attempt_at}'" if next_attempt_at else "NULL"
    return run_sql(api, "INSERT INTO webhook_deliveries (endpoint_id, message_id, sequence, event_type, status, "
                        "attempts, next_attempt_at, last_attempt_at, last_status_code, last_latency_ms, last_error, "
                        "last_response, created_at, updated_at) VALUES "
                        f"({endpoint_id}, {message_id}, {sequence}, '{kind}', '{status}', {attempts}, {due}, "
                        f"'{OLD}', 500, 12.5, 'HTTP 500', 'oops', '{OLD}', '{OLD}')" + RETURNING_ID)[0][0]


def deliveries_of(api, endpoint_id: int) -> dict[tuple[int, int], dict]:
    """The endpoint's deliveries by (message, sequence), as the database holds them."""
    columns = ("id", "message_id", "sequence", "status", "attempts", "next_attempt_at", "created_at", "updated_at")
    rows = run_sql(api, f"SELECT {', '.join(columns)} FROM webhook_deliveries WHERE endpoint_id = {endpoint_id}")
    return {(row[1], row[2]): dict(zip(columns, row)) for row in rows}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_deliveries_are_listed_newest_first_a_page_at_a_time_and_by_status(hooks_api, hooks):
    gateway = make_gateway(hooks)
    endpoint = make_endpoint(hooks)
    message = insert_message(hooks_api, gateway)
    ids = [insert_delivery(hooks_api, endpoint["id"], message, 1, "message.queued", "succeeded"),
           insert_delivery(hooks_api, endpoint["id"], message, 2, "message.submitted", "failed", attempts=8),
           insert_delivery(hooks_api, endpoint["id"], message, 3, "message.delivered", "pending", next_attempt_at=FAR)]
    other = make_endpoint(hooks)
    insert_delivery(hooks_api, other["id"], message, 1, "message.queued", "succeeded")
    url = f"/api/webhook-endpoints/{endpoint['id']}/deliveries"
    first = hooks.get(url, params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [d["id"] for d in page["data"]] == [ids[2], ids[1]] and page["meta"]["next_cursor"]
    newest = page["data"][0]
    assert newest == {
        "id": ids[2], "endpoint_id": endpoint["id"], "webhook_id": f"msg_{message}_3",
        "event_type": "message.delivered", "message_id": message, "sequence": 3, "status": "pending", "attempts": 1,
        "last_status_code": 500, "last_latency_ms": 12.5, "last_error": "HTTP 500", "last_response": "oops",
        "next_attempt_at": FAR, "last_attempt_at": OLD, "delivered_at": None, "created_at": OLD, "updated_at": OLD}
    second = hooks.get(url, params={"limit": 2, "cursor": page["meta"]["next_cursor"]}).json()
    assert [d["id"] for d in second["data"]] == [ids[0]] and second["meta"]["next_cursor"] is None
    failed = hooks.get(url, params={"status": "failed"}).json()["data"]
    assert [(d["id"], d["attempts"]) for d in failed] == [(ids[1], 8)]
    refused(hooks.get(url, params={"status": "lost"}), "status")
    refused(hooks.get(url, params={"cursor": "nonsense"}), "cursor")
    assert error_body(hooks.get("/api/webhook-endpoints/987654321/deliveries")) == {"message": "Webhook endpoint not found."}


def test_retry_sends_one_again_now_with_the_schedule_started_over(hooks_api, hooks):
    gateway = make_gateway(hooks)
    endpoint = make_endpoint(hooks)
    message = insert_message(hooks_api, gateway)
    failed = insert_delivery(hooks_api, endpoint["id"], message, 1, "message.failed", "failed", attempts=8)
    before = now_iso()
    retried = hooks.post(f"/api/webhook-deliveries/{failed}/retry")
    assert retried.status_code == 200, retried.text
    data = retried.json()["data"]
    assert (data["id"], data["status"], data["attempts"], data["webhook_id"]) == (
        failed, "pending", 0, f"msg_{message}_1")
    assert before <= data["next_attempt_at"] <= now_iso() and data["updated_at"] == data["next_attempt_at"]
    # being delivered right now: 409, and nothing changes
    busy = insert_delivery(hooks_api, endpoint["id"], message, 2, "message.failed", "delivering", attempts=3,
                           next_attempt_at=FAR)
    conflict = hooks.post(f"/api/webhook-deliveries/{busy}/retry")
    assert conflict.status_code == 409 and "right now" in conflict.json()["message"]
    assert deliveries_of(hooks_api, endpoint["id"])[(message, 2)]["status"] == "delivering"
    assert deliveries_of(hooks_api, endpoint["id"])[(message, 2)]["attempts"] == 3
    # its endpoint is off: enable it first
    ended = insert_delivery(hooks_api, endpoint["id"], message, 3, "message.failed", "failed")
    assert hooks.patch(f"/api/webhook-endpoints/{endpoint['id']}", json={"is_active": False}).status_code == 200
    off = hooks.post(f"/api/webhook-deliveries/{ended}/retry")
    assert off.status_code == 409 and "enable it first" in off.json()["message"]
    assert deliveries_of(hooks_api, endpoint["id"])[(message, 3)]["status"] == "failed"
    assert hooks.patch(f"/api/webhook-endpoints/{endpoint['id']}", json={"is_active": True}).status_code == 200
    assert hooks.post(f"/api/webhook-deliveries/{ended}/retry").json()["data"]["status"] == "pending"
    assert error_body(hooks.post("/api/webhook-deliveries/987654321/retry")) == {"message": "Webhook delivery not found."}
    assert hooks.post(f"/api/webhook-deliveries/{2**63}/retry").status_code == 404
    retries = [e for e in hooks.get("/api/audit-events", params={"action": "webhook.delivery_retried"}).json()["data"]
               if e["target_id"] in (failed, ended)]
    assert len(retries) == 2


def test_replay_queues_exactly_the_matching_events_again(hooks_api, hooks):
    mine, theirs = make_gateway(hooks), make_gateway(hooks)
    endpoint = make_endpoint(hooks, gateway_ids=[mine], events=[
        "message.queued", "message.submitted", "message.delivered", "message.failed", "message.canceled"])
    m, n = insert_message(hooks_api, mine), insert_message(hooks_api, theirs)
    events = [  # (message, sequence, gateway, type, when)
        (m, 1, mine, "message.queued", stamp(10, 0)),           # succeeded before: queued again
        (m, 2, mine, "message.submitted", stamp(10, 1)),        # pending: left alone
        (m, 3, mine, "message.delivered", stamp(10, 2)),        # never delivered (endpoint made later): new
        (m, 4, mine, "message.status_updated", stamp(10, 3)),   # not subscribed
        (n, 1, theirs, "message.queued", stamp(10, 4)),         # another gateway
        (m, 5, mine, "message.failed", stamp(9, 59)),           # before since
        (m, 6, mine, "message.canceled", stamp(11, 0)),         # at until: outside
        (m, 7, mine, "message.failed", stamp(10, 5)),           # failed before: queued again
    ]
    for event in events:
        insert_event(hooks_api, *event)
    insert_delivery(hooks_api, endpoint["id"], m, 1, "message.queued", "succeeded")
    insert_delivery(hooks_api, endpoint["id"], m, 2, "message.submitted", "pending", attempts=2, next_attempt_at=FAR)
    insert_delivery(hooks_api, endpoint["id"], m, 5, "message.failed", "failed", attempts=8)
    insert_delivery(hooks_api, endpoint["id"], m, 7, "message.failed", "failed", attempts=8)
    before = deliveries_of(hooks_api, endpoint["id"])
    started = now_iso()
    url = f"/api/webhook-endpoints/{endpoint['id']}/replay"
    response = hooks.post(url, params={"since": "2021-01-01T11:00:00+01:00", "until": "2021-01-01T11:00:00Z"})
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {"queued": 3}
    after = deliveries_of(hooks_api, endpoint["id"])
    assert set(after) == set(before) | {(m, 3)}  # one new delivery, none for the events that do not match
    for key in ((m, 1), (m, 7)):  # the same rows, queued again now (the worker may be trying them already)
        assert after[key]["id"] == before[key]["id"] and after[key]["created_at"] == OLD
        assert after[key]["updated_at"] >= started and after[key]["status"] != before[key]["status"]
    assert after[(m, 3)]["created_at"] >= started and after[(m, 3)]["status"] in ("pending", "delivering")
    assert after[(m, 2)] == before[(m, 2)] and after[(m, 5)] == before[(m, 5)]  # left as they were
    # again at once: what was queued is pending (or being delivered) now, so nothing is queued twice
    again = hooks.post(url, params={"since": "2021-01-01T10:00:00Z", "until": "2021-01-01T11:00:00Z"})
    assert again.status_code == 202 and again.json()["data"] == {"queued": 0}
    # no until: up to now, so the canceled event at 11:00 too
    assert hooks.post(url, params={"since": "2021-01-01T10:30:00Z"}).json()["data"] == {"queued": 1}
    assert (m, 6) in deliveries_of(hooks_api, endpoint["id"])
    trail = hooks.get("/api/audit-events", params={"action": "webhook.replayed"}).json()["data"]
    replays = [e["details"] for e in trail if e["target_id"] == endpoint["id"]]
    assert [r["queued"] for r in replays] == [1, 0, 3]


def test_replay_refuses_a_bad_window_an_endpoint_that_is_off_and_one_that_does_not_exist(hooks_api, hooks):
    endpoint = make_endpoint(hooks)
    url = f"/api/webhook-endpoints/{endpoint['id']}/replay"
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for params, field, said in (
            ({}, "since", "required"),
            ({"since": ""}, "since", "required"),
            ({"since": "yesterday"}, "since", "RFC 3339"),
            ({"since": "2021-01-01T10:00:00"}, "since", "offset"),  # no offset: ambiguous
            ({"since": future}, "since", "future"),
            ({"since": "2021-01-01T10:00:00Z", "until": "soon"}, "until", "RFC 3339"),
            ({"since": "2021-01-01T10:00:00Z", "until": "2021-01-01T09:00:00Z"}, "until", "later than since")):
        assert said in refused(hooks.post(url, params=params), field), params
    assert hooks.patch(f"/api/webhook-endpoints/{endpoint['id']}", json={"is_active": False}).status_code == 200
    off = hooks.post(url, params={"since": "2021-01-01T10:00:00Z"})
    assert off.status_code == 409 and "enable it first" in off.json()["message"]
    missing = hooks.post("/api/webhook-endpoints/987654321/replay", params={"since": "2021-01-01T10:00:00Z"})
    assert missing.status_code == 404 and error_body(missing) == {"message": "Webhook endpoint not found."}
