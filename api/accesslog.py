"""The outermost layer of the API: the request id, one log line per request, and no 500 that leaks.

Each request gets an id: the ``X-Request-ID`` it came with (nginx sets one, the guard
passes it on) when well-formed, a new one otherwise. It is in ``api.logs.REQUEST_ID``
while the request runs, so every line the request causes carries it; the response
carries it back in ``X-Request-ID``, and error bodies in ``request_id``.

uvicorn's own access log prints the request line with its query string, and a
DLR URL carries the gateway's callback token there; so smsgw turns that log off
and writes its own: method, path without the query, status, milliseconds.
An exception nothing else handled becomes the contract's 500 body here, and is
logged by type and stack only: its text may hold a request's data.
"""

from __future__ import annotations

import json
import logging
import time
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import logs

log = logging.getLogger("smsgw.access")
errors = logging.getLogger("smsgw.api")

HEADER = logs.HEADER.lower().encode()


def internal_error(request_id: str) -> bytes:
    return json.dumps({"message": "Internal server error.", "request_id": request_id}).encode()


def header_value(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        request_id = logs.request_id_from(header_value(scope, HEADER))
        token = logs.REQUEST_ID.set(request_id)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            errors.error(
                "unhandled %s in %s %s\n%s",
                type(exc).__name__,
                scope["method"],
                scope["path"],
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            if status == 0:
                status = 500
                body = internal_error(request_id)
                await send({
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (HEADER, request_id.encode())],
                })
                await send({"type": "http.response.body", "body": body})
        finally:
            client = scope.get("client") or ("-", 0)
            elapsed = (time.perf_counter() - started) * 1000
            path = logs.printable(scope["path"])
            log.info(
                '%s "%s %s" %d %.1fms',
                client[0], scope["method"], path, status, elapsed,
                extra={"client": client[0], "method": scope["method"], "path": path,
                       "status": status, "duration_ms": round(elapsed, 1)},
            )
            logs.REQUEST_ID.reset(token)
