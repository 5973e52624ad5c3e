"""``make bench``: every configuration on loopback, loaded with wrk, in one run.

Each row is measured in the same run on the same machine, so the ratios hold
even when the machine is noisy. Prints a table and writes bench/results.json.
Knobs (environment): BENCH_SECONDS (8), BENCH_CONNECTIONS (32), BENCH_ROWS
(comma-separated subset), BENCH_MEMORY_REQUESTS (200000), BENCH_MEMORY_CAP_S (90),
BENCH_DISPATCH_MESSAGES (20000, the ``dispatch`` row's messages), BENCH_BATCH_CONNECTIONS
(4, ``send_batch``'s connections).

Sending rows (issue 12), all to the simulator with receipts off: ``simulator`` (its
/secure/send alone, so it is known not to be the limit), ``send`` (synchronous sends
through the API), ``send_batch`` (messages accepted per second through the batch
route), ``dispatch`` (messages the dispatcher hands to the simulator per second, no
limit) and ``dispatch_paced`` (two replicas on PostgreSQL pacing one gateway at 100/s).

Status webhook rows (issue 13), to a local receiver (``bench/webhook_receiver.py``):
``webhook`` (deliveries per second when an endpoint is sent a backlog of
BENCH_WEBHOOK_EVENTS (20000) events at once) and ``dlr_api_webhook`` (``dlr_api`` with
one endpoint subscribed to every event: the receipts' rate, and whether the outbox keeps up).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import clock  # noqa: E402
from api.notices import EVENT_TYPES  # noqa: E402
from api.providers import jasmin  # noqa: E402
from tests.nginx import start_nginx  # noqa: E402
from tests.servers import SMSGW, free_port, healthy, run_smsgw, start, wait_until  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
MEMORY_REQUESTS = int(os.environ.get("BENCH_MEMORY_REQUESTS", "200000"))
MEMORY_CAP_S = int(os.environ.get("BENCH_MEMORY_CAP_S", "90"))
DISPATCH_MESSAGES = int(os.environ.get("BENCH_DISPATCH_MESSAGES", "20000"))
WEBHOOK_EVENTS = int(os.environ.get("BENCH_WEBHOOK_EVENTS", "20000"))  # the ``webhook`` row's backlog
ROWS = [r for r in os.environ.get("BENCH_ROWS", "").split(",") if r]
TOKEN = "bench-token-" + "x" * 32
WRK = shutil.which("wrk")
# API worker processes (smsgw api --workers); the no-op ceiling runs with as many.
WORKERS = int(os.environ.get("SMSGW_API_WORKERS", "1"))
SIMULATOR_LOGIN = ("demo", "demo-password")  # the simulator's default credentials
BATCH = 1000  # messages in one batch request (SMSGW_MAX_BATCH's default)
# send_batch's connections: a batch takes ~0.3 s, so 32 at once would only queue past wrk's timeouts
BATCH_CONNECTIONS = int(os.environ.get("BENCH_BATCH_CONNECTIONS", "4"))
PACED_RATE = 100  # dispatch_paced: the gateway's throughput_per_second
PACED_MESSAGES = 3600  # enough for PACED_WINDOW whole seconds and a partial one at each end
PACED_WINDOW = 30  # seconds measured
# The webhook rows' APIs: their endpoint is the local receiver (plain http, loopback)
WEBHOOK_ENV = {"SMSGW_WEBHOOK_ALLOW_HTTP": "1", "SMSGW_WEBHOOK_ALLOW_PRIVATE": "1"}
DRAIN_S = 120  # dlr_api_webhook: how long the backlog left after the run may take to drain


# --- load ------------------------------------------------------------------------------


def jasmin_receipt_env() -> dict[str, str]:
    """What dlr.lua posts: a level-2 receipt as Jasmin's thrower sends it (its fields
    after ``id``, which the script picks per request) and the thrower's User-Agent."""
    moment = clock.now()
    fields = jasmin.level2_receipt("", "DELIVRD", "A0000002", "hello", moment, moment)
    del fields["id"]
    return {"BENCH_BODY": urlencode(fields), "BENCH_USER_AGENT": jasmin.THROWER_USER_AGENT}


def wrk(url: str, script: str, seconds: int, env: dict[str, str], delay_ms: float = 0,
        connections: int = CONNECTIONS, timeout_s: int = 2) -> dict:
    """One wrk run: requests/s, and latency percentiles (with --latency). A request not
    answered within ``timeout_s`` (wrk's default, 2 s) counts as a timeout, not a request."""
    args = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s", "--latency",
            "-s", str(ROOT / "bench" / script), url]
    out = subprocess.run(args, env={**os.environ, **env, "BENCH_DELAY_MS": str(delay_ms)},
                         capture_output=True, text=True, timeout=seconds + timeout_s + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    latency = {p: _ms(m.group(1)) for p in ("50", "99")
               if (m := re.search(rf"^\s+{p}(?:\.000)?%\s+([\d.]+\w+)", out, re.M))}
    return {"rps": rate, "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1).strip() if errors else "", "p50_ms": latency.get("50"),
            "p99_ms": latency.get("99")}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def cpu_seconds(processes) -> float:
    """CPU time (user + system) used so far by ``processes`` and every process under them
    (uvicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    wanted = {p.popen.pid for p in processes}
    grew = True
    while grew:  # add children until none is new
        children = {pid for pid, (ppid, _) in stats.items() if ppid in wanted} - wanted
        grew = bool(children)
        wanted |= children
    return sum(stats[pid][1] for pid in wanted if pid in stats)


def measure(name: str, url: str, script: str, env: dict[str, str], cpu_of=(), messages_per_request: int = 1,
            connections: int = CONNECTIONS, timeout_s: int = 2, marks: Callable[[], dict] | None = None) -> dict:
    """One row. ``cpu_of``: the processes whose CPU time per request the row reports
    (the API's, for receipt rows): where the time goes, to guide the next step.
    ``messages_per_request`` > 1 (a batch route): the row's ``rps`` is then messages/s,
    wrk's own requests/s is kept as ``requests_per_s``, and CPU is also given per message.
    ``connections`` and ``timeout_s``: for slow requests (a batch takes a third of a
    second), fewer connections and a longer wait than wrk's 2 s. ``marks``: what to note
    (e.g. the webhook outbox's counts) before the warm-up, around the peak run and at the
    end, kept in the row as ``marks``."""
    load = {"connections": connections, "timeout_s": timeout_s}
    noted = {}
    note = (lambda when: noted.__setitem__(when, marks())) if marks else (lambda when: None)
    note("start")
    wrk(url, script, 2, env, **load)  # warm up
    note("peak_start")
    cpu_before = cpu_seconds(cpu_of)
    peak = wrk(url, script, SECONDS, env, **load)
    cpu_used = cpu_seconds(cpu_of) - cpu_before
    note("peak_end")
    cpu_us = round(cpu_used / max(peak["requests"], 1) * 1e6) if cpu_of else None
    # latency at half the peak rate: each connection pauses so all of them together make rate/2
    half = wrk(url, script, SECONDS, env, delay_ms=connections * 1000 / max(peak["rps"] / 2, 1), **load)
    note("end")
    row = {"row": name, "rps": round(peak["rps"] * messages_per_request), "requests": peak["requests"],
           "non_2xx": peak["non_2xx"], "errors": peak["socket_errors"], "p50_ms_half": _round(half["p50_ms"]),
           "p99_ms_half": _round(half["p99_ms"]),
           "rps_half": round(half["rps"]), "cpu_us_per_request": cpu_us}
    if marks:
        row["marks"] = noted
    unit = "req/s"
    if messages_per_request > 1:
        unit = "msg/s"
        row.update({"unit": "messages/s", "messages_per_request": messages_per_request, "connections": connections,
                    "requests_per_s": round(peak["rps"], 1),
                    "cpu_us_per_message": round(cpu_used / max(peak["requests"] * messages_per_request, 1) * 1e6, 1)
                    if cpu_of else None})
    print(f"  {name:<13} {row['rps']:>8} {unit}   p50 {row['p50_ms_half']} ms  p99 {row['p99_ms_half']} ms "
          f"(at {row['rps_half']} req/s)  non-2xx {row['non_2xx']}  cpu {cpu_us} us/req", flush=True)
    return row


# --- the processes ---------------------------------------------------------------------


def seed(url: str, messages: int) -> None:
    """One gateway (id 1, token TOKEN) and ``messages`` submitted messages bench-1..N."""
    run_smsgw({**os.environ, "SMSGW_DATABASE_URL": url}, "migrate")
    path = url.split(":///", 1)[1]
    stamp = clock.now_iso()
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path, username,"
            " password, default_sender_id, callback_token, is_active, use_ssl, created_at, updated_at)"
            " VALUES (1, 'bench', 'jasmin', '127.0.0.1', 9, 'secure/send', 'u', 'p', 'B', ?, 1, 0, ?, ?)",
            (TOKEN, stamp, stamp))
        rows = ((1, "1", "B", "bench", "http://x/dlr", "submitted", "submitted", 0, f"bench-{i}",
                 '{"data": "Success"}', stamp, stamp, stamp) for i in range(1, messages + 1))
        db.executemany(
            "INSERT INTO sms_messages (sms_gateway_id, to_number, from_sender, message, callback_url,"
            " delivery_status, state, status_conflict, external_message_id, remote_response, submitted_at,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def seed_postgres(messages: int) -> str:
    """A new PostgreSQL database of its own, seeded like ``seed``; returns its URL."""
    from tests.servers import create_postgres_database

    url = create_postgres_database()
    run_smsgw({**os.environ, "SMSGW_DATABASE_URL": url}, "migrate")
    stamp = clock.now_iso()

    async def fill():
        import asyncpg
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO sms_gateways (id, name, provider_type, server_host, server_port, api_path, username,"
                " password, default_sender_id, callback_token, is_active, use_ssl, created_at, updated_at)"
                " VALUES (1, 'bench', 'jasmin', '127.0.0.1', 9, 'secure/send', 'u', 'p', 'B', $1, true, false, $2, $2)",
                TOKEN, stamp)
            await connection.execute("SELECT setval(pg_get_serial_sequence('sms_gateways', 'id'), 1)")
            await connection.execute(
                "INSERT INTO sms_messages (sms_gateway_id, to_number, from_sender, message, callback_url,"
                " delivery_status, state, status_conflict, external_message_id, remote_response, submitted_at,"
                " created_at, updated_at) SELECT 1, '1', 'B', 'bench', 'http://x/dlr', 'submitted', 'submitted',"
                " false, 'bench-' || g, '{\"data\": \"Success\"}'::jsonb, $1, $1, $1"
                " FROM generate_series(1, $2) AS g", stamp, messages)
        finally:
            await connection.close()

    asyncio.run(fill())
    return url


class Stack:
    """Processes started for the run, stopped at the end whatever happens."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.processes = []

    def api(self, database_url: str, **env: str):
        port = free_port()
        environment = {**os.environ, "SMSGW_DATABASE_URL": database_url, "SMSGW_API_PORT": str(port),
                       "SMSGW_METRICS_PORT": str(free_port()), **env}  # counted as deployed, on a port of its own
        process = start(environment, [*SMSGW, "api"], self.workdir / f"api-{port}.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url + "/healthz"), timeout=30, what="the API")
        return url, port, process, environment

    def noop(self):
        port = free_port()
        process = start(os.environ.copy(), [sys.executable, "-m", "uvicorn", "bench.noop:app", "--port", str(port),
                                            "--no-access-log", "--log-level", "warning", "--no-server-header",
                                            "--workers", str(WORKERS)],
                        self.workdir / "noop.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _status(url + "/webhooks/jasmin/1/dlr", "POST") == 200, what="the no-op app")
        return url

    def receiver(self):
        """The webhook receiver (bench/webhook_receiver.py): its URL and its process."""
        port = free_port()
        process = start(os.environ.copy(), [sys.executable, "-m", "uvicorn", "bench.webhook_receiver:app",
                                            "--port", str(port), "--no-access-log", "--log-level", "warning",
                                            "--no-server-header"], self.workdir / "webhook-receiver.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _status(url + "/count", "GET") == 200, what="the webhook receiver")
        return url, process

    def guard(self, env: dict, upstream: str, noop: bool = False):
        port = free_port()
        environment = {**env, "SMSGW_API_URL": upstream, "SMSGW_GUARD_PORT": str(port),
                       "SMSGW_GUARD_CONFDIR": str(self.workdir / f"guard-{port}"),
                       "SMSGW_GUARD_METRICS_PORT": str(free_port())}
        command = [sys.executable, str(ROOT / "bench" / "noop_guard.py")] if noop else [*SMSGW, "guard"]
        process = start(environment, command, self.workdir / f"guard-{port}.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        probe = url + ("/webhooks/jasmin/1/dlr" if noop else "/_guard/health")
        wait_until(lambda: _status(probe, "GET" if not noop else "POST") is not None, what="the guard")
        return url, port, process

    def simulator(self):
        port = free_port()
        env = {**os.environ, "SMSGW_SIMULATOR_PORT": str(port)}
        process = start(env, [*SMSGW, "simulator"], self.workdir / "simulator.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url + "/_simulator/config"), what="the simulator")
        httpx.post(url + "/_simulator/config", json={"throw": False})
        return port

    def nginx(self, name: str, config: str, api_port: int, guard_port: int, more_api_ports=()):
        nginx = start_nginx(self.workdir / name, config, api_port, guard_port, more_api_ports=list(more_api_ports))
        self.processes.append(nginx.process)
        return nginx.url

    def release(self, processes):
        """Stop ``processes`` (a row's own) and forget them, leaving the others running."""
        for process in reversed(processes):
            process.stop()
            self.processes.remove(process)

    def stop(self):
        for process in reversed(self.processes):
            process.stop()


def _status(url: str, method: str) -> int | None:
    try:
        return httpx.request(method, url, timeout=1).status_code
    except httpx.HTTPError:
        return None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_run(name: str, process, url: str, script: str, env: dict, rate: float) -> dict:
    """RSS before and after about MEMORY_REQUESTS requests (capped in time)."""
    seconds = max(5, min(MEMORY_CAP_S, int(MEMORY_REQUESTS / max(rate, 1)) + 1))
    before = rss_kb(process.popen.pid)
    result = wrk(url, script, seconds, env)
    after = rss_kb(process.popen.pid)
    growth = (after - before) / before * 100 if before else 0.0
    row = {"process": name, "requests": result["requests"], "rss_before_kb": before, "rss_after_kb": after,
           "growth_pct": round(growth, 1)}
    print(f"  memory {name:<6} {before} kB -> {after} kB ({growth:+.1f}%) over {result['requests']} requests",
          flush=True)
    return row


async def durability(database_url: str, stack: Stack, messages: int) -> dict:
    """kill -9 the API in the middle of a receipt load; every receipt answered 200 must be stored."""
    url, _, process, _ = stack.api(database_url)
    acked: list[int] = []
    stop = asyncio.Event()

    async def client(worker: int):
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            n = worker
            while not stop.is_set() and n < messages:
                n += 50
                try:
                    response = await http.post("/webhooks/jasmin/1/dlr",
                                               data={"id": f"bench-{n}", "message_status": "UNDELIV"})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acked.append(n)

    workers = [asyncio.create_task(client(i)) for i in range(1, 51)]
    await asyncio.sleep(2.0)
    process.popen.send_signal(signal.SIGKILL)
    process.popen.wait()
    stop.set()
    await asyncio.gather(*workers, return_exceptions=True)
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute(
            "SELECT m.external_message_id FROM sms_message_events e JOIN sms_messages m ON m.id = e.message_id"
            " WHERE e.kind = 'receipt' AND e.raw_status = 'undeliv'")}
    missing = [n for n in acked if f"bench-{n}" not in stored]
    print(f"  durability: {len(acked)} receipts acknowledged before kill -9, {len(missing)} of them missing",
          flush=True)
    return {"acknowledged": len(acked), "missing": len(missing), "ok": not missing and len(acked) > 0}


# --- sending (issue 12) ---------------------------------------------------------------------


def fresh_sqlite(workdir: Path, name: str) -> str:
    url = f"sqlite:///{workdir / name}"
    run_smsgw({**os.environ, "SMSGW_DATABASE_URL": url}, "migrate")
    return url


def fresh_postgres() -> str:
    from tests.servers import create_postgres_database

    url = create_postgres_database()
    run_smsgw({**os.environ, "SMSGW_DATABASE_URL": url}, "migrate")
    return url


def api_key(api_env: dict[str, str]) -> str:
    return run_smsgw(api_env, "apikey", "create", "--name", "bench").stdout.strip().splitlines()[-1]


def gateway_to_simulator(api_url: str, key: str, simulator_port: int, name: str, **fields) -> int:
    """A Jasmin gateway on the simulator's /secure/send; ``fields``: its dispatch settings."""
    response = httpx.post(f"{api_url}/api/sms-gateways", headers={"Authorization": f"Bearer {key}"}, json={
        "name": name, "server_host": "127.0.0.1", "server_port": simulator_port, "username": SIMULATOR_LOGIN[0],
        "password": SIMULATOR_LOGIN[1], "default_sender_id": "B", **fields})
    response.raise_for_status()
    return response.json()["data"]["id"]


def batch_body(size: int, send_at: str) -> dict:
    """One batch of ``size`` messages to as many numbers (a campaign's list), all due at ``send_at``."""
    return {"messages": [{"to_number": f"+1415555{n % 10000:04d}", "message": "benchmark", "send_at": send_at}
                         for n in range(size)]}


def body_file(workdir: Path, name: str, body: dict) -> str:
    path = workdir / name
    path.write_text(json.dumps(body))
    return str(path)


def upload(targets: list[tuple[str, str]], gateway_id: int, count: int, send_at: str) -> list[int]:
    """``count`` messages in batches of BATCH, all due at ``send_at``, sent to each API of
    ``targets`` (url, key) in turn; returns the batch ids."""
    batch_ids = []
    for index, first in enumerate(range(0, count, BATCH)):
        url, key = targets[index % len(targets)]
        response = httpx.post(f"{url}/api/sms-gateways/{gateway_id}/messages", timeout=120,
                              headers={"Authorization": f"Bearer {key}"},
                              json=batch_body(min(BATCH, count - first), send_at))
        if response.status_code != 202:
            raise RuntimeError(f"the batch route answered {response.status_code}: {response.text[:300]}")
        batch_ids.append(response.json()["meta"]["batch_id"])
    return batch_ids


def upload_due_together(targets: list[tuple[str, str]], gateway_id: int, count: int, simulator: str) -> dict:
    """Upload ``count`` messages with one common ``send_at`` a few seconds after the upload
    ends, so that all of them become due at once and the dispatcher's rate is measured
    alone, not the upload's. How long the upload takes is learnt from one batch first
    (scheduled a day ahead: it stays in the database, never due). The simulator's stats
    are reset just before."""
    started = time.monotonic()
    upload(targets[:1], gateway_id, BATCH, clock.iso_after(86400))
    one_batch = time.monotonic() - started
    lead = 3 + 2 * one_batch * -(-count // BATCH)
    httpx.post(simulator + "/_simulator/stats/reset")
    send_at = clock.iso_after(lead)
    batch_ids = upload(targets, gateway_id, count, send_at)
    overran = clock.now_iso() >= send_at
    if overran:
        print(f"  WARNING: the upload ended after its send_at ({lead:.1f} s ahead): sending overlapped it",
              flush=True)
    return {"batch_ids": batch_ids, "send_at": send_at, "upload_overran": overran}


def wait_for_sends(simulator: str, count: int, send_at: str, deadline_s: float) -> dict:
    """The simulator's stats once it accepted ``count`` sends, or when none came for 30 s
    after ``send_at`` (messages stuck: the row shows how many were sent), or at
    ``deadline_s`` from now."""
    deadline = time.monotonic() + deadline_s
    last, last_change = -1, time.monotonic() + max(0.0, clock.seconds_between(clock.now_iso(), send_at))
    while True:
        stats = httpx.get(simulator + "/_simulator/stats").json()
        if stats["accepted"] != last:
            last, last_change = stats["accepted"], max(last_change, time.monotonic())
        if stats["accepted"] >= count or time.monotonic() > deadline or time.monotonic() - last_change > 30:
            return stats
        time.sleep(0.5)


def batch_states(targets: list[tuple[str, str]], batch_ids: list[int]) -> dict[str, int]:
    """How many of the batches' messages are in each state, once none is left waiting
    (``scheduled`` or ``queued``, claimed or not) or after 30 s: all ``submitted`` when
    every send was taken (receipts are off)."""
    url, key = targets[0]
    deadline = time.monotonic() + 30
    while True:
        counts: dict[str, int] = {}
        for batch_id in batch_ids:
            data = httpx.get(f"{url}/api/sms-batches/{batch_id}", headers={"Authorization": f"Bearer {key}"}).json()
            for state, n in data["data"]["counts"].items():
                counts[state] = counts.get(state, 0) + n
        if not (counts.keys() & {"scheduled", "queued"}) or time.monotonic() > deadline:
            return counts
        time.sleep(1)


def send_rate(per_second: dict[str, int]) -> dict:
    """Sends per second from the simulator's per-second counts: ``whole`` over every second
    from the first with sends to the last (their partial first and last seconds included,
    so slightly low), ``steady`` over the seconds between those two (a second with no
    sends counts as 0)."""
    counts = {int(second): n for second, n in per_second.items()}
    if not counts:
        return {"whole": 0.0, "steady": None, "seconds": 0}
    first, last = min(counts), max(counts)
    whole = sum(counts.values()) / (last - first + 1)
    inner = range(first + 1, last)
    steady = sum(counts.get(s, 0) for s in inner) / len(inner) if len(inner) else None
    return {"whole": whole, "steady": steady, "seconds": last - first + 1}


def paced_window(per_second: dict[str, int], window: int) -> dict | None:
    """The ``window`` whole seconds after the first second with sends (that first one is
    partial, so left out; the last partial one is past the window when enough was sent):
    their average and their busiest second. None when the sends did not last that long."""
    counts = {int(second): n for second, n in per_second.items()}
    if not counts or max(counts) < min(counts) + window + 1:
        return None
    seconds = [counts.get(s, 0) for s in range(min(counts) + 1, min(counts) + window + 1)]
    return {"average": sum(seconds) / window, "busiest": max(seconds), "per_second": seconds}


def sending_row(name: str, rate: float, extra: dict) -> dict:
    """A row measured from the simulator's counts, not by wrk: messages/s, no latencies."""
    return {"row": name, "rps": round(rate), "unit": "messages/s", "requests": None, "non_2xx": 0, "errors": "",
            "p50_ms_half": None, "p99_ms_half": None, "rps_half": None, **extra}


def dispatch_row(stack: Stack, simulator_port: int, count: int) -> dict:
    """Messages handed to the simulator per second with no limit: a fresh SQLite API, one
    gateway (throughput_per_second null, max_in_flight 64), ``count`` messages due at once."""
    simulator = f"http://127.0.0.1:{simulator_port}"
    url, _, process, env = stack.api(fresh_sqlite(stack.workdir, "bench-dispatch.db"))
    try:
        key = api_key(env)
        gateway_id = gateway_to_simulator(url, key, simulator_port, "bench dispatch",
                                          throughput_per_second=None, max_in_flight=64)
        targets = [(url, key)]
        uploaded = upload_due_together(targets, gateway_id, count, simulator)
        cpu_before = cpu_seconds([process])
        stats = wait_for_sends(simulator, count, uploaded["send_at"], deadline_s=900)
        cpu_us = round((cpu_seconds([process]) - cpu_before) / max(stats["accepted"], 1) * 1e6)
        rate = send_rate(stats["per_second"])
        states = batch_states(targets, uploaded["batch_ids"])
    finally:
        stack.release([process])
    row = sending_row("dispatch", rate["whole"], {
        "messages": count, "accepted": stats["accepted"], "refused": stats["refused"], "seconds": rate["seconds"],
        "rate_over": "every second from the first with sends to the last, partial ones included",
        "steady_rps": _round(rate["steady"]), "throughput_per_second": None, "max_in_flight": 64,
        "states": states, "upload_overran": uploaded["upload_overran"], "cpu_us_per_request": cpu_us})
    print(f"  dispatch      {row['rps']:>8} msg/s  ({stats['accepted']} of {count} in {rate['seconds']} s; steady "
          f"{row['steady_rps']})  states {states}  cpu {cpu_us} us/message", flush=True)
    return row


def dispatch_paced_row(stack: Stack, simulator_port: int) -> dict:
    """Two API replicas on one fresh PostgreSQL database pacing one gateway at PACED_RATE/s,
    PACED_MESSAGES due at once (uploaded half through each), measured over PACED_WINDOW
    whole seconds of the simulator's per-second counts."""
    from tests.servers import drop_postgres_database

    simulator = f"http://127.0.0.1:{simulator_port}"
    pg = fresh_postgres()
    started = []
    try:
        url1, _, process1, env1 = stack.api(pg)
        started.append(process1)
        url2, _, process2, _ = stack.api(pg)
        started.append(process2)
        key = api_key(env1)
        gateway_id = gateway_to_simulator(url1, key, simulator_port, "bench paced",
                                          throughput_per_second=PACED_RATE)
        targets = [(url1, key), (url2, key)]
        uploaded = upload_due_together(targets, gateway_id, PACED_MESSAGES, simulator)
        cpu_before = [cpu_seconds([p]) for p in started]
        stats = wait_for_sends(simulator, PACED_MESSAGES, uploaded["send_at"],
                               deadline_s=PACED_MESSAGES / PACED_RATE + 120)
        cpu = [round(cpu_seconds([p]) - before, 1) for p, before in zip(started, cpu_before)]
        states = batch_states(targets, uploaded["batch_ids"])
    finally:
        stack.release(started)
        drop_postgres_database(pg)
    window = paced_window(stats["per_second"], PACED_WINDOW)
    average, busiest = (window["average"], window["busiest"]) if window else (0.0, None)
    row = sending_row("dispatch_paced", average, {
        "messages": PACED_MESSAGES, "accepted": stats["accepted"], "refused": stats["refused"],
        "throughput_per_second": PACED_RATE, "replicas": 2, "database": "postgresql",
        "window_s": PACED_WINDOW, "average": _round(average), "busiest_second": busiest,
        "window": f"{PACED_WINDOW} whole seconds after the first second with sends (the first and last "
                  "partial seconds left out); busiest = the most sends in one unix second",
        "per_second": window["per_second"] if window else None, "states": states,
        "replica_cpu_s": cpu, "upload_overran": uploaded["upload_overran"], "cpu_us_per_request": None})
    print(f"  dispatch_paced {average:>7.1f} msg/s average, busiest second {busiest} "
          f"({stats['accepted']} of {PACED_MESSAGES} sent; replicas' CPU {cpu} s)  states {states}", flush=True)
    return row


# --- status webhooks (issue 13) ----------------------------------------------------------


def received(receiver: str) -> int:
    """How many POSTs the webhook receiver has answered since it started."""
    return httpx.get(receiver + "/count").json()["received"]


def webhook_endpoint(api_url: str, key: str, receiver: str) -> int:
    """One endpoint, active, subscribed to every event of every gateway, on the receiver."""
    response = httpx.post(f"{api_url}/api/webhook-endpoints", headers={"Authorization": f"Bearer {key}"},
                          json={"url": receiver + "/bench", "events": list(EVENT_TYPES)})
    response.raise_for_status()
    return response.json()["data"]["id"]


def set_endpoint_active(api_url: str, key: str, endpoint_id: int, active: bool) -> None:
    httpx.patch(f"{api_url}/api/webhook-endpoints/{endpoint_id}", headers={"Authorization": f"Bearer {key}"},
                json={"is_active": active}).raise_for_status()


def sqlite_count(database_url: str, query: str) -> dict:
    """``query``'s (key, count) rows, read from the API's SQLite file beside it (read-only,
    one short transaction: the API's CPU, which the rows report, is not spent on it)."""
    path = database_url.split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return dict(db.execute(query).fetchall())


def delivery_counts(database_url: str) -> dict[str, int]:
    """The outbox's deliveries by status (pending, delivering, succeeded, failed)."""
    return sqlite_count(database_url, "SELECT status, count(*) FROM webhook_deliveries GROUP BY status")


def unfinished(counts: dict[str, int]) -> int:
    return counts.get("pending", 0) + counts.get("delivering", 0)


def drain(database_url: str, deadline_s: float) -> tuple[dict[str, int], float | None]:
    """Wait until no delivery is pending or under way (or ``deadline_s`` passed): the counts
    then, and the seconds it took (None when the deadline came first)."""
    started = time.monotonic()
    while True:
        counts = delivery_counts(database_url)
        if not unfinished(counts):
            return counts, time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            return counts, None
        time.sleep(0.05)


def webhook_row(stack: Stack, receiver: str, receiver_process, count: int) -> dict:
    """Deliveries per second to the receiver, apart from the changes that make them: a fresh
    SQLite API whose endpoint is off while ``count`` scheduled messages (batches of BATCH, due
    a day ahead: the dispatcher sends none) are stored, each one ``message.status_updated``
    event kept in the outbox with no delivery; then the endpoint is switched on and a replay
    since before the sends queues them all at once. The rate is deliveries succeeded over the
    seconds from the replay's request until none is pending or under way."""
    database = fresh_sqlite(stack.workdir, "bench-webhook.db")
    url, _, process, env = stack.api(database, **WEBHOOK_ENV)
    try:
        key = api_key(env)
        # the gateway is never called (every message is due a day ahead): port 9, discard
        gateway_id = gateway_to_simulator(url, key, 9, "bench webhook")
        endpoint_id = webhook_endpoint(url, key, receiver)
        set_endpoint_active(url, key, endpoint_id, False)
        since = clock.iso_after(-1)
        upload([(url, key)], gateway_id, count, clock.iso_after(86400))
        events = sum(sqlite_count(database, "SELECT type, count(*) FROM webhook_events GROUP BY type").values())
        before = received(receiver)
        set_endpoint_active(url, key, endpoint_id, True)
        cpu_before = cpu_seconds([process]), cpu_seconds([receiver_process])
        started = time.monotonic()
        response = httpx.post(f"{url}/api/webhook-endpoints/{endpoint_id}/replay", params={"since": since},
                              headers={"Authorization": f"Bearer {key}"}, timeout=120)
        response.raise_for_status()
        replay_s = time.monotonic() - started
        counts, _ = drain(database, deadline_s=max(120.0, count / 50))
        elapsed = time.monotonic() - started
        api_cpu, receiver_cpu = (cpu_seconds([p]) - b for p, b in zip((process, receiver_process), cpu_before))
        got = received(receiver) - before
    finally:
        stack.release([process])
    succeeded = counts.get("succeeded", 0)
    rate = succeeded / elapsed
    row = {"row": "webhook", "rps": round(rate), "unit": "deliveries/s", "requests": None,
           "non_2xx": counts.get("failed", 0), "errors": "", "p50_ms_half": None, "p99_ms_half": None,
           "rps_half": None, "events": events, "queued": response.json()["data"]["queued"], "deliveries": counts,
           "received": got, "seconds": round(elapsed, 2), "replay_s": round(replay_s, 2),
           "drained": not unfinished(counts),
           "cpu_us_per_request": round(api_cpu / max(succeeded, 1) * 1e6),
           "receiver_cpu_us_per_delivery": round(receiver_cpu / max(succeeded, 1) * 1e6)}
    print(f"  webhook       {row['rps']:>8} deliveries/s  ({succeeded} of {events} events in {row['seconds']} s, "
          f"the replay's request {row['replay_s']} s; receiver got {got})  deliveries {counts}  "
          f"cpu {row['cpu_us_per_request']} us/delivery (receiver {row['receiver_cpu_us_per_delivery']})",
          flush=True)
    return row


def copy_sqlite(database_url: str, name: str, workdir: Path) -> str:
    """A copy of a seeded SQLite database (SQLite's backup: consistent, WAL included)."""
    copy = workdir / name
    with contextlib.closing(sqlite3.connect(database_url.split(":///", 1)[1])) as source, \
            contextlib.closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return f"sqlite:///{copy}"


def dlr_webhook_row(stack: Stack, database_url: str, receiver: str, dlr_env: dict[str, str]) -> dict:
    """``dlr_api`` on a copy of its seeded database, with one active endpoint subscribed to
    every event on the receiver: the receipts' rate as ``dlr_api`` measures it, and the
    outbox beside it: deliveries made and delivered in the peak run and in the whole run
    (warm-up, peak, half rate), the backlog left at its end and how long it took to drain
    (at most DRAIN_S)."""
    url, _, process, env = stack.api(database_url, **WEBHOOK_ENV)
    try:
        webhook_endpoint(url, api_key(env), receiver)

        def marks() -> dict:
            counts = delivery_counts(database_url)
            return {"t": time.monotonic(), "made": sum(counts.values()), "succeeded": counts.get("succeeded", 0),
                    "received": received(receiver)}

        row = measure("dlr_api_webhook", url, "dlr.lua", dlr_env, cpu_of=[process], marks=marks)
        counts, drain_s = drain(database_url, DRAIN_S)
        received_after = received(receiver)
    finally:
        stack.release([process])
    m = row.pop("marks")
    start, peak_start, peak_end, end = m["start"], m["peak_start"], m["peak_end"], m["end"]
    peak_s = peak_end["t"] - peak_start["t"]
    row["webhooks"] = {
        "peak_made": peak_end["made"] - peak_start["made"],
        "peak_delivered": peak_end["succeeded"] - peak_start["succeeded"],
        "peak_delivered_per_s": round((peak_end["succeeded"] - peak_start["succeeded"]) / peak_s),
        "backlog_at_peak_start": peak_start["made"] - peak_start["succeeded"],
        "backlog_at_peak_end": peak_end["made"] - peak_end["succeeded"],
        "run_made": end["made"] - start["made"],
        "run_delivered": end["succeeded"] - start["succeeded"],
        "backlog_at_run_end": end["made"] - end["succeeded"],
        "drain_s": None if drain_s is None else round(drain_s, 2), "drain_limit_s": DRAIN_S,
        "deliveries": counts, "received": received_after - start["received"]}
    w = row["webhooks"]
    print(f"    webhooks: peak {w['peak_made']} made, {w['peak_delivered']} delivered "
          f"({w['peak_delivered_per_s']}/s), backlog {w['backlog_at_peak_start']} -> {w['backlog_at_peak_end']}; "
          f"whole run {w['run_made']} made, "
          f"{w['run_delivered']} delivered, backlog {w['backlog_at_run_end']}; drained "
          f"{'in ' + str(w['drain_s']) + ' s' if drain_s is not None else 'NOT within ' + str(DRAIN_S) + ' s'}; "
          f"deliveries {counts}; receiver got {w['received']}", flush=True)
    return row


# --- the run -----------------------------------------------------------------------------


def wanted(row: str) -> bool:
    return not ROWS or row in ROWS


def main() -> int:
    if WRK is None:
        print("wrk is not installed (make bench installs it from Debian's packages)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="smsgw-bench-"))
    stack = Stack(workdir)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version()},
                     "settings": {"seconds": SECONDS, "connections": CONNECTIONS, "api_workers": WORKERS},
                     "rows": [], "memory": []}
    rows = results["rows"]
    dlr_env = {"BENCH_MESSAGES": "100000", "BENCH_PATH": "/webhooks/jasmin/1/dlr", **jasmin_receipt_env()}
    guarded = {**dlr_env, "BENCH_PATH": f"/webhooks/jasmin/1/dlr?token={TOKEN}"}
    try:
        print(f"smsgw bench: {os.cpu_count()} cores, wrk 1 thread, {CONNECTIONS} connections, {SECONDS} s a row")
        db100k = f"sqlite:///{workdir / 'bench-100k.db'}"
        seed(db100k, 100_000)
        if wanted("dlr_api_webhook"):  # its own copy, taken before dlr_api's receipts change the original
            db100k_webhook = copy_sqlite(db100k, "bench-100k-webhook.db", workdir)
        api_url, api_port, api_process, api_env = stack.api(db100k)
        if wanted("noop"):
            rows.append(measure("noop", stack.noop(), "dlr.lua", dlr_env, cpu_of=stack.processes[-1:]))
        if wanted("dlr_api"):
            rows.append(measure("dlr_api", api_url, "dlr.lua", dlr_env, cpu_of=[api_process]))
        if wanted("dlr_api_webhook") or wanted("webhook"):  # one receiver for both
            receiver, receiver_process = stack.receiver()
            if wanted("dlr_api_webhook"):
                rows.append(dlr_webhook_row(stack, db100k_webhook, receiver, dlr_env))
            if wanted("webhook"):
                rows.append(webhook_row(stack, receiver, receiver_process, WEBHOOK_EVENTS))
            stack.release([receiver_process])
        guard_url, guard_port, guard_process = stack.guard(api_env, api_url)
        if wanted("guard_noop"):
            noop_guard_url, _, _ = stack.guard(api_env, api_url, noop=True)
            rows.append(measure("guard_noop", noop_guard_url, "dlr.lua", guarded))
        if wanted("dlr_guard"):
            rows.append(measure("dlr_guard", guard_url, "dlr.lua", guarded, cpu_of=[api_process]))
        # All load comes from one address, which the shipped per-IP limit (100/s)
        # would turn into 429s: the bench raises it, and changes nothing else.
        shipped = (ROOT / "deploy" / "nginx" / "smsgw.conf").read_text()
        assert "rate=100r/s" in shipped and "        auth_request /_smsgw_guard_check;\n" in shipped
        unlimited = shipped.replace("rate=100r/s", "rate=1000000r/s")
        (workdir / "nginx-front.conf").write_text(unlimited)
        # nginx_direct: the same, with the guard check taken out: nginx straight to the API
        (workdir / "nginx-direct.conf").write_text(unlimited.replace("        auth_request /_smsgw_guard_check;\n", ""))
        if wanted("nginx_direct"):
            direct = stack.nginx("nginx-direct", str(workdir / "nginx-direct.conf"), api_port, guard_port)
            rows.append(measure("nginx_direct", direct, "dlr.lua", guarded, cpu_of=[api_process]))
        if wanted("dlr_nginx"):
            front = stack.nginx("nginx", str(workdir / "nginx-front.conf"), api_port, guard_port)
            rows.append(measure("dlr_nginx", front, "dlr.lua", guarded, cpu_of=[api_process]))
        sending = [r for r in ("simulator", "send", "send_batch", "dispatch", "dispatch_paced") if wanted(r)]
        if sending:  # one simulator for them all, receipts off
            simulator_port = stack.simulator()
            simulator_process = stack.processes[-1]
        if wanted("simulator"):
            login = base64.b64encode(":".join(SIMULATOR_LOGIN).encode()).decode()
            rows.append(measure("simulator", f"http://127.0.0.1:{simulator_port}", "post.lua", {
                "BENCH_PATH": "/secure/send", "BENCH_AUTHORIZATION": f"Basic {login}",
                "BENCH_BODY_FILE": body_file(workdir, "simulator-send.json", {
                    "to": "+14155550123", "from": "B", "coding": 0, "content": "benchmark"})}))
        if wanted("send"):
            key = api_key(api_env)
            gateway_id = gateway_to_simulator(api_url, key, simulator_port, "bench send")
            rows.append(measure("send", api_url, "send.lua", {
                "BENCH_PATH": f"/api/sms-gateways/{gateway_id}/send", "BENCH_KEY": key}, cpu_of=[api_process]))
        if wanted("send_batch"):
            # A fresh API of its own (its database fills with scheduled messages); every
            # item is due a day ahead, so the dispatcher sends none during the measurement.
            batch_url, _, batch_process, batch_env = stack.api(fresh_sqlite(workdir, "bench-batch.db"))
            key = api_key(batch_env)
            gateway_id = gateway_to_simulator(batch_url, key, simulator_port, "bench batch")
            rows.append(measure("send_batch", batch_url, "post.lua", {
                "BENCH_PATH": f"/api/sms-gateways/{gateway_id}/messages", "BENCH_AUTHORIZATION": f"Bearer {key}",
                "BENCH_BODY_FILE": body_file(workdir, "batch.json", batch_body(BATCH, clock.iso_after(86400)))},
                cpu_of=[batch_process], messages_per_request=BATCH, connections=BATCH_CONNECTIONS, timeout_s=30))
            stack.release([batch_process])
        if wanted("dispatch"):
            rows.append(dispatch_row(stack, simulator_port, DISPATCH_MESSAGES))
        if wanted("dispatch_paced"):
            rows.append(dispatch_paced_row(stack, simulator_port))
        if sending:
            stack.release([simulator_process])
        if wanted("memory"):
            rate = next((r["rps"] for r in rows if r["row"] == "dlr_api"), 5000)
            results["memory"].append(memory_run("api", api_process, api_url, "dlr.lua", dlr_env, rate))
            grate = next((r["rps"] for r in rows if r["row"] == "dlr_guard"), 700)
            results["memory"].append(memory_run("guard", guard_process, guard_url, "dlr.lua", guarded, grate))
        if wanted("dlr_api_pg") or wanted("dlr_nginx_2x"):
            pg = seed_postgres(100_000)
            results["postgres_database"] = pg.rsplit("/", 1)[1]
            try:
                pg_url, pg_port, pg_process, pg_env = stack.api(pg)
                if wanted("dlr_api_pg"):
                    rows.append(measure("dlr_api_pg", pg_url, "dlr.lua", dlr_env, cpu_of=[pg_process]))
                if wanted("dlr_nginx_2x"):
                    _, pg_port2, pg_process2, _ = stack.api(pg)
                    _, pg_guard_port, _ = stack.guard(pg_env, pg_url)
                    two = stack.nginx("nginx-2x", str(workdir / "nginx-front.conf"), pg_port, pg_guard_port,
                                      more_api_ports=[pg_port2])
                    rows.append(measure("dlr_nginx_2x", two, "dlr.lua", guarded, cpu_of=[pg_process, pg_process2]))
            finally:
                stack.stop()
                stack.processes.clear()
                from tests.servers import drop_postgres_database
                drop_postgres_database(pg)
        if wanted("dlr_api_1m"):
            db1m = f"sqlite:///{workdir / 'bench-1m.db'}"
            seed(db1m, 1_000_000)
            url_1m, _, process_1m, _ = stack.api(db1m)
            rows.append(measure("dlr_api_1m", url_1m, "dlr.lua", {**dlr_env, "BENCH_MESSAGES": "1000000"},
                                cpu_of=[process_1m]))
        if wanted("durability"):
            dbk = f"sqlite:///{workdir / 'bench-kill.db'}"
            seed(dbk, 100_000)
            results["durability"] = asyncio.run(durability(dbk, stack, 100_000))
    finally:
        stack.stop()
    results["ratios"] = ratios({r["row"]: r["rps"] for r in rows}, results)
    print_table(results)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


TARGETS = [("dlr_api", "noop", 0.5), ("dlr_nginx", "nginx_direct", 0.8), ("dlr_guard", "guard_noop", 0.9),
           ("dlr_api_1m", "dlr_api", 0.8), ("dlr_api_pg", "dlr_api", 0.5), ("dlr_nginx_2x", "dlr_api_pg", 1.0),
           # issue 12; send_batch and dispatch are messages/s against noop's requests/s
           ("send", "noop", 0.025), ("send_batch", "noop", 0.5), ("dispatch", "noop", 0.05),
           # issue 13; webhook is deliveries/s against noop's requests/s
           ("webhook", "noop", 0.05), ("dlr_api_webhook", "dlr_api", 0.8)]


def ratios(rps: dict, results: dict) -> list[dict]:
    out = []
    for row, base, target in TARGETS:
        if row in rps and base in rps and rps[base]:
            value = rps[row] / rps[base]
            out.append({"ratio": f"{row} / {base}", "value": round(value, 3), "target": target,
                        "met": value >= target})
    api = next((r for r in results["rows"] if r["row"] == "dlr_api"), None)
    if api and api["p99_ms_half"] is not None:
        out.append({"ratio": "dlr_api p99 ms at half rate", "value": api["p99_ms_half"], "target": 10,
                    "met": api["p99_ms_half"] <= 10})
    paced = next((r for r in results["rows"] if r["row"] == "dispatch_paced"), None)
    if paced:
        low, high = PACED_RATE * 0.95, PACED_RATE * 1.05
        out.append({"ratio": "dispatch_paced average msg/s", "value": paced["average"],
                    "target": PACED_RATE, "wanted": f"{low:g}..{high:g}", "met": low <= paced["average"] <= high})
        out.append({"ratio": "dispatch_paced busiest second", "value": paced["busiest_second"],
                    "target": PACED_RATE * 1.1, "wanted": f"<= {PACED_RATE * 1.1:g}",
                    "met": paced["busiest_second"] is not None and paced["busiest_second"] <= PACED_RATE * 1.1})
    for memory in results.get("memory", []):
        out.append({"ratio": f"{memory['process']} RSS growth %", "value": memory["growth_pct"], "target": 10,
                    "met": memory["growth_pct"] < 10})
    return out


def dlr_webhook_note(r: dict) -> str:
    """What dlr_api_webhook's outbox did: made, delivered, left, drained."""
    w = r["webhooks"]
    drained = f"{w['drain_s']} s after it" if w["drain_s"] is not None else f"NOT within {w['drain_limit_s']} s"
    return (f"dlr_api_webhook: in the peak run {w['peak_made']} deliveries made, {w['peak_delivered']} delivered "
            f"({w['peak_delivered_per_s']}/s), the backlog {w['backlog_at_peak_start']} at its start and "
            f"{w['backlog_at_peak_end']} at its end; over the whole run "
            f"(warm-up, peak, half rate) {w['run_made']} made, {w['run_delivered']} delivered, "
            f"{w['backlog_at_run_end']} left, drained {drained}; deliveries {w['deliveries']}, "
            f"the receiver got {w['received']}")


def print_table(results: dict) -> None:
    def cell(value) -> str:
        return "" if value is None else str(value)

    print("\n| row | req/s (msg/s: messages per second) | p50 ms @ half | p99 ms @ half | API CPU us/request | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results["rows"]:
        rate = {"messages/s": f"{r['rps']} msg/s", "deliveries/s": f"{r['rps']} deliveries/s"}.get(r.get("unit"),
                                                                                                 r["rps"])
        print(f"| {r['row']} | {rate} | {cell(r['p50_ms_half'])} | {cell(r['p99_ms_half'])} | "
              f"{cell(r['cpu_us_per_request'])} | {r['non_2xx']} |")
    notes = {
        "send_batch": lambda r: f"send_batch: batches of {r['messages_per_request']} at {r['requests_per_s']} "
                                f"requests/s over {r['connections']} connections; CPU {r['cpu_us_per_request']} us per batch request, "
                                f"{r['cpu_us_per_message']} us per message; latencies are a whole batch's",
        "dispatch": lambda r: f"dispatch: {r['accepted']} of {r['messages']} sent in {r['seconds']} s (rate over "
                              f"{r['rate_over']}; steady part {r['steady_rps']} msg/s), throughput null, "
                              f"max_in_flight {r['max_in_flight']}; CPU per message sent; states {r['states']}",
        "dispatch_paced": lambda r: f"dispatch_paced: {r['replicas']} replicas on PostgreSQL, throughput "
                                    f"{r['throughput_per_second']}/s, {r['accepted']} of {r['messages']} sent; "
                                    f"{r['window']}; states {r['states']}",
        "webhook": lambda r: f"webhook: {r['deliveries'].get('succeeded', 0)} of {r['events']} events delivered "
                             f"in {r['seconds']} s from the replay's request ({r['replay_s']} s of it); the "
                             f"receiver got {r['received']}; deliveries {r['deliveries']}; the API's CPU is "
                             f"per delivery (the receiver's: {r['receiver_cpu_us_per_delivery']} us)",
        "dlr_api_webhook": dlr_webhook_note,
    }
    for r in results["rows"]:
        if r["row"] in notes:
            print(f"- {notes[r['row']](r)}")
    print("\n| target | value | wanted | met |")
    print("|---|---:|---:|---|")
    for r in results["ratios"]:
        wanted_text = r.get("wanted") or (f"< {r['target']}" if "RSS" in r["ratio"] else
                                          f"<= {r['target']}" if "p99" in r["ratio"] else f">= {r['target']}")
        print(f"| {r['ratio']} | {r['value']} | {wanted_text} | {'yes' if r['met'] else 'NO'} |")
    if "durability" in results:
        d = results["durability"]
        print(f"\ndurability (kill -9 mid-load): {d['acknowledged']} acknowledged, {d['missing']} missing: "
              f"{'ok' if d['ok'] else 'FAILED'}")


if __name__ == "__main__":
    sys.exit(main())
