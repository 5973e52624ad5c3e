"""The steps a batch's transaction is made of, for both databases (``api.pipeline`` runs them).

``api.batches`` (message changes) and ``api.webhook_batches`` (webhook deliveries)
are generators that yield these and are sent each step's rows back, the way
httpx's ``Auth.auth_flow`` yields requests: the rules stay free of I/O, and one
driver per database runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

Key = tuple[int, str]


@dataclass(frozen=True)
class Lock:
    """Hold these (gateway, external id) keys until commit, in this (sorted) order: a
    receipt racing the send that names its id is either found by it or finds it."""

    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Read:
    statement: sa.Select
    params: dict[str, Any]


@dataclass(frozen=True)
class Write:
    statement: sa.Executable
    rows: list[dict[str, Any]]


Step = Lock | Read | Write
