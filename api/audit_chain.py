"""The audit trail's hash chain: pure functions, no I/O.

Each row's ``hash`` is SHA-256 over the previous row's hash and a canonical
JSON of the row's own fields. Editing a row changes its hash; deleting one
breaks the link of the row after it. Either is found by ``verify``, which names
the first row that does not fit. (Removing the newest rows leaves a shorter
chain that is still whole: compare the count and last hash ``smsgw audit verify``
prints with one noted earlier to notice that.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64  # the "previous hash" of the first row

# The fields a row's hash covers: everything but its database id (assigned by
# the database, so unknown until the insert) and the hashes themselves.
FIELDS = ("occurred_at", "actor_key_id", "actor", "action", "target_type", "target_id", "details",
          "source_address")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The row's hashed fields as one canonical JSON text: sorted keys, no spaces, UTF-8.

    JSONB does not keep key order, so order never matters; integers stay integers.
    """
    return json.dumps({name: row.get(name) for name in FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def link(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(row)).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    count: int             # rows checked (up to and including the bad one)
    last_hash: str         # the hash of the last good row (GENESIS when none)
    bad_id: int | None = None
    problem: str | None = None


class Checker:
    """Checks rows one at a time, oldest first, so a long trail is read in pages."""

    def __init__(self) -> None:
        self.expected_prev = GENESIS
        self.count = 0

    def feed(self, row: Mapping[str, Any]) -> Verdict | None:
        """None while the chain holds; the failing Verdict at the first row that breaks it."""
        self.count += 1
        if row["prev_hash"] != self.expected_prev:
            return self._bad(row, "its prev_hash does not match the row before it "
                                  "(a row before it was removed, edited or reordered)")
        if link(row["prev_hash"], row) != row["hash"]:
            return self._bad(row, "its fields do not match its hash (the row was edited)")
        self.expected_prev = row["hash"]
        return None

    def verdict(self) -> Verdict:
        return Verdict(ok=True, count=self.count, last_hash=self.expected_prev)

    def _bad(self, row: Mapping[str, Any], problem: str) -> Verdict:
        return Verdict(ok=False, count=self.count, last_hash=self.expected_prev, bad_id=row["id"], problem=problem)


def verify(rows: Iterable[Mapping[str, Any]]) -> Verdict:
    """The chain of ``rows`` (oldest first): whole, or where it first breaks."""
    checker = Checker()
    for row in rows:
        bad = checker.feed(row)
        if bad is not None:
            return bad
    return checker.verdict()
