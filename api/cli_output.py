"""How the CLI prints what it read: tables with headers and aligned fields for people,
JSON (``--json``) for scripts. Pure functions from data to text; the commands print it."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping, Sequence

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def cell(value: Any) -> str:
    """One value as a table shows it: "-" for nothing, yes/no, lists comma-separated,
    objects as compact JSON, text on one line."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ",".join(map(str, value))
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return " ".join(str(value).split())  # a newline in a note would break the row


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows under upper-case headers, each column as wide as its widest cell."""
    body = [[cell(pick(row)) for _, pick in columns] for row in rows]
    heads = [name.upper() for name, _ in columns]
    widths = [max(len(text) for text in column) for column in zip(heads, *body)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in [heads, *body]]
    return "\n".join(lines)


def fields(record: Mapping[str, Any]) -> str:
    """One record as "name: value" lines, the names aligned."""
    width = max((len(name) for name in record), default=0)
    return "\n".join(f"{name + ':':<{width + 1}} {cell(value)}" for name, value in record.items())


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def column(name: str, key: str | None = None) -> Column:
    """A column showing ``row[key]`` (``key`` defaults to the header)."""
    key = key or name
    return name, lambda row: row[key]


def json_line(data: Any) -> str:
    """One JSON document on one line (a stream of them: ``--watch --json``)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
