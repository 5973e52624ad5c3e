"""The guard's token store and its check, with a fake clock and a fake database that counts queries.

A refusal (403) must rest on what the database said after the request arrived:
"I did not look" is a retryable 503, never a 403. And a flood must stay cheap:
every token in one query per TTL, single-gateway reads capped per gateway and in all.
"""

from __future__ import annotations

import asyncio

from api import clock
from guard import decision
from guard import store as store_module
from guard.addon import Guard
from guard.store import Credentials, TokenStore

TOKEN = "a-valid-callback-token-0123456789"
BAD = "a-well-formed-but-wrong-token-000000"  # could be a token; is not this gateway's


class Row(dict):
    _mapping = property(lambda self: self)


class Database:
    """Gateways by id, as ``{"callback_token": ..., "previous_callback_tokens": [...]}``."""

    def __init__(self, gateways: dict[int, str]):
        self.gateways = {i: {"callback_token": t, "previous_callback_tokens": []} for i, t in gateways.items()}
        self.loads = self.reads = 0

    async def fetch_all(self, query):
        self.loads += 1
        return [Row(id=i, **values) for i, values in self.gateways.items()]

    async def fetch_one(self, query):
        self.reads += 1
        [wanted] = [v for k, v in query.compile().params.items() if k.startswith("id")]
        values = self.gateways.get(wanted)
        return Row(id=wanted, **values) if values is not None else None

    def rotate(self, gateway_id: int, new: str, grace: float | None) -> None:
        values = self.gateways[gateway_id]
        kept = [e for e in values["previous_callback_tokens"]] if grace else []
        if grace:
            kept.append({"token": values["callback_token"], "expires_at": clock.iso_after(grace)})
        self.gateways[gateway_id] = {"callback_token": new, "previous_callback_tokens": kept}


class World:
    def __init__(self, gateways: dict[int, str], ttl: float = 5):
        self.now = 0.0
        self.database = Database(gateways)
        self.store = TokenStore(self.database, ttl=ttl, clock=lambda: self.now)
        self.guard = Guard(self.store)

    def status(self, gateway_id: int, token: str) -> int:
        return self.statuses((gateway_id, token))[0]

    def statuses(self, *asks: tuple[int, str]) -> list[int]:
        async def go():
            return [(await self.guard.judge("POST", f"/webhooks/jasmin/{gid}/dlr?token={token}", []))[0].status
                    for gid, token in asks]
        return asyncio.run(go())

    @property
    def queries(self) -> int:
        return self.database.loads + self.database.reads


def test_tokens_are_loaded_once_per_ttl_for_everyone():
    world = World({1: TOKEN, 2: TOKEN + "-2"})
    assert world.statuses((1, TOKEN), (2, TOKEN + "-2"), (1, TOKEN)) == [200, 200, 200]
    assert (world.database.loads, world.database.reads) == (1, 0)
    world.now = 5.0
    assert world.status(1, TOKEN) == 200
    assert (world.database.loads, world.database.reads) == (2, 0)


def test_a_gateway_created_during_a_flood_of_made_up_ids_is_never_refused_with_403():
    """Finding 4: with the lookup budget spent by made-up ids, a new gateway's receipts got 403."""
    world = World({1: TOKEN})
    flood = world.statuses(*[(1000 + n, BAD) for n in range(200)])
    assert set(flood) <= {403, 503} and 503 in flood
    assert world.database.reads <= store_module.MISS_LOOKUPS_PER_SECOND  # the flood stays cheap
    world.database.gateways[2] = {"callback_token": TOKEN + "-new", "previous_callback_tokens": []}
    assert world.status(2, TOKEN + "-new") == 503  # not looked at: retry, not "forbidden"
    world.now += 1.0
    assert world.status(2, TOKEN + "-new") == 200  # the retry a second later is admitted


def test_a_503_for_an_unchecked_token_says_when_to_retry():
    world = World({1: TOKEN})
    world.statuses(*[(1000 + n, BAD) for n in range(200)])
    verdict, _ = asyncio.run(world.guard.judge("POST", f"/webhooks/jasmin/2/dlr?token={BAD}", []))
    assert verdict == decision.RETRY and verdict.status == 503 and verdict.retry_after >= 1


def test_a_rotated_token_is_admitted_at_once():
    """Finding 5: the new token was refused until the cache expired."""
    world = World({1: TOKEN})
    assert world.status(1, TOKEN) == 200
    world.database.rotate(1, TOKEN + "-rotated", grace=3600)
    assert world.status(1, TOKEN + "-rotated") == 200
    assert world.status(1, TOKEN) == 200  # the previous one, in its grace
    assert world.database.reads == 1  # one re-read, whose answer is kept
    assert world.statuses((1, TOKEN + "-rotated"), (1, TOKEN)) == [200, 200]
    assert world.database.reads == 1


def test_bad_tokens_for_a_real_gateway_do_not_become_a_query_each():
    world = World({1: TOKEN})
    second = world.statuses(*[(1, BAD)] * 500)
    assert set(second) <= {403, 503} and second[0] == 403
    reads_in_a_second = world.database.reads
    assert reads_in_a_second <= store_module.RECHECK_BURST
    world.now += 1.0
    world.statuses(*[(1, BAD)] * 500)
    assert world.database.reads - reads_in_a_second <= store_module.RECHECKS_PER_SECOND_PER_GATEWAY
    assert world.status(1, TOKEN) == 200  # the real token is never held up by the flood


def test_a_well_formed_token_is_refused_only_after_a_look_at_the_database():
    """403 always rests on a read made after the request arrived; otherwise 503."""
    world = World({1: TOKEN})
    assert world.status(1, TOKEN) == 200  # loaded before the others arrive
    answers = world.statuses(*[(1, f"{BAD}-{n}") for n in range(50)])
    assert answers.count(403) == world.database.reads  # one read behind each refusal
    assert answers.count(503) == 50 - world.database.reads


def test_a_malformed_token_is_refused_without_a_query():
    world = World({1: TOKEN})
    world.status(1, TOKEN)
    assert world.statuses(*[(1, "short"), (7, "x" * 300), (1, "bad token!" * 5)]) == [403, 403, 403]
    assert world.database.reads == 0


def test_a_reload_made_for_this_request_is_enough_to_refuse():
    world = World({1: TOKEN}, ttl=0)  # every request reloads: nothing older to re-check
    assert world.statuses(*[(1, BAD)] * 5) == [403] * 5
    assert world.database.reads == 0


def test_a_deleted_gateway_is_forgotten_when_a_re_read_finds_no_row():
    """Finding 7 (guard part): the deleted gateway's token stayed admitted until the next reload."""
    world = World({4: TOKEN})
    assert world.status(4, TOKEN) == 200
    del world.database.gateways[4]
    assert world.status(4, BAD) == 403  # re-read: no such gateway any more
    assert world.status(4, TOKEN) == 403  # forgotten at once, not at the next reload


def test_a_gateway_missing_from_a_reload_is_gone():
    world = World({4: TOKEN, 5: TOKEN + "-5"})
    assert world.status(4, TOKEN) == 200
    del world.database.gateways[4]
    world.now = 5.0
    assert world.status(4, TOKEN) in (403, 503)
    assert asyncio.run(world.store.credentials(4)) is None


def test_every_previous_token_is_checked_within_its_own_grace():
    now = clock.now_iso()
    credentials = Credentials("c" * 30, (("a" * 30, clock.iso_after(60)), ("b" * 30, clock.iso_after(-1))))
    assert decision.verdict_for_token("a" * 30, credentials, now) == decision.ALLOW
    assert decision.verdict_for_token("b" * 30, credentials, now) == decision.FORBIDDEN  # its grace ended
    assert decision.verdict_for_token("c" * 30, credentials, now) == decision.ALLOW
