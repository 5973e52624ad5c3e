"""The Jasmin simulator: both of Jasmin's send APIs, and its DLR thrower.

- ``POST /secure/send`` — the REST API: Basic Auth, JSON, ``{"data": "Success \\"<id>"}``.
- ``GET|POST /send`` — the HTTP API: credentials as fields, ``Success "<id>"`` in text/plain.
- Receipts go back to ``dlr-url`` as Jasmin throws them: level 1 (``ESME_ROK``)
  then level 2 (the final status), per ``dlr-level``, as a form POST or a GET per
  ``dlr-method``, with Jasmin's headers; a receipt whose answer is not exactly
  ``ACK/Jasmin`` is thrown again, up to ``max_retries`` more times.
- ``POST /http/send`` — a generic JSON gateway, for smsgw's ``http`` provider type:
  Basic Auth, ``{"to", "from", "content", "dlr-url"}`` in, ``{"message_id": ...}``
  out, and one JSON receipt ``{"message_id", "status"}`` thrown back (no ACK needed).
- ``GET/POST /_simulator/config`` — the knobs: ``final_status``, ``delay`` (seconds
  before the level-2 receipt), ``duplicates`` (extra copies of each receipt),
  ``out_of_order`` (level 2 first), ``error`` (``{"status": 412, "text": "No route
  found"}``: every send answers that), ``retry_delay``, ``max_retries``, ``throw``
  (false: no receipts at all), and a real gateway's limits:
  - ``throughput`` (sends/s, or null): paced as Jasmin paces a user's
    ``http_throughput`` (at least 1/throughput s between two accepted sends, no
    burst; see ``limits.Pace``), on all three send routes together. Refused as
    Jasmin does, 403 ``Error "User throughput exceeded"``; on ``/http/send`` 429
    ``{"error": "too many requests"}`` with ``Retry-After``.
  - ``script``: answers each taken by the next send (any route), then sends are
    normal again: ``{"status": 503, "text": "...", "retry_after": 2}`` answers that
    (nothing accepted), ``{"delay": 5}`` answers normally 5 s later (accepted even if
    the caller gave up: the ambiguous case), ``{"drop": true}`` reads the request
    and closes the connection unanswered (nothing accepted).
- ``GET /_simulator/messages`` and ``/_simulator/receipts`` — what it accepted and threw
  (the last 1000 of each).
- ``GET /_simulator/stats`` — every accepted send counted, refusals by reason, accepted
  sends per unix second (the last 600 s at least); ``POST /_simulator/stats/reset``.

Refusing TCP connections for a while is not here: ``smsgw simulator`` runs
``uvicorn.run``, which keeps the listening socket to itself. Tests point at a
port where nothing listens instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields as dataclass_fields
from datetime import datetime, timezone
from http import HTTPStatus

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from api.callback_tokens import redact_url
from api.providers import jasmin
from simulator import limits, wire

log = logging.getLogger("smsgw.simulator")
KEEP = 1000  # accepted messages and thrown receipts remembered for the listings


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass
class Knobs:
    final_status: str = "DELIVRD"
    delay: float = 1.0
    duplicates: int = 0
    out_of_order: bool = False
    error: dict | None = None
    retry_delay: float = 30.0
    max_retries: int = 3
    throw: bool = True  # False: accept sends, throw no receipts (benchmarks of sending alone)
    throughput: float | None = None
    script: list = field(default_factory=list)

    def update(self, changes: dict) -> str | None:
        """Apply ``changes``; return what is wrong with them instead, changing nothing."""
        known = {f.name for f in dataclass_fields(self)}
        for key, value in changes.items():
            if key not in known:
                return f"unknown knob {key!r}"
        candidate = Knobs(**{**asdict(self), **changes})
        if candidate.final_status not in jasmin.FINAL_STATUSES:
            return f"final_status must be one of {', '.join(jasmin.FINAL_STATUSES)}"
        if candidate.error is not None and not (
            isinstance(candidate.error, dict) and isinstance(candidate.error.get("status"), int)
            and isinstance(candidate.error.get("text"), str)
        ):
            return 'error must be null or {"status": <int>, "text": <str>}'
        for name in ("delay", "retry_delay"):
            if not isinstance(getattr(candidate, name), (int, float)) or getattr(candidate, name) < 0:
                return f"{name} must be a number of seconds"
        if not isinstance(candidate.throw, bool) or not isinstance(candidate.out_of_order, bool):
            return "throw and out_of_order must be true or false"
        for name in ("duplicates", "max_retries"):
            if not isinstance(getattr(candidate, name), int) or not 0 <= getattr(candidate, name) <= 10:
                return f"{name} must be a whole number from 0 to 10"
        problem = limits.check_throughput(candidate.throughput) or limits.check_script(candidate.script)
        if problem:
            return problem
        self.__dict__.update(asdict(candidate))
        return None


def basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def droppable(app: Starlette):
    """Let a handler close its request's connection unanswered (a scripted ``drop``).

    ASGI has no message for that, and uvicorn answers 500 to an app that raises or
    returns without answering. uvicorn's ``send`` is a method of its request cycle,
    which holds the connection's transport: it is handed on in the scope here, before
    Starlette's middleware wraps ``send``.
    """
    async def app_with_transport(scope, receive, send) -> None:
        if scope["type"] == "http":
            scope["simulator.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        await app(scope, receive, send)

    return app_with_transport


def create_app(credentials: Credentials, knobs: Knobs | None = None):
    knobs = knobs or Knobs()
    accepted: deque[dict] = deque(maxlen=KEEP)
    thrown: deque[dict] = deque(maxlen=KEEP)
    tasks: set[asyncio.Task] = set()
    state: dict = {}
    pace = limits.Pace()
    stats = limits.Stats()

    def authenticated(username: str, password: str) -> bool:
        user_ok = hmac.compare_digest(username.encode(), credentials.username.encode())
        password_ok = hmac.compare_digest(password.encode(), credentials.password.encode())
        return user_ok and password_ok

    def accept(fields: dict, generic: bool = False) -> str:
        message_id = str(uuid.uuid4())
        submitted = datetime.now(timezone.utc)
        text = wire.text_of(fields)
        accepted.appendleft({
            "id": message_id, "to": fields["to"], "from": fields["from"], "content": text,
            "coding": fields.get("coding"),
            "dlr-url": redact_url(str(fields["dlr-url"])) if fields.get("dlr-url") else None,
            "dlr-level": fields.get("dlr-level"), "dlr-method": fields.get("dlr-method"),
            "validity-period": fields.get("validity-period"),
        })
        stats.count_accepted(time.time())
        if knobs.throw and wire.wants_receipts(fields):
            thrower = throw_generic(fields, message_id) if generic else throw_all(fields, message_id, text, submitted)
            task = asyncio.get_running_loop().create_task(thrower)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return message_id

    async def throw_all(fields: dict, message_id: str, text: str, submitted: datetime) -> None:
        levels = wire.levels(fields)
        if knobs.out_of_order:
            levels = list(reversed(levels))
        smsc_id = uuid.uuid4().hex[:10].upper()
        for index, level in enumerate(levels):
            if level == 2 or (knobs.out_of_order and index == 0):
                await asyncio.sleep(knobs.delay)
            if level == 1:
                body = jasmin.level1_receipt(message_id, "smsc-sim")
            else:
                body = jasmin.level2_receipt(message_id, knobs.final_status, smsc_id, text,
                                             submitted, datetime.now(timezone.utc))
            for _ in range(1 + knobs.duplicates):
                await throw(str(fields["dlr-url"]), str(fields.get("dlr-method", "POST")).upper(), body)

    async def throw_generic(fields: dict, message_id: str) -> None:
        await asyncio.sleep(knobs.delay)
        status = "delivered" if knobs.final_status == "DELIVRD" else "failed"
        body = {"message_id": message_id, "status": status, "reported_status": knobs.final_status}
        for _ in range(1 + knobs.duplicates):
            try:
                response = await state["http"].post(str(fields["dlr-url"]), json=body)
                answer, acked = f"{response.status_code}", response.status_code < 300
            except httpx.HTTPError as exc:
                answer, acked = type(exc).__name__, False
            thrown.appendleft({"id": message_id, "level": "-", "message_status": status, "method": "POST",
                               "attempt": 1, "answer": answer, "acked": acked})

    async def throw(url: str, method: str, body: dict) -> None:
        for attempt in range(1 + knobs.max_retries):
            answer = None
            try:
                if method == "GET":
                    response = await state["http"].get(url, params=body, headers=jasmin.THROWER_HEADERS)
                else:
                    response = await state["http"].post(url, data=body, headers=jasmin.THROWER_HEADERS)
                answer = f"{response.status_code} {response.text.strip()[:80]}"
                acked = response.status_code < 400 and response.text.strip() == jasmin.ACK
            except httpx.HTTPError as exc:
                answer, acked = type(exc).__name__, False
            thrown.appendleft({"id": body["id"], "level": body["level"], "message_status": body["message_status"],
                               "method": method, "attempt": attempt + 1, "answer": answer, "acked": acked})
            if acked:
                return
            if attempt < knobs.max_retries:
                await asyncio.sleep(knobs.retry_delay)
        log.warning("receipt %s level %s dropped after %d attempts", body["id"], body["level"],
                    1 + knobs.max_retries)

    def refused(reason: str, response: Response) -> Response:
        stats.count_refused(reason)
        return response

    def error_reply(rest: bool, status: int, text: str, reason: str = "invalid") -> Response:
        if rest:
            return refused(reason, JSONResponse({"message": f'Error "{text}"'}, status_code=status))
        return refused(reason, PlainTextResponse(f'Error "{text}"', status_code=status))

    def send_reply(rest: bool, fields: dict) -> Response:
        if knobs.error:  # before the throughput check, as Jasmin routes before it paces
            return error_reply(rest, knobs.error["status"], knobs.error["text"], "error")
        problem = wire.check_send(fields, rest=rest)
        if problem:
            return error_reply(rest, 400, problem)
        if pace.admit(knobs.throughput, time.monotonic()):
            return error_reply(rest, 403, "User throughput exceeded", "throughput")
        message_id = accept(fields)
        if rest:  # Jasmin strips only the trailing quote: the id is left unclosed
            return JSONResponse({"data": f'Success "{message_id}'})
        return PlainTextResponse(f'Success "{message_id}"')

    async def rest_send(request: Request) -> Response:
        given = basic_auth(request.headers.get("authorization"))
        if given is None:
            return refused("invalid", JSONResponse({"message": "Authentication required"}, status_code=401))
        if not authenticated(*given):
            return error_reply(True, 403, f"Authentication failure for username:{given[0]}")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error_reply(True, 400, "Cannot parse request body.")
        if not isinstance(body, dict):
            return error_reply(True, 400, "Cannot parse request body.")
        fields = {key if key == "custom_tlvs" else key.replace("_", "-"): value for key, value in body.items()}
        return send_reply(True, fields)

    async def http_send(request: Request) -> Response:
        fields: dict = dict(request.query_params)
        if request.method == "POST":
            if request.headers.get("content-type") == "application/json":  # exactly, as Jasmin checks
                try:
                    body = json.loads(await request.body())
                except ValueError:
                    return error_reply(False, 400, "Cannot parse request body.")
                fields.update(body if isinstance(body, dict) else {})
            else:
                fields.update(dict(await request.form()))
        if "username" in fields and "password" in fields and not authenticated(
                str(fields["username"]), str(fields["password"])):
            return error_reply(False, 403, f"Authentication failure for username:{fields['username']}")
        return send_reply(False, fields)

    def generic_error(status: int, text: str, reason: str = "invalid", headers: dict | None = None) -> Response:
        return refused(reason, JSONResponse({"error": text}, status_code=status, headers=headers))

    async def generic_send(request: Request) -> Response:
        given = basic_auth(request.headers.get("authorization"))
        if given is None or not authenticated(*given):
            return generic_error(401, "unauthorized")
        if knobs.error:
            return generic_error(knobs.error["status"], knobs.error["text"], "error")
        try:
            fields = json.loads(await request.body())
        except ValueError:
            return generic_error(400, "body must be JSON")
        if not isinstance(fields, dict) or not all(isinstance(fields.get(k), str) for k in ("to", "from", "content")):
            return generic_error(422, "to, from and content are required strings")
        wait = pace.admit(knobs.throughput, time.monotonic())
        if wait:
            return generic_error(429, "too many requests", "throughput", {"Retry-After": limits.retry_after(wait)})
        return JSONResponse({"message_id": accept(fields, generic=True), "status": "accepted"}, status_code=201)

    def scripted(send, style: str):
        """``send`` preceded by the next scripted answer, if any (``style``: rest, http or generic)."""
        async def endpoint(request: Request) -> Response:
            if not knobs.script:
                return await send(request)
            item = knobs.script.pop(0)
            await request.body()  # read the whole request first, as a gateway would
            if "delay" in item:
                await asyncio.sleep(item["delay"])
                return await send(request)
            if item.get("drop"):
                return await drop(request)
            text = item.get("text") or HTTPStatus(item["status"]).phrase
            headers = {"Retry-After": str(item["retry_after"])} if "retry_after" in item else None
            if style == "generic":
                return generic_error(item["status"], text, "scripted", headers)
            response = error_reply(style == "rest", item["status"], text, "scripted")
            response.headers.update(headers or {})
            return response
        return endpoint

    async def drop(request: Request) -> Response:
        transport = request.scope.get("simulator.transport")
        if transport is None:
            raise RuntimeError("a scripted drop needs uvicorn's transport (see droppable)")
        stats.count_refused("dropped")
        transport.close()
        while (await request.receive())["type"] != "http.disconnect":
            pass  # once uvicorn has seen the connection gone, it sends nothing more
        return Response(status_code=204)  # never sent

    async def config(request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"message": "send a JSON object of knobs"}, status_code=400)
            problem = knobs.update(changes) if isinstance(changes, dict) else "send a JSON object of knobs"
            if problem:
                return JSONResponse({"message": problem}, status_code=422)
        return JSONResponse({"data": asdict(knobs)})

    async def list_accepted(request: Request) -> JSONResponse:
        return JSONResponse({"data": list(accepted)})

    async def list_thrown(request: Request) -> JSONResponse:
        return JSONResponse({"data": list(thrown)})

    async def show_stats(request: Request) -> JSONResponse:
        return JSONResponse(stats.as_json())

    async def reset_stats(request: Request) -> JSONResponse:
        stats.reset()
        return JSONResponse(stats.as_json())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async with httpx.AsyncClient(timeout=10) as http:
            state["http"] = http
            yield
            for task in list(tasks):
                task.cancel()

    return droppable(Starlette(routes=[
        Route("/secure/send", scripted(rest_send, "rest"), methods=["POST"]),
        Route("/send", scripted(http_send, "http"), methods=["GET", "POST"]),
        Route("/http/send", scripted(generic_send, "generic"), methods=["POST"]),
        Route("/_simulator/config", config, methods=["GET", "POST"]),
        Route("/_simulator/messages", list_accepted, methods=["GET"]),
        Route("/_simulator/receipts", list_thrown, methods=["GET"]),
        Route("/_simulator/stats", show_stats, methods=["GET"]),
        Route("/_simulator/stats/reset", reset_stats, methods=["POST"]),
    ], lifespan=lifespan))
