"""Helpers for the dispatcher's tests: the simulator as a real process, and waiting on messages.

The simulator is one process per test module; ``Simulator.reset`` puts its knobs
back and zeroes its stats between tests. Messages are waited on by condition
(their state read over the API), never by a fixed sleep.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import SMSGW, Process, free_port, healthy, start, wait_until

AUTH = ("sim-user", "sim-pass")
DEADLINE = 60.0  # seconds: generous, for a slow machine
WAITING = ("scheduled", "queued")
RESET = {"final_status": "DELIVRD", "duplicates": 0, "out_of_order": False, "error": None, "max_retries": 3,
         "throughput": None, "script": [], "throw": False, "delay": 0.05}


@dataclass
class Simulator:
    url: str
    port: int
    process: Process

    def configure(self, **knobs) -> None:
        response = httpx.post(self.url + "/_simulator/config", json=knobs, timeout=10)
        assert response.status_code == 200, response.text

    def reset(self) -> None:
        """Knobs as a quiet gateway has them (receipts off), stats zeroed."""
        self.configure(**RESET)
        httpx.post(self.url + "/_simulator/stats/reset", timeout=10).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_simulator/stats", timeout=10).json()

    def accepted(self) -> list[dict]:
        """What it accepted (the last 1000), newest first."""
        return httpx.get(self.url + "/_simulator/messages", timeout=10).json()["data"]

    def accepted_to(self, number: str) -> list[dict]:
        return [m for m in self.accepted() if m["to"] == number]

    def times_sent(self, numbers) -> Counter:
        wanted = set(numbers)
        return Counter(m["to"] for m in self.accepted() if m["to"] in wanted)


def start_simulator(workdir: Path) -> Simulator:
    port = free_port()
    env = {**os.environ, "SMSGW_SIMULATOR_PORT": str(port), "SMSGW_SIMULATOR_USERNAME": AUTH[0],
           "SMSGW_SIMULATOR_PASSWORD": AUTH[1], "SMSGW_SIMULATOR_DELAY": "0.05",
           "SMSGW_SIMULATOR_RETRY_DELAY": "0.05"}
    process = start(env, [*SMSGW, "simulator"], workdir / "sim.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url + "/_simulator/config"), what="the simulator")
    return Simulator(url, port, process)


def simulator_gateway(simulator: Simulator, **fields) -> dict:
    """A Jasmin REST gateway's fields pointing at ``simulator``."""
    return {"server_port": simulator.port, "username": AUTH[0], "password": AUTH[1], **fields}


# Distinct German mobile numbers: each test's sends are told apart at the simulator by
# their to_number, whatever earlier tests (or the other database's run) sent.
_numbers = itertools.count(random.randrange(10_000_000, 90_000_000))


def new_number() -> str:
    return f"+49151{next(_numbers):08d}"


def message(client: httpx.Client, message_id: int) -> dict:
    response = client.get(f"/api/sms-messages/{message_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def events(client: httpx.Client, message_id: int) -> list[dict]:
    response = client.get(f"/api/sms-messages/{message_id}/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def reasons(client: httpx.Client, message_id: int) -> list[str]:
    return [event["reason"] for event in events(client, message_id)]


def settled(client: httpx.Client, message_ids, timeout: float = DEADLINE) -> list[dict]:
    """The messages once none is waiting for the dispatcher any more (nor claimed by it)."""
    found: dict[int, dict] = {}

    def done() -> bool:
        for message_id in message_ids:
            if message_id not in found:
                row = message(client, message_id)
                if row["state"] not in WAITING:
                    found[message_id] = row
        return len(found) == len(message_ids)

    wait_until(done, timeout=timeout, what=f"messages {list(message_ids)} to leave queued")
    return [found[message_id] for message_id in message_ids]


def settled_one(client: httpx.Client, message_id: int, timeout: float = DEADLINE) -> dict:
    return settled(client, [message_id], timeout)[0]


def gateway_messages_count(client: httpx.Client, gateway_id: int) -> int:
    response = client.get(f"/api/sms-gateways/{gateway_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]["messages_count"]


def send_async(client: httpx.Client, gateway_id: int, **body) -> httpx.Response:
    body = {"to_number": new_number(), "message": "hello", **body}
    return client.post(f"/api/sms-gateways/{gateway_id}/send", json=body, headers={"Prefer": "respond-async"})


def send_batch(client: httpx.Client, gateway_id: int, items: list[dict], **headers: str) -> httpx.Response:
    return client.post(f"/api/sms-gateways/{gateway_id}/messages", json={"messages": items}, headers=headers)


def items(count: int, **fields) -> list[dict]:
    return [{"to_number": new_number(), "message": f"hello {index}", **fields} for index in range(count)]
