"""The audit trail's hash chain: pure functions, no I/O.

Each row's ``hash`` is SHA-256 over the previous row's hash and a canonical
JSON of the row's own fields. Editing a row changes its hash; deleting one
breaks the link of the row after it. Either is found by ``verify``, which names
the first row that does not fit.

The hash is plain SHA-256 over public code, with no secret: whoever can write
the database can edit a row and recompute every later hash, and the chain is
whole again; removing the newest rows leaves a shorter chain that is whole too.
What catches both is an *anchor*, a row's id and hash noted earlier somewhere
the database's writers cannot reach (``smsgw audit verify`` prints one):
``verify`` with anchors fails when an anchored row is gone or its hash moved.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
import re
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64  # the "previous hash" of the first row
ANCHOR = re.compile(r"([1-9][0-9]*):([0-9a-f]{64})")

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
    count: int             # rows checked (up to and including the bad one; a missing anchored row counts)
    last_hash: str         # the hash of the last good row (GENESIS when none)
    bad_id: int | None = None
    problem: str | None = None
    last_id: int | None = None  # the id of the last good row: with last_hash, an anchor to note


def parse_anchor(text: str) -> tuple[int, str]:
    """``ID:HASH`` (as ``smsgw audit verify`` prints it) as (id, hash); ValueError otherwise."""
    found = ANCHOR.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"an anchor is ID:HASH, a row id and its 64 hex digit hash, not {text!r}")
    return int(found.group(1)), found.group(2)


class Checker:
    """Checks rows one at a time, oldest first, so a long trail is read in pages."""

    def __init__(self, anchors: Mapping[int, str] | None = None) -> None:
        self.expected_prev = GENESIS
        self.last_id: int | None = None
        self.count = 0
        self.anchors = dict(anchors or {})
        self.unseen = sorted(self.anchors)  # anchored ids not reached yet, lowest first

    def feed(self, row: Mapping[str, Any]) -> Verdict | None:
        """None while the chain holds; the failing Verdict at the first row that breaks it."""
        self.count += 1
        if self.unseen and self.unseen[0] < row["id"]:
            return self._missing(self.unseen[0], self.count)
        if row["prev_hash"] != self.expected_prev:
            return self._bad(row, "its prev_hash does not match the row before it "
                                  "(a row before it was removed, edited or reordered)")
        if link(row["prev_hash"], row) != row["hash"]:
            return self._bad(row, "its fields do not match its hash (the row was edited)")
        if row["id"] in self.anchors:
            self.unseen.remove(row["id"])
            if row["hash"] != self.anchors[row["id"]]:
                return self._bad(row, "its hash is not the one anchored earlier (this row or one before it "
                                      "was edited or removed, and the chain re-linked)")
        self.expected_prev, self.last_id = row["hash"], row["id"]
        return None

    def verdict(self) -> Verdict:
        if self.unseen:  # the newest rows, the anchored one among them, were removed
            return self._missing(self.unseen[0], self.count + 1)
        return Verdict(ok=True, count=self.count, last_hash=self.expected_prev, last_id=self.last_id)

    def _bad(self, row: Mapping[str, Any], problem: str) -> Verdict:
        return Verdict(ok=False, count=self.count, last_hash=self.expected_prev, bad_id=row["id"], problem=problem,
                       last_id=self.last_id)

    def _missing(self, anchor_id: int, count: int) -> Verdict:
        return Verdict(ok=False, count=count, last_hash=self.expected_prev, bad_id=anchor_id,
                       problem="this anchored row is missing (removed, and the chain re-linked or cut short)",
                       last_id=self.last_id)


def verify(rows: Iterable[Mapping[str, Any]], anchors: Mapping[int, str] | None = None) -> Verdict:
    """The chain of ``rows`` (oldest first): whole, and every anchored row (id → hash noted
    earlier) still there with that hash; or where it first breaks."""
    checker = Checker(anchors)
    for row in rows:
        bad = checker.feed(row)
        if bad is not None:
            return bad
    return checker.verdict()
