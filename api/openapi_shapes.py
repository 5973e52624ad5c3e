"""A small vocabulary of JSON Schema for the shapes of response objects.

Each resource module declares the object its shaping function returns (``SHAPE``,
beside ``public``) with these; ``api.openapi`` puts the declarations in the
document, and ``tests/test_openapi.py`` checks each shaping function's output
against its own declaration, so the two cannot drift apart. Pure data, no
imports of the API: any module may use it without a cycle.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ID: Schema = {"type": "integer", "minimum": 1}
# Every time smsgw stores and shows: UTC, microseconds, Z (api.clock).
TIME: Schema = {"type": "string", "format": "date-time", "examples": ["2026-11-27T18:00:00.000000Z"]}
OBJECT: Schema = {"type": "object"}
ANY: Schema = {}  # any JSON value: what a gateway or a webhook receiver answered, as it was


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    kind = schema.get("type")
    if kind is None:
        return dict(schema)
    types = kind if isinstance(kind, list) else [kind]
    widened = {**schema, "type": [*types, "null"] if "null" not in types else types}
    if "enum" in widened and None not in widened["enum"]:
        widened["enum"] = [*widened["enum"], None]
    return widened


def enum(values: Iterable[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def described(schema: Schema, text: str) -> Schema:
    return {**schema, "description": text}


def shape(properties: Mapping[str, Schema], optional: Iterable[str] = ()) -> Schema:
    """An object with exactly these properties, each always present except those in ``optional``."""
    left_out = set(optional)
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name in properties if name not in left_out],
        "additionalProperties": False,
    }


def extended(base: Schema, properties: Mapping[str, Schema]) -> Schema:
    """``base`` (a ``shape``) with more properties, each always present."""
    return {**base, "properties": {**base["properties"], **properties},
            "required": [*base["required"], *properties]}
