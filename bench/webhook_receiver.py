"""The bench's webhook receiver: 204 to any POST, counting them; a GET answers the count.

A bare ASGI app under uvicorn (httptools, uvloop), so that it costs as little CPU
as possible: in the ``webhook`` and ``dlr_api_webhook`` rows wrk, the API and this
receiver share two cores, and the rows measure the API, not the receiver. It does
not verify signatures (``smsgw webhook-receiver`` does, and the tests use it): the
bench checks only that every delivery arrived. The count lives in the one process.
"""

from __future__ import annotations

received = 0

NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}
EMPTY = {"type": "http.response.body", "body": b""}


async def app(scope, receive, send):
    global received
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):  # the body is read, and dropped
            pass
        received += 1
        await send(NO_CONTENT)
        await send(EMPTY)
        return
    body = b'{"received": %d}' % received
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
