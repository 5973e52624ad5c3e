"""kill -9 of the API on SQLite mid-load loses no receipt it acknowledged.

A receipt is answered only after the batch holding it has committed (api.pipeline).
(The same on PostgreSQL, across replicas: tests/test_replicas.py.)
"""

from __future__ import annotations

import signal
import sqlite3
import threading

import httpx

from tests.servers import StubGateway, error_body, start_api, wait_until

ADMIN = "durability-admin-key-" + "x" * 32


def test_every_acknowledged_receipt_survives_a_kill_9(tmp_path):
    api = start_api(tmp_path, SMSGW_ADMIN_KEY=ADMIN)
    try:
        gateway = httpx.post(f"{api.url}/api/sms-gateways", headers={"Authorization": f"Bearer {ADMIN}"}, json={
            "name": "d", "server_host": "127.0.0.1", "server_port": 9, "default_sender_id": "D"}).json()["data"]
        acked, stop = [], threading.Event()

        def load(worker):
            with httpx.Client(base_url=api.url, timeout=10) as own:
                n = 0
                while not stop.is_set():
                    external = f"kill-{worker}-{n}"
                    n += 1
                    try:
                        response = own.post(f"/webhooks/jasmin/{gateway['id']}/dlr",
                                            data={"id": external, "message_status": "DELIVRD"})
                    except httpx.HTTPError:
                        return  # the API is gone
                    if response.status_code == 200:
                        acked.append(external)

        threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acked) >= 300, timeout=60, what="receipts to be acknowledged")
        api.process.popen.send_signal(signal.SIGKILL)
        api.process.popen.wait(10)
        stop.set()
        for thread in threads:
            thread.join(20)
    finally:
        api.process.stop()
    with sqlite3.connect(tmp_path / "smsgw.db") as db:
        stored = {row[0] for row in db.execute("SELECT external_message_id FROM unmatched_receipts")}
    assert len(acked) >= 300
    assert set(acked) - stored == set()


def test_a_receipt_that_cannot_be_stored_is_a_retryable_503_and_stored_when_sent_again(tmp_path):
    """The gateway must send it again, so it must not hear 200; once the database takes
    writes again, the same receipt is stored."""
    api = start_api(tmp_path, SMSGW_ADMIN_KEY=ADMIN)
    try:
        gateway = httpx.post(f"{api.url}/api/sms-gateways", headers={"Authorization": f"Bearer {ADMIN}"}, json={
            "name": "d", "server_host": "127.0.0.1", "server_port": 9, "default_sender_id": "D"}).json()["data"]
        receipt = {"id": "not-yet-known", "message_status": "ESME_ROK"}
        with sqlite3.connect(tmp_path / "smsgw.db") as db:  # the table receipts are parked in goes away
            db.execute("ALTER TABLE unmatched_receipts RENAME TO unmatched_receipts_away")
        jasmin = {"User-Agent": "Jasmin gateway/1.0 DLRThrower"}  # Jasmin resends until it reads ACK/Jasmin
        refused = httpx.post(f"{api.url}/webhooks/jasmin/{gateway['id']}/dlr", data=receipt, headers=jasmin)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert set(error_body(refused)) == {"message", "errors"}
        assert "ACK/Jasmin" not in refused.text
        with sqlite3.connect(tmp_path / "smsgw.db") as db:
            db.execute("ALTER TABLE unmatched_receipts_away RENAME TO unmatched_receipts")
            assert db.execute("SELECT count(*) FROM unmatched_receipts").fetchone()[0] == 0
        again = httpx.post(f"{api.url}/webhooks/jasmin/{gateway['id']}/dlr", data=receipt, headers=jasmin)
        assert (again.status_code, again.text) == (200, "ACK/Jasmin")
        with sqlite3.connect(tmp_path / "smsgw.db") as db:
            assert db.execute("SELECT external_message_id FROM unmatched_receipts").fetchall() == [("not-yet-known",)]
    finally:
        api.process.stop()


def test_a_gateways_answer_is_recorded_once_the_database_is_back(tmp_path):
    """The answer to a send is the only record of an SMS that may have gone out: while
    the database cannot take it, it is tried again, and the send ends submitted."""
    api = start_api(tmp_path, SMSGW_ADMIN_KEY=ADMIN)
    stub = StubGateway().start()
    release = threading.Event()
    try:
        admin = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        gateway = admin.post("/api/sms-gateways", json={
            "name": "s", "server_host": "127.0.0.1", "server_port": stub.port, "default_sender_id": "S"}).json()["data"]
        stub.answer(200, {"data": 'Success "back-1'}, hold=release)
        replies = []
        sending = threading.Thread(target=lambda: replies.append(admin.post(
            f"/api/sms-gateways/{gateway['id']}/send", json={"to_number": "+14155550123", "message": "m"})))
        sending.start()
        wait_until(lambda: len(stub.received) == 1, timeout=30, what="the gateway to be called")
        with sqlite3.connect(tmp_path / "smsgw.db") as db:  # the history table goes away mid-send
            db.execute("ALTER TABLE sms_message_events RENAME TO sms_message_events_away")
        release.set()
        wait_until(lambda: "could not be recorded yet" in api.log, timeout=30, what="a failed try")
        with sqlite3.connect(tmp_path / "smsgw.db") as db:
            db.execute("ALTER TABLE sms_message_events_away RENAME TO sms_message_events")
        sending.join(60)
        assert replies[0].status_code == 201
        message = replies[0].json()["data"]
        assert (message["state"], message["external_message_id"]) == ("submitted", "back-1")
        admin.close()
    finally:
        release.set()
        stub.stop()
        api.process.stop()
