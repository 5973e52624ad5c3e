"""``make bench``: every configuration on loopback, loaded with wrk, in one run.

Each row is measured in the same run on the same machine, so the ratios hold
even when the machine is noisy. Prints a table and writes bench/results.json.
Knobs (environment): BENCH_SECONDS (8), BENCH_CONNECTIONS (32), BENCH_ROWS
(comma-separated subset), BENCH_MEMORY_REQUESTS (200000), BENCH_MEMORY_CAP_S (90).
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import clock  # noqa: E402
from api.providers import jasmin  # noqa: E402
from tests.nginx import start_nginx  # noqa: E402
from tests.servers import SMSGW, free_port, healthy, run_smsgw, start, wait_until  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
MEMORY_REQUESTS = int(os.environ.get("BENCH_MEMORY_REQUESTS", "200000"))
MEMORY_CAP_S = int(os.environ.get("BENCH_MEMORY_CAP_S", "90"))
ROWS = [r for r in os.environ.get("BENCH_ROWS", "").split(",") if r]
TOKEN = "bench-token-" + "x" * 32
WRK = shutil.which("wrk")
# API worker processes (smsgw api --workers); the no-op ceiling runs with as many.
WORKERS = int(os.environ.get("SMSGW_API_WORKERS", "1"))


# --- load ------------------------------------------------------------------------------


def jasmin_receipt_env() -> dict[str, str]:
    """What dlr.lua posts: a level-2 receipt as Jasmin's thrower sends it (its fields
    after ``id``, which the script picks per request) and the thrower's User-Agent."""
    moment = clock.now()
    fields = jasmin.level2_receipt("", "DELIVRD", "A0000002", "hello", moment, moment)
    del fields["id"]
    return {"BENCH_BODY": urlencode(fields), "BENCH_USER_AGENT": jasmin.THROWER_USER_AGENT}


def wrk(url: str, script: str, seconds: int, env: dict[str, str], delay_ms: float = 0) -> dict:
    """One wrk run: requests/s, and latency percentiles (with --latency)."""
    args = [WRK, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench" / script), url]
    out = subprocess.run(args, env={**os.environ, **env, "BENCH_DELAY_MS": str(delay_ms)},
                         capture_output=True, text=True, timeout=seconds + 60).stdout
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


def measure(name: str, url: str, script: str, env: dict[str, str], cpu_of=()) -> dict:
    """One row. ``cpu_of``: the processes whose CPU time per request the row reports
    (the API's, for receipt rows): where the time goes, to guide the next step."""
    wrk(url, script, 2, env)  # warm up
    cpu_before = cpu_seconds(cpu_of)
    peak = wrk(url, script, SECONDS, env)
    cpu_us = round((cpu_seconds(cpu_of) - cpu_before) / max(peak["requests"], 1) * 1e6) if cpu_of else None
    # latency at half the peak rate: each connection pauses so all of them together make rate/2
    half = wrk(url, script, SECONDS, env, delay_ms=CONNECTIONS * 1000 / max(peak["rps"] / 2, 1))
    row = {"row": name, "rps": round(peak["rps"]), "requests": peak["requests"], "non_2xx": peak["non_2xx"],
           "errors": peak["socket_errors"], "p50_ms_half": _round(half["p50_ms"]),
           "p99_ms_half": _round(half["p99_ms"]),
           "rps_half": round(half["rps"]), "cpu_us_per_request": cpu_us}
    print(f"  {name:<13} {row['rps']:>8} req/s   p50 {row['p50_ms_half']} ms  p99 {row['p99_ms_half']} ms "
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
        environment = {**os.environ, "SMSGW_DATABASE_URL": database_url, "SMSGW_API_PORT": str(port), **env}
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

    def guard(self, env: dict, upstream: str, noop: bool = False):
        port = free_port()
        environment = {**env, "SMSGW_API_URL": upstream, "SMSGW_GUARD_PORT": str(port),
                       "SMSGW_GUARD_CONFDIR": str(self.workdir / f"guard-{port}")}
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
        api_url, api_port, api_process, api_env = stack.api(db100k)
        if wanted("noop"):
            rows.append(measure("noop", stack.noop(), "dlr.lua", dlr_env, cpu_of=stack.processes[-1:]))
        if wanted("dlr_api"):
            rows.append(measure("dlr_api", api_url, "dlr.lua", dlr_env, cpu_of=[api_process]))
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
        if wanted("send"):
            simulator_port = stack.simulator()
            key = run_smsgw(api_env, "apikey", "create", "--name", "bench").stdout.strip().splitlines()[-1]
            gateway = httpx.post(f"{api_url}/api/sms-gateways", headers={"Authorization": f"Bearer {key}"}, json={
                "name": "bench send", "server_host": "127.0.0.1", "server_port": simulator_port,
                "username": "demo", "password": "demo-password", "default_sender_id": "B"}).json()["data"]
            rows.append(measure("send", api_url, "send.lua", {
                "BENCH_PATH": f"/api/sms-gateways/{gateway['id']}/send", "BENCH_KEY": key}))
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
           ("dlr_api_1m", "dlr_api", 0.8), ("dlr_api_pg", "dlr_api", 0.5), ("dlr_nginx_2x", "dlr_api_pg", 1.0)]


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
    for memory in results.get("memory", []):
        out.append({"ratio": f"{memory['process']} RSS growth %", "value": memory["growth_pct"], "target": 10,
                    "met": memory["growth_pct"] < 10})
    return out


def print_table(results: dict) -> None:
    print("\n| row | req/s | p50 ms @ half | p99 ms @ half | API CPU us/request | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results["rows"]:
        print(f"| {r['row']} | {r['rps']} | {r['p50_ms_half']} | {r['p99_ms_half']} | "
              f"{r['cpu_us_per_request'] if r['cpu_us_per_request'] is not None else ''} | {r['non_2xx']} |")
    print("\n| target | value | wanted | met |")
    print("|---|---:|---:|---|")
    for r in results["ratios"]:
        wanted_text = f"< {r['target']}" if "RSS" in r["ratio"] else \
            f"<= {r['target']}" if "p99" in r["ratio"] else f">= {r['target']}"
        print(f"| {r['ratio']} | {r['value']} | {wanted_text} | {'yes' if r['met'] else 'NO'} |")
    if "durability" in results:
        d = results["durability"]
        print(f"\ndurability (kill -9 mid-load): {d['acknowledged']} acknowledged, {d['missing']} missing: "
              f"{'ok' if d['ok'] else 'FAILED'}")


if __name__ == "__main__":
    sys.exit(main())
