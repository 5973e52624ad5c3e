"""The contract's response shapes, and the handlers that keep every error in them.

Success: ``{"message": ..., "data": ...}``. Failure: ``{"message": ...}``, with
``"errors": {field: [...]}`` for anything a client can correct, and ``"request_id"``
(the ``X-Request-ID`` of the request, to find its lines in the log). No traceback,
stored secret or internal detail ever leaves in a body.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.logs import REQUEST_ID
from api.validation import ValidationFailed

REASONS = {
    400: "Bad request.",
    401: "Unauthorized.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    413: "Request body too large.",
    415: "Unsupported media type.",
    422: "The given data was invalid.",
}


def ok(message: str, data: Any = None, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, "data": data, **extra}, status_code=status)


class ApiError(Exception):
    """Raised anywhere in a request to answer ``status`` in the contract's shape."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message or REASONS.get(status, "Error."))
        self.status = status
        self.message = message or REASONS.get(status, "Error.")
        self.errors = errors
        self.headers = headers


def error(
    status: int,
    message: str | None = None,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message or REASONS.get(status, "Error.")}
    if errors is not None:
        body["errors"] = errors
    if (request_id := REQUEST_ID.get()) is not None:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.message, exc.errors, exc.headers)


async def on_validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationFailed)
    return error(422, exc.message, exc.errors)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, REASONS.get(exc.status_code), headers=exc.headers)


EXCEPTION_HANDLERS = {
    ApiError: on_api_error,
    ValidationFailed: on_validation_failed,
    HTTPException: on_http_exception,
}
