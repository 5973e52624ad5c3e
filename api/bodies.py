"""Reading request bodies: size-limited, JSON or form, with clear 4xx answers.

A body is read whole before it is parsed, and never past the size limit: a
client gets 413 instead of holding memory. The parsed body is always a
``dict``; ``from_form`` tells validation the values are text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from api import jsonsafe
from api.responses import ApiError

@dataclass(frozen=True)
class Body:
    data: dict[str, Any]
    from_form: bool


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body too large: the limit is {limit} bytes.",
                    {"body": [f"At most {limit} bytes are accepted."]})


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int, *, empty_ok: bool = False) -> Body:
    """Parse a JSON object or a form; anything else is a 4xx naming what was wrong."""
    kind = media_type(request)
    raw = await read_limited(request, limit)
    if not raw.strip():
        if empty_ok:
            return Body({}, from_form=False)
        raise ApiError(400, "The request body is empty: send a JSON object.",
                       {"body": ["A JSON object is required."]})
    if kind == "application/json" or kind.endswith("+json") or (kind == "" and raw.lstrip()[:1] == b"{"):
        return Body(parse_json_object(raw), from_form=False)
    if kind == "application/x-www-form-urlencoded":
        return Body(parse_urlencoded(raw), from_form=True)
    if kind == "multipart/form-data":
        return Body(await parse_multipart(request, raw), from_form=True)
    raise ApiError(
        415,
        "Unsupported Content-Type: send application/json or a form.",
        {"content_type": [f"{kind or 'none'} is not accepted."]},
    )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = jsonsafe.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "Malformed JSON in the request body.",
                       {"body": ["The body is not valid JSON."]}) from None
    if not isinstance(value, dict):
        raise ApiError(400, "The request body must be a JSON object.",
                       {"body": ["A JSON object is required."]})
    return value


def parse_urlencoded(raw: bytes) -> dict[str, Any]:
    try:
        # A repeated field keeps its last value, as most frameworks do.
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, "The form body is not valid UTF-8.",
                       {"body": ["The form must be UTF-8 encoded."]}) from None


async def parse_multipart(request: Request, raw: bytes) -> dict[str, Any]:
    """Multipart forms through Starlette's parser (python-multipart); files are refused."""

    request._body = raw  # what Request.body() caches; form() then reads from it
    try:
        form = await request.form(max_files=0)
    except Exception:
        raise ApiError(400, "Malformed multipart form in the request body.",
                       {"body": ["The multipart form could not be read."]}) from None
    return {key: value for key, value in form.items() if isinstance(value, str)}
