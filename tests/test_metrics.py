"""Prometheus metrics of the API and the guard, scraped from real processes after real traffic.

Each count is what the traffic (``tests.metrics_stack``) did: a send accepted and one
that failed, receipts applied, parked and ignored, webhooks delivered, the guard
admitting one receipt and refusing two. With two API workers, a counter is what both
did, whichever the kernel gave each connection to, and stays so when one dies.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from api import metrics_gauges, metrics_server
from tests.metrics_stack import PHONE, make_traffic, scrape, start_stack, value
from tests.servers import ROOT, free_port, raw_request, run_smsgw, start_api, wait_until

DASHBOARD = ROOT / "deploy" / "grafana" / "smsgw.json"
# Every label smsgw puts on a metric: bounded sets (ids, words), never a number, URL or token.
LABELS = {"gateway", "outcome", "state", "failure_code", "reason", "result", "kind", "le"}


@pytest.fixture(scope="module")
def stack(database, tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("metrics"), database)
    try:
        traffic = make_traffic(running)
        yield running, traffic
    finally:
        running.stop()


def test_the_api_counts_receipts_sends_failures_and_states(stack):
    running, traffic = stack
    good, bad = str(running.good["id"]), str(running.bad["id"])
    samples = scrape(running.api_metrics)
    assert value(samples, "smsgw_receipts_total", gateway=good, outcome="applied") == traffic.applied
    assert value(samples, "smsgw_receipts_total", gateway=good, outcome="parked") == traffic.parked
    assert value(samples, "smsgw_receipts_total", gateway="unknown", outcome="ignored") == traffic.ignored
    assert value(samples, "smsgw_gateway_send_seconds_count", gateway=good) == traffic.sent_ok
    assert value(samples, "smsgw_gateway_send_seconds_count", gateway=bad) == traffic.sent_failed
    assert value(samples, "smsgw_gateway_failures_total", gateway=bad, failure_code="unreachable") == 1
    assert not [key for key in samples if key[0] == "smsgw_gateway_failures_total" and ("gateway", good) in key[1]]
    assert value(samples, "smsgw_state_changes_total", state="queued") == traffic.sent_ok + traffic.sent_failed
    assert value(samples, "smsgw_state_changes_total", state="submitted") == traffic.sent_ok
    assert value(samples, "smsgw_state_changes_total", state="failed") == traffic.sent_failed
    assert value(samples, "smsgw_state_changes_total", state="delivered") == traffic.applied
    # the writer: every change above went through some batch, each batch timed
    batches = value(samples, "smsgw_pipeline_batch_changes_count")
    assert value(samples, "smsgw_pipeline_batch_changes_sum") >= 2 + 2 + 4  # new messages, answers, receipts
    assert value(samples, "smsgw_pipeline_commit_seconds_count") == batches >= 1
    # read from the database at the scrape: every gateway has a value, 0 included
    assert value(samples, "smsgw_database_up") == 1
    assert value(samples, "smsgw_parked_receipts_pending", gateway=good) == traffic.parked
    assert ("smsgw_parked_receipts_pending", (("gateway", bad),)) in samples
    assert value(samples, "smsgw_messages_in_flight", gateway=good) == 0
    assert ("smsgw_messages_queued", (("gateway", bad),)) in samples


def test_webhook_deliveries_are_counted_once_recorded(stack):
    running, _ = stack

    def counted() -> bool:
        samples = scrape(running.api_metrics)
        return (value(samples, "smsgw_webhook_deliveries_total", outcome="succeeded") == len(running.hooks.received)
                and value(samples, "smsgw_webhook_deliveries_pending") == 0)

    wait_until(counted, timeout=60, what="every webhook the endpoint got counted, none pending")
    samples = scrape(running.api_metrics)
    assert value(samples, "smsgw_webhook_delivery_seconds_count") == len(running.hooks.received) >= 2


def test_the_guard_counts_verdicts_cache_and_reads(stack):
    running, traffic = stack
    samples = scrape(running.guard_metrics)
    assert value(samples, "smsgw_guard_admitted_total") == traffic.guard_admitted
    assert value(samples, "smsgw_guard_refused_total", reason="forbidden") == traffic.guard_forbidden
    assert value(samples, "smsgw_guard_refused_total", reason="missing_token") == traffic.guard_missing
    assert value(samples, "smsgw_guard_refused_total", reason="not_found") == 0
    # the admitted token and the wrong one were each looked up; the wrong one read again before a 403
    lookups = sum(value(samples, "smsgw_guard_cache_lookups_total", result=r) for r in ("hit", "miss"))
    assert lookups == traffic.guard_admitted + traffic.guard_forbidden
    assert value(samples, "smsgw_guard_database_reads_total", kind="recheck") == traffic.guard_forbidden
    assert value(samples, "smsgw_guard_database_reads_total", kind="reload") >= 1


def test_labels_are_bounded_and_carry_no_number_url_or_token(stack):
    running, _ = stack
    token = running.good["callback_token"]
    for port in (running.api_metrics, running.guard_metrics):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        assert PHONE not in text and PHONE[1:] not in text and token not in text and "http" not in text
        for (name, labels) in scrape(port):
            if name.startswith("smsgw_"):
                assert {label for label, _ in labels} <= LABELS, name


def test_the_grafana_dashboard_queries_only_metrics_that_exist(stack):
    running, _ = stack
    names = {name for name, _ in scrape(running.api_metrics)} | {name for name, _ in scrape(running.guard_metrics)}
    exprs = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    used = {found for expr in exprs for found in re.findall(r"\bsmsgw_[a-z0-9_]+", expr)}
    assert exprs and used
    assert used - names == set(), f"the dashboard queries metrics no scrape has: {sorted(used - names)}"


@pytest.mark.parametrize("command, variable", [("api", "SMSGW_METRICS_PORT"), ("guard", "SMSGW_GUARD_METRICS_PORT")])
def test_a_metrics_port_already_taken_stops_start_up_naming_it(tmp_path, command, variable):
    port = free_port()
    env = {**os.environ, "SMSGW_DATABASE_URL": f"sqlite:///{tmp_path / 'smsgw.db'}",
           "SMSGW_API_PORT": str(free_port()), "SMSGW_GUARD_PORT": str(free_port()),
           "SMSGW_GUARD_CONFDIR": str(tmp_path / "guard"), "SMSGW_METRICS_PORT": "0",
           "SMSGW_GUARD_METRICS_PORT": "0", variable: str(port)}
    run_smsgw(env, "migrate")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = run_smsgw(env, command, check=False)
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and variable in done.stderr


def per_process_receipts(directory: Path) -> dict[int, float]:
    """Each process's own count of receipts, from its file in PROMETHEUS_MULTIPROC_DIR."""
    found = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        found[pid] = sum(sample.value for family in MultiProcessCollector.merge([str(path)])
                         for sample in family.samples if sample.name == "smsgw_receipts_total")
    return {pid: count for pid, count in found.items() if count}


def test_with_two_workers_a_counter_adds_up_both_and_survives_a_dead_one(tmp_path):
    directory, port = tmp_path / "multiproc", free_port()
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"")  # left by an earlier run: removed at start
    admin = "metrics-workers-" + "x" * 32
    api = start_api(tmp_path, SMSGW_API_WORKERS="2", SMSGW_METRICS_PORT=str(port), SMSGW_ADMIN_KEY=admin,
                    PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        assert not (directory / "counter_1.db").exists()
        gateway = httpx.post(api.url + "/api/sms-gateways", headers={"Authorization": f"Bearer {admin}"},
                             timeout=30, json={"name": "w", "server_host": "127.0.0.1", "server_port": 9,
                                               "default_sender_id": "W"}).json()["data"]
        api_port = int(api.url.rsplit(":", 1)[1])
        sent = []

        def burst(index: int) -> None:
            for n in range(5):  # each on a connection of its own: any worker may take it
                status, _ = raw_request(api_port, "POST", f"/webhooks/jasmin/{gateway['id']}/dlr",
                                        body=f"id=w-{index}-{n}-{len(sent)}&message_status=DELIVRD".encode())
                sent.append(status)

        def both_counted() -> bool:
            threads = [threading.Thread(target=burst, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            return len(per_process_receipts(directory)) >= 2

        wait_until(both_counted, timeout=120, what="receipts answered by both workers")
        assert set(sent) == {200}
        shares = per_process_receipts(directory)
        samples = scrape(port)
        total = value(samples, "smsgw_receipts_total", gateway=str(gateway["id"]), outcome="parked")
        assert total == sum(shares.values()) == len(sent)

        # one worker dies: what it counted stays counted; its live gauge is dropped at the next scrape
        dead = max(shares, key=lambda pid: (directory / f"gauge_livesum_{pid}.db").exists())
        assert (directory / f"gauge_livesum_{dead}.db").exists()
        os.kill(dead, signal.SIGKILL)

        def dropped() -> bool:
            scrape(port)
            return not (directory / f"gauge_livesum_{dead}.db").exists()

        wait_until(dropped, timeout=60, what="the dead worker's live gauge dropped")
        assert value(scrape(port), "smsgw_receipts_total", gateway=str(gateway["id"]), outcome="parked") == len(sent)
    finally:
        api.process.stop()


def test_only_dead_processes_lose_their_live_gauges(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid, own_pid = int(gone.stdout), os.getpid()
    for pid in (dead_pid, own_pid):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    assert metrics_server.forget_dead(str(tmp_path)) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"counter_{own_pid}.db", f"gauge_livesum_{own_pid}.db"])


def test_database_gauges_say_when_the_database_did_not_answer():
    names = {family.name: family for family in metrics_gauges.families(None)}
    assert list(names) == ["smsgw_database_up"] and names["smsgw_database_up"].samples[0].value == 0


def test_counting_that_fails_is_logged_once_and_never_raised_into_the_pipeline(caplog):
    """The pipeline counts a batch after it committed: were counting to raise there, the
    batch would be taken for a failed one and run again."""
    from api import metrics

    with caplog.at_level("ERROR", logger="smsgw.metrics"):
        metrics.committed([], [], {"delivered": "not a count"}, 0.01)
        metrics.committed([], [], {"delivered": "not a count"}, 0.01)
    assert [r.getMessage() for r in caplog.records] == ["counting committed failed; metrics may be short"]
