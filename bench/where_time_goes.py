"""Where a receipt's time goes in the API, in two parts, each measured alone.

1. The pipeline: batches of receipts through ``api.pipeline.run_batch`` on a
   seeded SQLite database (100,000 messages), timed by part (begin, the reads,
   the plan, the writes, the commit), per receipt, for batches of 1, 8, 32 and 128.
2. The request: the receipt route through the whole ASGI app (middleware,
   routing, body parsing, the access log line, the hand-over to the pipeline)
   called in-process, with a pipeline whose commit stores nothing.

No network and no load generator: the figures are CPU time in one process.
``make bench`` measures the whole; this says which part to work on.
Run: ``.venv/bin/python bench/where_time_goes.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import changes, clock, db, pipeline  # noqa: E402
from bench.run import jasmin_receipt_env, seed  # noqa: E402

MESSAGES = 100_000


def receipts(n: int) -> list[changes.Receipt]:
    return [changes.Receipt(f"bench-{random.randint(1, MESSAGES)}", "delivrd",
                            {"id": "x", "message_status": "DELIVRD", "err": "000"}, 1, "127.0.0.1", clock.now_iso())
            for _ in range(n)]


def timed(name: str, function, spent: dict[str, float]):
    def wrapper(*args):
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            spent[name] += time.perf_counter() - started
    return wrapper


def pipeline_part(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'profile.db'}"
    seed(url, MESSAGES)
    driver = pipeline.SqliteBatches(url, 3600)
    fetch_all, execute_many = db.fetch_all, db.execute_many
    print("the pipeline (us per receipt; plan = the rest of run_batch: pure Python):")
    for size in (1, 8, 32, 128):
        spent: dict[str, float] = defaultdict(float)
        db.fetch_all = timed("reads", fetch_all, spent)
        db.execute_many = timed("writes", execute_many, spent)
        rounds = max(20, 4000 // size)
        for _ in range(rounds):
            batch = receipts(size)
            started = time.perf_counter()
            with driver.engine.connect() as connection:
                transaction = connection.begin()
                spent["begin"] += time.perf_counter() - started
                running = time.perf_counter()
                pipeline.run_batch(connection, batch, 3600)
                spent["run_batch"] += time.perf_counter() - running
                committing = time.perf_counter()
                transaction.commit()
                spent["commit"] += time.perf_counter() - committing
            spent["total"] += time.perf_counter() - started
        spent["plan"] = spent.pop("run_batch") - spent["reads"] - spent["writes"]
        parts = "  ".join(f"{name} {spent[name] / rounds / size * 1e6:.0f}"
                          for name in ("begin", "reads", "plan", "writes", "commit", "total"))
        print(f"  batch {size:>3}: {parts}")
    db.fetch_all, db.execute_many = fetch_all, execute_many
    asyncio.run(driver.close())


def request_part(workdir: Path) -> None:
    import logging

    os.environ["SMSGW_DATABASE_URL"] = f"sqlite:///{workdir / 'profile.db'}"
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # the access log, written nowhere
    from api.app import create_app

    async def nothing_stored(batch):
        return ["applied"] * len(batch)

    app = create_app()
    body = ("id=bench-1&" + jasmin_receipt_env()["BENCH_BODY"]).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/webhooks/jasmin/1/dlr", "raw_path": b"/webhooks/jasmin/1/dlr",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"x"), (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", str(len(body)).encode()),
                         (b"user-agent", jasmin_receipt_env()["BENCH_USER_AGENT"].encode())]}

    async def one() -> None:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            pass

        await app(dict(scope), receive, send)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            app.state.pipeline.commit = nothing_stored
            await asyncio.gather(*(one() for _ in range(500)))  # warm up
            n = 5000
            started = time.process_time()
            await asyncio.gather(*(one() for _ in range(n)))
            print(f"the request, without the pipeline's work: {(time.process_time() - started) / n * 1e6:.0f} us CPU")

    asyncio.run(main())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="smsgw-profile-") as workdir:
        pipeline_part(Path(workdir))
        request_part(Path(workdir))
