"""Several dispatchers on one database: each message is sent once, and a gateway's pace
holds for the gateway as a whole.

Two ``smsgw api`` replicas on one PostgreSQL database (claims with ``FOR UPDATE SKIP
LOCKED``, one token bucket row per gateway), and ``smsgw api --workers 2`` on one
SQLite file (several processes taking turns at its write lock). Messages are queued
through both replicas, as batches and as single asynchronous sends; the simulator
counts what it accepted, per number and per second.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import httpx
import pytest

from tests.servers import drop_postgres_database, postgres_database_or_skip, start_api, wait_until
from tests.test_dispatch_crash import (
    ADMIN, admin, all_messages, digits, nothing_waiting, numbers, reset_simulator, simulator_gateway,
    simulator_messages, simulator_stats, start_simulator,
)

RATE = 20  # the gateway's throughput_per_second; its bucket holds max(1, RATE / 20) = 1


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    url, process = start_simulator(tmp_path_factory.mktemp("replicas-simulator"))
    yield url
    process.stop()


def connected_to(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold a TCP connection to ``port`` on this host (Linux /proc): the
    replicas that called the gateway lately (their HTTP client keeps connections alive)."""
    inodes = {fields[9] for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
              if int(fields[2].rsplit(":", 1)[1], 16) == port}
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                        found.add(pid)
    return found


def queue(clients: list[httpx.Client], gateway_id: int, batches: int, batch_size: int, singles: int) -> list[dict]:
    """Batches and single asynchronous sends, taking turns over ``clients``; every message queued."""
    to_numbers = iter(numbers(batches * batch_size + singles))
    turns = itertools.cycle(clients)
    queued = []
    for _ in range(batches):
        response = next(turns).post(f"/api/sms-gateways/{gateway_id}/messages", json={"messages": [
            {"to_number": next(to_numbers), "message": "m"} for _ in range(batch_size)]})
        assert response.status_code == 202, response.text
        queued += response.json()["data"]
    for _ in range(singles):
        response = next(turns).post(f"/api/sms-gateways/{gateway_id}/send", headers={"Prefer": "respond-async"},
                                    json={"to_number": next(to_numbers), "message": "m"})
        assert response.status_code == 202, response.text
        queued.append(response.json()["data"])
    return queued


def assert_each_sent_once(client: httpx.Client, simulator: str, gateway_id: int, queued: list[dict]) -> None:
    """What the simulator accepted is exactly the queued messages, one call each, and
    each message holds the id the simulator gave it."""
    final = all_messages(client, gateway_id)
    assert sorted(m["id"] for m in final) == sorted(m["id"] for m in queued)
    assert simulator_stats(simulator)["accepted"] == len(queued)
    assert {(m["state"], m["attempts"]) for m in final} == {("submitted", 1)}
    externals = [m["external_message_id"] for m in final]
    assert len(set(externals)) == len(final)
    accepted = simulator_messages(simulator)[:len(queued)]  # newest first
    assert set(externals) == {m["id"] for m in accepted}
    assert sorted(digits(m["to"]) for m in accepted) == sorted(digits(m["to_number"]) for m in final)


def test_two_replicas_on_postgresql_send_each_message_once_at_the_gateways_pace(simulator, tmp_path):
    reset_simulator(simulator)
    url = postgres_database_or_skip()
    replicas = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas.append(start_api(tmp_path / name, SMSGW_DATABASE_URL=url, SMSGW_ADMIN_KEY=ADMIN,
                                      SMSGW_GATEWAY_TIMEOUT="5"))
        clients = [admin(replica) for replica in replicas]
        gateway = simulator_gateway(clients[0], simulator, throughput_per_second=RATE)
        queued = queue(clients, gateway["id"], batches=5, batch_size=50, singles=50)
        assert {m["state"] for m in queued} <= {"queued", "submitted"}
        pids, dispatching = [replica.process.popen.pid for replica in replicas], set()

        def all_sent() -> bool:
            dispatching.update(connected_to(int(simulator.rsplit(":", 1)[1]), pids))
            return nothing_waiting(clients[1], gateway["id"])

        wait_until(all_sent, timeout=120, what="every message sent")
        assert dispatching == set(pids)  # the pace below is the two replicas' together
        assert_each_sent_once(clients[0], simulator, gateway["id"], queued)
        per_second = simulator_stats(simulator)["per_second"]
        busiest = max(per_second.values())
        assert busiest <= RATE + 1, {s: n for s, n in per_second.items() if n > RATE + 1}
        for client in clients:
            client.close()
    finally:
        for replica in replicas:
            replica.process.stop()
        drop_postgres_database(url)


def test_api_workers_on_one_sqlite_file_send_each_message_once(simulator, tmp_path):
    reset_simulator(simulator)
    api = start_api(tmp_path, SMSGW_ADMIN_KEY=ADMIN, SMSGW_GATEWAY_TIMEOUT="5", SMSGW_API_WORKERS="2")
    try:
        with admin(api) as first, admin(api) as second:  # connections of their own: either worker
            gateway = simulator_gateway(first, simulator)
            queued = queue([first, second], gateway["id"], batches=4, batch_size=25, singles=20)
            wait_until(lambda: nothing_waiting(first, gateway["id"]), timeout=120, what="every message sent")
            assert_each_sent_once(first, simulator, gateway["id"], queued)
    finally:
        api.process.stop()
