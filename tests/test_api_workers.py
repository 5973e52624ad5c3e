"""``smsgw api`` with several worker processes (SMSGW_API_WORKERS / --workers).

Each worker runs its own state-change pipeline on the one database: receipts
answered by whichever worker the kernel hands a connection to are all stored,
each finds its message, and every worker writes smsgw's own log lines.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.servers import StubGateway, start_api, wait_until

ADMIN = "workers-admin-key-" + "x" * 32


def worker_pids(parent: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.add(int(entry.name))
    return found


def test_with_two_workers_every_receipt_is_stored_and_finds_its_message(tmp_path):
    api = start_api(tmp_path, SMSGW_API_WORKERS="2", SMSGW_ADMIN_KEY=ADMIN)
    stub = StubGateway().start()
    try:
        # uvicorn's supervisor starts both workers (spawned children, plus its resource tracker)
        wait_until(lambda: len(worker_pids(api.process.popen.pid)) >= 2, timeout=30, what="two API workers")
        admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15)
        gateway = admin.post("/api/sms-gateways", json={
            "name": "w", "server_host": "127.0.0.1", "server_port": stub.port, "default_sender_id": "W"}).json()["data"]
        stub.answer(200, {"data": 'Success "w-1'})
        message = admin.post(f"/api/sms-gateways/{gateway['id']}/send",
                             json={"to_number": "+14155550123", "message": "hi"}).json()["data"]
        assert message["state"] == "submitted"

        answers = []

        def post(index):
            with httpx.Client(base_url=api.url, timeout=15) as own:  # a connection of its own: any worker
                for n in range(10):
                    external = "w-1" if n == 0 else f"unknown-{index}-{n}"
                    answers.append(own.post(f"/webhooks/jasmin/{gateway['id']}/dlr",
                                            data={"id": external, "message_status": "DELIVRD"}).status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [200] * 60
        final = admin.get(f"/api/sms-messages/{message['id']}").json()["data"]
        assert (final["state"], final["delivery_status"]) == ("delivered", "delivrd")
        history = admin.get(f"/api/sms-messages/{message['id']}/events").json()["data"]
        assert sum(e["kind"] == "receipt" for e in history) == 6
        parked = admin.get(f"/api/sms-gateways/{gateway['id']}/unmatched-dlrs", params={"limit": 100}).json()
        assert len(parked["data"]) == 54
        admin.close()
        # smsgw's access line for each receipt, from whichever worker answered it
        assert api.log.count(f'"POST /webhooks/jasmin/{gateway["id"]}/dlr" 200') == 60
    finally:
        stub.stop()
        api.process.stop()
