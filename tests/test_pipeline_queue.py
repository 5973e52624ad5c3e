"""The pipeline's group commit: batches, answers after commit, isolates a failing change."""

from __future__ import annotations

import asyncio

from api.pipeline import Pipeline


def test_waiting_receipts_share_one_commit_and_a_bad_one_fails_alone():
    committed: list[list[str]] = []

    async def commit_batch(works: list[str]) -> list[str]:
        if "bad" in works:
            raise ValueError("this receipt cannot be stored")
        await asyncio.sleep(0)  # the commit
        committed.append(list(works))
        return [f"ok:{w}" for w in works]

    async def run():
        writer = Pipeline(commit_batch)
        writer.start()
        jobs = [asyncio.create_task(writer.submit(w)) for w in ("a", "b", "bad", "c")]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        # later receipts go on being committed after the failure
        after = await writer.submit("d")
        await writer.stop()
        return results, after, writer.batches

    results, after, batches = asyncio.run(run())
    assert results[0] == "ok:a" and results[1] == "ok:b" and results[3] == "ok:c"
    assert isinstance(results[2], ValueError)
    assert after == "ok:d"
    # the four arrived together: one batch tried, then retried one by one
    assert committed[:3] == [["a"], ["b"], ["c"]] and batches == 2


def test_a_receipt_is_answered_only_after_its_batch_is_committed():
    order: list[str] = []
    release = asyncio.Event

    async def run():
        gate = release()

        async def commit_batch(works):
            await gate.wait()
            order.append("committed")
            return ["ok"] * len(works)

        writer = Pipeline(commit_batch)
        writer.start()
        job = asyncio.create_task(writer.submit("x"))
        await asyncio.sleep(0.01)
        assert not job.done()  # still waiting for the commit
        gate.set()
        order.append(await job)
        await writer.stop()

    asyncio.run(run())
    assert order == ["committed", "ok"]


def test_a_stopped_writer_answers_every_waiting_receipt_and_refuses_new_ones():
    async def run():
        gate = asyncio.Event()

        async def commit_batch(works):
            await gate.wait()  # never set: the writer is stopped mid-commit
            return ["ok"] * len(works)

        writer = Pipeline(commit_batch)
        writer.start()
        jobs = [asyncio.create_task(writer.submit(w)) for w in "abc"]
        await asyncio.sleep(0.01)
        await writer.stop()
        results = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), timeout=2)
        try:
            await writer.submit("late")
        except RuntimeError as exc:
            late = exc
        return results, late

    results, late = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "not running" in str(late)
