"""The pipeline's group commit: batches, answers after commit, isolates a failing change."""

from __future__ import annotations

import asyncio

from api.pipeline import Pipeline


def test_waiting_receipts_share_one_commit_and_a_bad_one_fails_alone():
    committed: list[list[str]] = []

    async def commit_batch(batch: list[str]) -> list[str]:
        if "bad" in batch:
            raise ValueError("this receipt cannot be stored")
        await asyncio.sleep(0)  # the commit
        committed.append(list(batch))
        return [f"ok:{w}" for w in batch]

    async def run():
        pipeline = Pipeline(commit_batch)
        pipeline.start()
        waiting = [asyncio.create_task(pipeline.submit(w)) for w in ("a", "b", "bad", "c")]
        results = await asyncio.gather(*waiting, return_exceptions=True)
        # later receipts go on being committed after the failure
        after = await pipeline.submit("d")
        await pipeline.stop()
        return results, after, pipeline.batches

    results, after, batches = asyncio.run(run())
    assert results[0] == "ok:a" and results[1] == "ok:b" and results[3] == "ok:c"
    assert isinstance(results[2], ValueError)
    assert after == "ok:d"
    # the four arrived together: one batch tried, then retried one by one
    assert committed[:3] == [["a"], ["b"], ["c"]] and batches == 2


def test_a_receipt_is_answered_only_after_its_batch_is_committed():
    order: list[str] = []
    async def run():
        gate = asyncio.Event()

        committing = asyncio.Event()

        async def commit_batch(batch):
            committing.set()
            await gate.wait()
            order.append("committed")
            return ["ok"] * len(batch)

        pipeline = Pipeline(commit_batch)
        pipeline.start()
        waiting = asyncio.create_task(pipeline.submit("x"))
        await asyncio.wait_for(committing.wait(), timeout=10)
        assert not waiting.done()  # its batch is being committed: no answer yet
        gate.set()
        order.append(await waiting)
        await pipeline.stop()

    asyncio.run(run())
    assert order == ["committed", "ok"]


def test_stopping_lets_the_batch_under_way_commit_and_answers_its_callers():
    async def run():
        gate, committing = asyncio.Event(), asyncio.Event()

        async def commit_batch(batch):
            committing.set()
            await gate.wait()
            return [f"ok:{change}" for change in batch]

        pipeline = Pipeline(commit_batch)
        pipeline.start()
        waiting = [asyncio.create_task(pipeline.submit(w)) for w in "ab"]
        await asyncio.wait_for(committing.wait(), timeout=10)
        stopping = asyncio.create_task(pipeline.stop(drain_timeout=60))
        while not pipeline.stopped:  # stop() has begun: new changes are refused, the batch goes on
            await asyncio.sleep(0)
        try:
            await pipeline.submit("late")
        except RuntimeError as exc:
            late = exc
        gate.set()
        await asyncio.wait_for(stopping, timeout=60)
        return [w.result() for w in waiting], late

    results, late = asyncio.run(run())
    assert results == ["ok:a", "ok:b"]
    assert "not running" in str(late)


def test_a_pipeline_that_cannot_drain_answers_every_waiting_receipt_and_refuses_new_ones():
    async def run():
        gate = asyncio.Event()

        committing = asyncio.Event()

        async def commit_batch(batch):
            committing.set()
            await gate.wait()  # never set: the pipeline is stopped mid-commit
            return ["ok"] * len(batch)

        pipeline = Pipeline(commit_batch)
        pipeline.start()
        waiting = [asyncio.create_task(pipeline.submit(w)) for w in "abc"]
        await asyncio.wait_for(committing.wait(), timeout=10)
        await pipeline.stop(drain_timeout=0.05)  # gives up waiting for a commit that never ends
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=2)
        try:
            await pipeline.submit("late")
        except RuntimeError as exc:
            late = exc
        return results, late

    results, late = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "not running" in str(late)


def test_the_pipeline_says_when_changes_pour_in_and_when_the_rush_is_over():
    """A full batch of changes (not the webhook worker's own) marks the pipeline pressed, for
    a while, which the webhook worker reads to leave receipts the room; then it clears."""
    from api.pipeline import PRESSED_BATCH
    from api.webhook_schedule import ClaimDeliveries

    async def run():
        gate = asyncio.Event()

        async def commit_batch(batch):
            await gate.wait()
            return ["ok"] * len(batch)

        pipeline = Pipeline(commit_batch, pressure_hold=0.2)
        pipeline.start()
        seen = []
        pipeline.listeners.append(lambda batch: seen.append((len(batch), pipeline.pressed)))
        first = asyncio.create_task(pipeline.submit("first"))
        await asyncio.sleep(0.01)  # the first batch is being committed; the rush queues behind it
        rush = [asyncio.create_task(pipeline.submit(f"r{i}")) for i in range(PRESSED_BATCH)]
        claims = [asyncio.create_task(pipeline.submit(ClaimDeliveries(1, 30))) for _ in range(PRESSED_BATCH)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *rush, *claims)
        await pipeline.submit("held")  # a lone change right after the rush: still pressed, for a while
        deadline = asyncio.get_running_loop().time() + 30
        while pipeline.pressed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await pipeline.submit("alone")
        await pipeline.stop()
        return seen

    seen = asyncio.run(run())
    assert seen[0] == (1, False) and seen[1] == (2 * PRESSED_BATCH, True)
    assert seen[2] == (1, True) and seen[-1] == (1, False)


def test_a_batch_of_the_webhook_workers_own_changes_is_no_rush():
    from api.pipeline import PRESSED_BATCH
    from api.webhook_schedule import ClaimDeliveries

    async def run():
        gate = asyncio.Event()

        async def commit_batch(batch):
            await gate.wait()
            return ["ok"] * len(batch)

        pipeline = Pipeline(commit_batch)
        pipeline.start()
        first = asyncio.create_task(pipeline.submit("first"))
        await asyncio.sleep(0.01)
        claims = [asyncio.create_task(pipeline.submit(ClaimDeliveries(1, 30))) for _ in range(2 * PRESSED_BATCH)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *claims)
        pressed = pipeline.pressed
        await pipeline.stop()
        return pressed

    assert asyncio.run(run()) is False
