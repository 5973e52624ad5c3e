"""The guard as a mitmproxy addon: named hooks over ``guard.decision``.

It fails closed. mitmproxy logs an exception raised in a hook and forwards the
request anyway, so every hook here catches everything itself and answers 503;
and ``request`` refuses any flow that ``requestheaders`` did not explicitly
admit. Nothing reaches the API unless this addon said so.

Each request has an id (``api.logs``): the ``X-Request-ID`` it came with when well-formed
(from anyone: it is only an id, and its form is checked), a new one otherwise. It is
forwarded to the API, sent back on every answer (refusals too) in ``X-Request-ID``, and
on every line the guard logs about the request. A refusal's body stays the same for
every request: it tells nothing but the refusal.
"""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from api import clock, logs
from api.peer import client_address_from
from guard import decision, metrics
from guard.decision import Verdict
from guard.store import TokenStore

log = logging.getLogger("smsgw.guard")

ADMITTED = "smsgw_guard_admitted"
REQUEST_ID = "smsgw_request_id"  # the flow's id, in flow.metadata
HEALTH_PATH = "/_guard/health"
READY_PATH = "/_guard/ready"  # health, and every gateway's tokens loaded: receipts can be judged
CHECK_PATH = "/_guard/check"  # nginx's auth_request asks here


def reply(flow: http.HTTPFlow, status: int, body: dict | None = None, retry_after: int | None = None,
          close: bool = False) -> None:
    request_id = flow.metadata.get(REQUEST_ID)
    content = json.dumps(body).encode() if body is not None else b""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if request_id is not None:
        headers[logs.HEADER] = request_id
    if retry_after is not None:  # "not checked, try again": a gateway's retry, not a refusal
        headers["Retry-After"] = str(retry_after)
    if close:  # mitmproxy ends the connection once this answer is sent
        headers["Connection"] = "close"
    flow.response = http.Response.make(status, content, headers)


# Headers through which a client could speak for the guard: dropped, and
# X-Forwarded-For set to the address the guard itself saw.
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-IP")


def frame_exactly(request: http.Request) -> None:
    """Send the buffered body with an exact Content-Length and nothing else framing it.

    An HTTP/2 request may come without content-length; forwarded as HTTP/1.1
    with neither Content-Length nor Transfer-Encoding, the API would read its
    body as a second request (smuggling). The body is whole by now
    (``stream_large_bodies`` is off), so its length is known, whatever the
    client's protocol. Trailers would need chunked encoding: dropped.
    """
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(request.raw_content or b""))
    request.trailers = None


def forward_from(request: http.Request, address: str) -> None:
    """The API learns the client's address from the guard alone: X-Forwarded-For
    is replaced (never appended to) and the other forwarding headers dropped."""
    for name in FORWARDING_HEADERS:
        request.headers.pop(name, None)
    request.headers["X-Forwarded-For"] = address


def refuse(flow: http.HTTPFlow, verdict: Verdict) -> None:
    metrics.decided(verdict)
    reply(flow, verdict.status, {"message": verdict.message}, verdict.retry_after, verdict.close)


class Guard:
    def __init__(self, store: TokenStore, trusted_proxies: tuple[str, ...] = ()):
        self.store = store
        self.trusted_proxies = trusted_proxies

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        request_id = logs.request_id_from(flow.request.headers.get(logs.HEADER))
        flow.metadata[REQUEST_ID] = request_id
        flow.request.headers[logs.HEADER] = request_id  # the API (or nginx, asking) sees this one only
        current = logs.REQUEST_ID.set(request_id)  # on the lines the decision makes (the store's)
        try:
            await self._decide(flow)
        except Exception as exc:  # fail closed, whatever went wrong
            log.error("guard could not decide (%s); answered 503", type(exc).__name__)
            flow.metadata.pop(ADMITTED, None)
            refuse(flow, decision.UNAVAILABLE)
        finally:
            logs.REQUEST_ID.reset(current)

    def request(self, flow: http.HTTPFlow) -> None:
        """Runs once the whole request is read, whatever the client's protocol."""
        if flow.response is not None:
            return
        # Second line: a flow not explicitly admitted never goes upstream.
        if not flow.metadata.get(ADMITTED):
            refuse(flow, decision.UNAVAILABLE)
            return
        try:
            frame_exactly(flow.request)
            forward_from(flow.request, client_address_from(
                flow.client_conn.peername[0], flow.request.headers.get_all("X-Forwarded-For"),
                self.trusted_proxies))
        except Exception as exc:  # fail closed
            log.error("guard could not frame an admitted request (%s); answered 503", type(exc).__name__,
                      extra={"request_id": flow.metadata.get(REQUEST_ID)})
            refuse(flow, decision.UNAVAILABLE)
            return
        metrics.decided(decision.ALLOW)  # counted once it goes upstream

    def response(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
        path = flow.request.path.partition("?")[0][:200]
        request_id = flow.metadata.get(REQUEST_ID)
        if request_id is not None and logs.HEADER not in flow.response.headers:
            flow.response.headers[logs.HEADER] = request_id
        log.info('%s "%s %s" %d', client, flow.request.method, path, flow.response.status_code,
                 extra={"request_id": request_id, "client": client, "method": flow.request.method, "path": path,
                        "status": flow.response.status_code})

    def error(self, flow: http.HTTPFlow) -> None:
        log.warning('"%s %s" failed: %s', flow.request.method,
                    flow.request.path.partition("?")[0][:200], flow.error.msg if flow.error else "-",
                    extra={"request_id": flow.metadata.get(REQUEST_ID)})

    async def _decide(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        raw_target = request.path
        if not decision.plain_headers(request.headers.fields):  # a folded or broken line: never forwarded
            refuse(flow, decision.MALFORMED)
            return
        if not raw_target.isascii():  # raw bytes outside ASCII: no valid request target
            refuse(flow, decision.NOT_FOUND)
            return
        if request.authority and request.http_version.startswith("HTTP/1"):
            refuse(flow, decision.NOT_FOUND)  # absolute-form target: not how gateways call
            return
        if raw_target == HEALTH_PATH and request.method == "GET":
            await self._health(flow)
            return
        if raw_target == READY_PATH and request.method == "GET":
            await self._ready(flow)
            return
        if raw_target == CHECK_PATH and request.method == "GET":
            verdict, _ = await self.judge(
                request.headers.get("X-Original-Method", ""),
                request.headers.get("X-Original-URI", ""),
                request.headers.get_all(decision.TOKEN_HEADER),
            )
            # nginx's auth_request understands 2xx, 401 and 403 (and turns 5xx into 500):
            # anything else that is a refusal is a 403 there.
            status = verdict.status if verdict.status in (200, 401, 503) else 403
            metrics.decided(verdict)
            reply(flow, status, retry_after=verdict.retry_after)
            return
        verdict, target = await self.judge(request.method, raw_target,
                                           request.headers.get_all(decision.TOKEN_HEADER))
        if not verdict.allowed:
            refuse(flow, verdict)
            return
        # Forward exactly the canonical path the decision was made on, without the token.
        request.path = target.path + (f"?{target.query}" if target.query else "")
        # A receipt is one plain request, nothing more: no token, no protocol switch
        # (h2c's HTTP2-Settings too), and Connection reduced to what it says of the end.
        for name in (decision.TOKEN_HEADER, "Upgrade", "HTTP2-Settings", "Trailer"):
            request.headers.pop(name, None)
        if "Connection" in request.headers:
            closing = any("close" in value.lower() for value in request.headers.get_all("Connection"))
            request.headers["Connection"] = "close" if closing else "keep-alive"
        flow.metadata[ADMITTED] = True

    async def judge(self, method: str, raw_target: str, header_tokens: list[str]):
        """The verdict for one DLR request, and its target when it is one."""
        target = decision.parse_target(method, raw_target)
        if target is None:
            return decision.NOT_FOUND, None
        token = decision.find_token(raw_target, header_tokens)
        # The rule first, before any look-up: asked about a token it has no credentials
        # for (UNCHECKED), it answers what the token alone decides (missing, conflicting,
        # malformed: never worth a database read) or RETRY, "look it up".
        verdict = decision.verdict_for_token(token, decision.UNCHECKED, "")
        if verdict != decision.RETRY:
            return verdict, target
        arrived = self.store.mark()
        credentials = await self.store.credentials(target.gateway_id)
        verdict = decision.verdict_for_token(token, credentials, clock.now_iso())
        if decision.worth_a_fresh_look(token, verdict):
            # The cache may predate this gateway or this token: refuse only on a read made
            # after the request arrived; with none to be had, the verdict is "retry" (503).
            credentials = await self.store.recheck(target.gateway_id, since=arrived)
            verdict = decision.verdict_for_token(token, credentials, clock.now_iso())
        return verdict, target

    async def _health(self, flow: http.HTTPFlow) -> None:
        try:
            await self.store.ping()
        except Exception:
            reply(flow, 503, {"status": "unavailable"})
            return
        reply(flow, 200, {"status": "ok"})

    async def _ready(self, flow: http.HTTPFlow) -> None:
        try:
            await self.store.load()
        except Exception as exc:
            log.warning("readiness check: the guard cannot load the callback tokens (%s)", type(exc).__name__)
            reply(flow, 503, {"status": "unavailable", "reason": "the guard cannot load the callback tokens from "
                                                                 "its database"})
            return
        reply(flow, 200, {"status": "ok"})
