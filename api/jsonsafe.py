"""JSON that every layer can carry: strict parsing, and text that stores and renders.

Python's ``json`` accepts ``NaN`` and ``Infinity`` and lone UTF-16 surrogates
(``"\\ud800"``); SQLite's JSON functions, PostgreSQL's ``jsonb`` and strict JSON
renderers refuse them, and PostgreSQL refuses NUL in text. So client input
carrying them is refused, and what a gateway sends us (replies, receipts),
which we must keep rather than refuse, is scrubbed before it is stored.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Lone surrogates and NUL: storable nowhere we store things.
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (ValueError)."""
    return json.loads(raw, parse_constant=_no_constants)


def has_unstorable_text(value: Any) -> bool:
    """True when any string (or object key) in ``value`` holds NUL or a lone surrogate."""
    if isinstance(value, str):
        return bool(UNSTORABLE.search(value))
    if isinstance(value, dict):
        return any(has_unstorable_text(k) or has_unstorable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_unstorable_text(item) for item in value)
    return False


def scrub(value: Any) -> Any:
    """``value`` made storable: bad characters replaced, nulls inside objects dropped.

    Nulls go because a JSON merge reads a null as "delete this key" (SQLite's
    ``json_patch``, RFC 7396): a stored payload without them means the same
    wherever it is merged.
    """
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:
            return value  # the usual case, found without a regex: surrogates are never ASCII
        return UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value
