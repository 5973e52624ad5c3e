"""The audit trail's hash chain and its refusal limiter, as pure code."""

from __future__ import annotations

import pytest

from api import audit_chain
from api.audit import DeniedLimiter


def chain(n: int) -> list[dict]:
    rows, prev = [], audit_chain.GENESIS
    for i in range(1, n + 1):
        row = {"id": i, "occurred_at": f"2026-11-27T12:00:0{i}.000000Z", "actor_key_id": i, "actor": f"key {i}",
               "action": "gateway.changed", "target_type": "sms_gateway", "target_id": 7,
               "details": {"fields": ["name", "notes"], "b": 1, "a": "é"}, "source_address": "127.0.0.1"}
        row.update(prev_hash=prev, hash=audit_chain.link(prev, row))
        prev = row["hash"]
        rows.append(row)
    return rows


def test_a_whole_chain_verifies_and_reports_its_length_and_head():
    rows = chain(5)
    verdict = audit_chain.verify(rows)
    assert verdict.ok and verdict.count == 5 and verdict.last_hash == rows[-1]["hash"]
    assert audit_chain.verify([]).ok and audit_chain.verify([]).last_hash == audit_chain.GENESIS


def test_key_order_in_stored_json_does_not_matter():
    row = chain(1)[0]
    reordered = {**row, "details": dict(reversed(list(row["details"].items())))}
    assert audit_chain.link(row["prev_hash"], reordered) == row["hash"]


def test_an_edited_row_is_named():
    rows = chain(5)
    rows[2] = {**rows[2], "actor": "someone else"}
    verdict = audit_chain.verify(rows)
    assert not verdict.ok and verdict.bad_id == 3 and "edited" in verdict.problem


def test_an_edited_row_with_its_hash_recomputed_breaks_the_next_link():
    rows = chain(5)
    forged = {**rows[2], "details": {"fields": ["password"]}}
    forged["hash"] = audit_chain.link(forged["prev_hash"], forged)
    rows[2] = forged
    verdict = audit_chain.verify(rows)
    assert not verdict.ok and verdict.bad_id == 4 and "prev_hash" in verdict.problem


def test_a_removed_row_is_found_at_the_row_after_it():
    rows = chain(5)
    del rows[1]
    verdict = audit_chain.verify(rows)
    assert not verdict.ok and verdict.bad_id == 3 and verdict.count == 2


def test_the_id_is_not_hashed_so_the_database_may_assign_it():
    row = chain(1)[0]
    assert audit_chain.link(audit_chain.GENESIS, {**row, "id": 99}) == row["hash"]


def test_refusals_are_written_once_a_minute_per_key_and_route_and_counted():
    now = [1000.0]
    limiter = DeniedLimiter(every=60, now=lambda: now[0])
    assert limiter.admit((1, "GET /a")) == 0
    assert [limiter.admit((1, "GET /a")) for _ in range(5)] == [None] * 5
    assert limiter.admit((1, "GET /b")) == 0   # another route
    assert limiter.admit((2, "GET /a")) == 0   # another key
    now[0] += 60
    assert limiter.admit((1, "GET /a")) == 5   # the next row says how many were left out
    assert limiter.admit((1, "GET /a")) is None


def test_a_refusal_that_cannot_be_recorded_does_not_raise(caplog):
    import asyncio
    from types import SimpleNamespace

    from starlette.datastructures import Headers

    from api import audit
    from api.auth import ADMIN

    class Down:
        def connection(self):
            raise ConnectionRefusedError("database down")

    request = SimpleNamespace(client=None, headers=Headers(), state=SimpleNamespace(api_key=ADMIN),
                              app=SimpleNamespace(state=SimpleNamespace(database=Down(), dialect="postgresql")))
    asyncio.run(audit.denied(request, "GET", "/api/unrecordable", "This key may not do this."))
    assert "could not be recorded in the audit trail (ConnectionRefusedError)" in caplog.text


def relinked(rows: list[dict]) -> list[dict]:
    """``rows`` with every hash recomputed, as anyone with write access and this code can."""
    prev, out = audit_chain.GENESIS, []
    for row in rows:
        row = {**row, "prev_hash": prev}
        row["hash"] = prev = audit_chain.link(prev, row)
        out.append(row)
    return out


def test_an_anchor_finds_a_chain_rewritten_after_an_edit():
    rows = chain(5)
    anchors = {4: rows[3]["hash"]}
    assert audit_chain.verify(rows, anchors).ok
    rows[1] = {**rows[1], "actor": "someone else"}
    forged = relinked(rows)
    assert audit_chain.verify(forged).ok  # the chain alone cannot tell
    verdict = audit_chain.verify(forged, anchors)
    assert not verdict.ok and verdict.bad_id == 4 and "anchor" in verdict.problem


def test_an_anchored_row_that_is_gone_is_named():
    rows = chain(5)
    anchors = {3: rows[2]["hash"]}
    verdict = audit_chain.verify(relinked(rows[:2] + rows[3:]), anchors)
    assert not verdict.ok and verdict.bad_id == 3 and "missing" in verdict.problem
    verdict = audit_chain.verify(rows[:2], anchors)  # the newest rows removed
    assert not verdict.ok and verdict.bad_id == 3 and "missing" in verdict.problem


def test_anchors_are_read_as_id_colon_hash():
    good = "a" * 64
    assert audit_chain.parse_anchor(f"12:{good}") == (12, good)
    for bad in ("12", f"x:{good}", "12:abc", f"0:{good}", f"12:{'g' * 64}"):
        with pytest.raises(ValueError, match="ID:HASH"):
            audit_chain.parse_anchor(bad)
