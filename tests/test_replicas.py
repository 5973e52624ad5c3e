"""Two API replicas on one PostgreSQL database, a guard, and nginx in front of them.

What must hold when several hosts share the work: receipts for the same messages
arriving through different replicas end as in a single process, one
Idempotency-Key arriving at two replicas sends one SMS, and a replica killed
mid-load loses no receipt it acknowledged.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import threading

import httpx
import pytest

from api import states
from tests.nginx import NGINX, start_nginx
from tests.servers import (
    StubGateway,
    drop_postgres_database,
    postgres_database_or_skip,
    run_smsgw,
    services_required,
    start_api,
    start_guard,
    wait_until,
)

_ids = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if NGINX is None and not services_required():
        pytest.skip("nginx is not installed (make install installs it)")
    url = postgres_database_or_skip()
    workdir = tmp_path_factory.mktemp("replicas")
    for name in ("a", "b"):
        (workdir / name).mkdir()
    # Each thing started is stopped again, also when a later step of this setup fails: a
    # replica left running holds its database connections for the rest of the run.
    with contextlib.ExitStack() as started:
        started.callback(drop_postgres_database, url)
        a = start_api(workdir / "a", SMSGW_DATABASE_URL=url)
        started.callback(a.process.stop)
        b = start_api(workdir / "b", SMSGW_DATABASE_URL=url)
        started.callback(b.process.stop)
        guard = start_guard(workdir, a.env, a.url)
        started.callback(guard.process.stop)
        ports = [int(r.url.rsplit(":", 1)[1]) for r in (a, b)]
        nginx = start_nginx(workdir / "nginx", "smsgw.conf", ports[0], guard.port, more_api_ports=ports[1:])
        started.callback(nginx.process.stop)
        key = run_smsgw(a.env, "apikey", "create", "--name", "replicas").stdout.strip().splitlines()[-1]
        stub = StubGateway().start()
        started.callback(stub.stop)
        admin = started.enter_context(httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {key}"},
                                                   timeout=15))
        gateway = admin.post("/api/sms-gateways", json={"name": "shared", "server_host": "127.0.0.1",
                                                        "server_port": stub.port, "default_sender_id": "X"}).json()["data"]
        yield {"a": a, "b": b, "guard": guard, "nginx": nginx, "key": key, "stub": stub, "admin": admin,
               "gateway": gateway, "url": url}


def submit(cluster) -> dict:
    external = f"rep-{next(_ids)}"
    cluster["stub"].answer(200, {"data": f'Success "{external}'})
    return cluster["admin"].post(f"/api/sms-gateways/{cluster['gateway']['id']}/send",
                                 json={"to_number": "+14155550101", "message": "m"}).json()["data"]


def test_nginx_spreads_the_api_over_both_replicas(cluster):
    client = httpx.Client(base_url=cluster["nginx"].url, verify=False,
                          headers={"Authorization": f"Bearer {cluster['key']}"})
    for _ in range(6):
        assert client.get("/api/sms-gateways").status_code == 200
    assert '"GET /api/sms-gateways" 200' in cluster["a"].log
    assert '"GET /api/sms-gateways" 200' in cluster["b"].log


def test_racing_receipts_through_two_replicas_end_as_in_one_process(cluster):
    gid = cluster["gateway"]["id"]
    for pair, expected in ((("DELIVRD", "ESME_ROK"), ("delivered", "delivrd")),
                           (("UNDELIV", "DELIVRD"), ("delivered", "delivrd")),
                           (("ACCEPTD", "REJECTD"), ("failed", "rejectd"))):
        for _ in range(5):
            message = submit(cluster)
            barrier = threading.Barrier(2)

            def post(replica, status):
                barrier.wait()
                httpx.post(f"{replica.url}/webhooks/jasmin/{gid}/dlr",
                           data={"id": message["external_message_id"], "message_status": status})

            threads = [threading.Thread(target=post, args=(replica, status))
                       for replica, status in zip((cluster["a"], cluster["b"]), pair)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
            final = cluster["admin"].get(f"/api/sms-messages/{message['id']}").json()["data"]
            assert (final["state"], final["delivery_status"]) == expected, pair
            events = cluster["admin"].get(f"/api/sms-messages/{message['id']}/events").json()["data"]
            assert sum(e["kind"] == "receipt" for e in events) == 2


def test_many_receipts_racing_over_two_replicas_lose_nothing_and_end_as_one_process_would(cluster):
    """Eight clients, four at each replica, post every status of a dozen messages in
    their own orders: the replicas' batches lock overlapping sets of messages at once.
    Every receipt is answered 200 (a lost lock conflict is retried inside, never
    answered 5xx), every one is kept, and each message ends as the rule of
    api.states says, whatever the order."""
    gid = cluster["gateway"]["id"]
    messages = [submit(cluster) for _ in range(12)]
    statuses = ("ESME_ROK", "ENROUTE", "DELIVRD", "UNDELIV", "ACCEPTD")
    receipts = [(m["external_message_id"], status) for m in messages for status in statuses]
    random.Random(11).shuffle(receipts)
    answers, barrier = [], threading.Barrier(8)

    def post(replica, share):
        with httpx.Client(base_url=replica.url, timeout=30) as own:
            barrier.wait()
            for external, status in share:
                answers.append(own.post(f"/webhooks/jasmin/{gid}/dlr",
                                        data={"id": external, "message_status": status}).status_code)

    threads = [threading.Thread(target=post, args=((cluster["a"], cluster["b"])[i % 2], receipts[i::8]))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [200] * len(receipts)
    state, raw = states.SUBMITTED, states.SUBMITTED
    for status in statuses:  # one process, one receipt after the other: any order ends the same
        decision = states.decide(state, raw, status)
        state, raw = decision.state, decision.delivery_status
    for message in messages:
        final = cluster["admin"].get(f"/api/sms-messages/{message['id']}").json()["data"]
        assert (final["state"], final["delivery_status"], final["status_conflict"]) == (state, raw, True)
        history = cluster["admin"].get(f"/api/sms-messages/{message['id']}/events").json()["data"]
        assert sorted(e["raw_status"] for e in history if e["kind"] == "receipt") == sorted(
            s.lower() for s in statuses)


def test_one_idempotency_key_at_two_replicas_sends_one_sms(cluster):
    release = threading.Event()
    stub = cluster["stub"]
    received_before = len(stub.received)
    stub.answer(200, {"data": f'Success "idem-{next(_ids)}'}, hold=release)
    headers = {"Authorization": f"Bearer {cluster['key']}", "Idempotency-Key": f"two-replicas-{next(_ids)}"}
    barrier, results = threading.Barrier(4), []

    def post(replica):
        with httpx.Client(base_url=replica.url, headers=headers, timeout=20) as own:
            barrier.wait()
            results.append(own.post(f"/api/sms-gateways/{cluster['gateway']['id']}/send",
                                    json={"to_number": "+14155550101", "message": "once"}))

    threads = [threading.Thread(target=post, args=(replica,))
               for replica in (cluster["a"], cluster["b"], cluster["a"], cluster["b"])]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(results) >= 3, timeout=20, what="the duplicates to be answered")
    release.set()
    for thread in threads:
        thread.join(20)
    assert len(stub.received) - received_before == 1
    assert len({r.json()["data"]["id"] for r in results}) == 1


def test_a_replica_killed_mid_load_loses_no_acknowledged_receipt(cluster, tmp_path):
    """A third replica takes receipts and is killed with SIGKILL mid-load; every
    receipt it answered 200 must be in the shared database."""
    messages = [submit(cluster) for _ in range(40)]
    victim = start_api(tmp_path, SMSGW_DATABASE_URL=cluster["url"])
    gid = cluster["gateway"]["id"]
    acked, stop = [], threading.Event()

    def load(offset):
        with httpx.Client(base_url=victim.url, timeout=5) as own:
            for index in range(offset, len(messages), 4):
                if stop.is_set():
                    return
                try:
                    response = own.post(f"/webhooks/jasmin/{gid}/dlr", data={
                        "id": messages[index]["external_message_id"], "message_status": "DELIVRD"})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acked.append(messages[index])

    threads = [threading.Thread(target=load, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acked) >= 10, timeout=20, what="some receipts to be acknowledged")
    victim.process.popen.send_signal(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)
    for message in acked:
        stored = cluster["admin"].get(f"/api/sms-messages/{message['id']}").json()["data"]
        assert stored["state"] == "delivered", message["id"]
