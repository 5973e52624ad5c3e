"""The outermost layer of the API: one log line per request, and no 500 that leaks.

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

log = logging.getLogger("smsgw.access")
errors = logging.getLogger("smsgw.api")

INTERNAL_ERROR = json.dumps({"message": "Internal server error."}).encode()


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
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
                await send({
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(INTERNAL_ERROR)).encode())],
                })
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %d %.1fms',
                client[0], scope["method"], scope["path"], status,
                (time.perf_counter() - started) * 1000,
            )
