"""A webhook receiver: ``smsgw webhook-receiver``, for users trying status webhooks and for tests.

It accepts a POST on any path, checks its Standard Webhooks signature against the secrets it
holds (api.webhook_signing.verify), prints one line per event, and answers 204, or 401 when the
signature does not verify. Without a secret it checks nothing and records every event as
unverified (the line says so). Under ``/_receiver/`` are the tests' controls, never verified and
never printed: the events received so far, a script of answers to give (a failing, slow or
redirecting endpoint), the secrets to verify with, and a reset.

The secrets and the ``webhook-signature`` header are never printed: the signature is an HMAC,
useless without the secret, but a printed line is copied to places a secret must not go.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import webhook_signing

KEEP = 100_000      # events remembered for GET /_receiver/events (a long benchmark must not exhaust memory)
MAX_DELAY = 600.0   # seconds a scripted answer may wait before answering
NO_SECRET = "no secret given"


@dataclass(frozen=True)
class Answer:
    """One scripted answer. ``status`` None: the receiver's own (204 verified, 401 not)."""

    status: int | None = None
    location: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    body: str | None = None


def parse_answer(value: Any) -> Answer | str:
    """An Answer from a script's JSON object, or what is wrong with it."""
    if not isinstance(value, dict):
        return "must be an object"
    unknown = set(value) - {"status", "location", "retry_after", "delay", "body"}
    if unknown:
        return f"unknown field {sorted(unknown)[0]!r}"
    status, location, retry_after = value.get("status"), value.get("location"), value.get("retry_after")
    delay, body = value.get("delay", 0), value.get("body")
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        return "status must be a whole number from 100 to 599"
    if location is not None and not isinstance(location, str):
        return "location must be a string"
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, (int, float, str))):
        return "retry_after must be a number of seconds or an HTTP date"
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY:
        return f"delay must be a number of seconds from 0 to {MAX_DELAY:g}"
    if body is not None and not isinstance(body, str):
        return "body must be a string"
    return Answer(status, location, None if retry_after is None else str(retry_after), float(delay), body)


def parse_script(value: Any) -> tuple[list[Answer], Answer | None] | dict[str, list[str]]:
    """(answers, then) from POST /_receiver/script's body, or the errors by field."""
    if not isinstance(value, dict):
        return {"body": ['must be {"answers": [...], "then": {...}}']}
    errors: dict[str, list[str]] = {}
    unknown = set(value) - {"answers", "then"}
    if unknown:
        errors["body"] = [f"unknown field {sorted(unknown)[0]!r}"]
    answers_value = value.get("answers", [])
    answers: list[Answer] = []
    if not isinstance(answers_value, list):
        errors["answers"] = ["must be a list of answers"]
    else:
        for index, item in enumerate(answers_value):
            parsed = parse_answer(item)
            if isinstance(parsed, str):
                errors.setdefault("answers", []).append(f"answer {index}: {parsed}")
            else:
                answers.append(parsed)
    then = None
    if value.get("then") is not None:
        then = parse_answer(value["then"])
        if isinstance(then, str):
            errors["then"] = [then]
    return errors or (answers, then)


def parse_secrets(value: Any) -> list[str] | dict[str, list[str]]:
    """The secrets of POST /_receiver/secrets' body, or the errors (which never quote a secret)."""
    if not isinstance(value, dict) or not isinstance(value.get("secrets"), list):
        return {"secrets": ['must be {"secrets": ["whsec_...", ...]}']}
    problems = []
    for index, secret in enumerate(value["secrets"]):
        try:
            webhook_signing.secret_key(secret)
        except ValueError as exc:
            problems.append(f"secret {index}: {exc}")
    return {"secrets": problems} if problems else list(value["secrets"])


def status_for(answer: Answer | None, verified: bool, has_secrets: bool) -> int:
    """What a request is answered: the script's status, else 204 when it verified (or there is
    nothing to verify with), else 401."""
    if answer is not None and answer.status is not None:
        return answer.status
    return 204 if verified or not has_secrets else 401


def printable(value: Any, limit: int = 120) -> str:
    """``value`` for one line of a terminal: no control characters (a body's text must not
    move the cursor or forge a second line), and not too long."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def line(event: dict) -> str:
    """``verified message.delivered message 12 seq 3 state delivered (webhook-id msg_12_3)``."""
    words = ["verified" if event["verified"] else f"UNVERIFIED ({printable(event['reason'])})"]
    body = event["body"]
    if isinstance(body, dict):
        words.append(printable(body.get("type", "?")))
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        for label, key in (("message", "id"), ("seq", "sequence"), ("state", "state")):
            if key in data:
                words.append(f"{label} {printable(data[key])}")
    else:
        words.append("(not a JSON object)")
    words.append(f"(webhook-id {printable(event['webhook_id'])})")
    if event["status"] != (204 if event["verified"] or event["reason"] == NO_SECRET else 401):
        words.append(f"answered {event['status']}")  # a scripted answer, not the receiver's own
    return " ".join(words)


def parsed_body(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class Receiver:
    """What the receiver holds between requests."""

    secrets: list[str]
    events: deque = field(default_factory=lambda: deque(maxlen=KEEP))
    script: deque = field(default_factory=deque)
    then: Answer | None = None

    def next_answer(self) -> Answer | None:
        return self.script.popleft() if self.script else self.then

    def check(self, headers: dict[str, str], body: bytes) -> tuple[bool, str | None]:
        if not self.secrets:
            return False, NO_SECRET
        try:
            webhook_signing.verify(self.secrets, headers, body, now=time.time())
        except webhook_signing.BadSignature as exc:
            return False, str(exc)
        return True, None


def unprocessable(message: str, errors: dict[str, list[str]]) -> JSONResponse:
    return JSONResponse({"message": message, "errors": errors}, status_code=422)


async def json_of(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def create_app(secrets: list[str] | tuple[str, ...] = (), json_output: bool = False,
               out: TextIO | None = None, err: TextIO | None = None, controls: bool = True) -> Starlette:
    """The receiver's app. ``json_output``: print each verified event's body as one line of
    JSON (for jq) instead of the summary line; events that fail verification then go to
    ``err`` as summary lines, so the JSON stream holds only events that can be trusted.
    ``controls``: serve ``/_receiver/`` (what it got, a script of answers, new secrets). They
    answer anyone who can reach the port, so ``smsgw webhook-receiver`` serves them only
    with ``--test-controls``: otherwise whoever could reach it could read every message it
    was told of, or replace its secrets and have forged events printed "verified"."""
    for secret in secrets:
        webhook_signing.secret_key(secret)  # ValueError now, not on every request
    state = Receiver(list(secrets))

    def show(event: dict) -> None:
        if json_output and (event["verified"] or not state.secrets):
            print(json.dumps(event["body"], ensure_ascii=False), file=out or sys.stdout, flush=True)
        elif json_output:
            print(line(event), file=err or sys.stderr, flush=True)
        else:
            print(line(event), file=out or sys.stdout, flush=True)

    async def receive(request: Request) -> Response:
        raw = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        verified, reason = state.check(headers, raw)
        answer = state.next_answer()
        status = status_for(answer, verified, bool(state.secrets))
        stamp = headers.get("webhook-timestamp")
        event = {
            "webhook_id": headers.get("webhook-id"),
            "timestamp": int(stamp) if stamp and stamp.isascii() and stamp.isdigit() else stamp,
            "verified": verified, "reason": reason, "headers": headers, "body": parsed_body(raw),
            "raw": raw.decode("utf-8", errors="replace"),
            "received_at": time.time(), "path": request.url.path, "status": status,
        }
        state.events.append(event)
        show(event)
        if answer is not None and answer.delay:
            await asyncio.sleep(answer.delay)
        extra = {}
        if answer is not None and answer.location is not None:
            extra["location"] = answer.location
        if answer is not None and answer.retry_after is not None:
            extra["retry-after"] = answer.retry_after
        if answer is not None and answer.body is not None:
            return Response(answer.body, status_code=status, headers=extra, media_type="text/plain")
        if status == 401:
            return JSONResponse({"message": reason}, status_code=401, headers=extra)
        return Response(status_code=status, headers=extra)

    async def list_events(request: Request) -> JSONResponse:
        return JSONResponse({"data": list(state.events)})

    async def set_script(request: Request) -> JSONResponse:
        parsed = parse_script(await json_of(request))
        if isinstance(parsed, dict):
            return unprocessable("The script is not valid.", parsed)
        state.script, state.then = deque(parsed[0]), parsed[1]
        return JSONResponse({"message": "Script set.", "data": {"answers": len(state.script),
                                                                 "then": state.then is not None}})

    async def set_secrets(request: Request) -> JSONResponse:
        parsed = parse_secrets(await json_of(request))
        if isinstance(parsed, dict):
            return unprocessable("The secrets are not valid.", parsed)
        state.secrets = parsed
        return JSONResponse({"message": "Secrets replaced.", "data": {"secrets": len(parsed)}})

    async def reset(request: Request) -> JSONResponse:
        state.events.clear()
        state.script.clear()
        state.then = None
        return JSONResponse({"message": "Events and script forgotten."})

    async def unknown_control(request: Request) -> JSONResponse:
        return JSONResponse({"message": "No such receiver control."}, status_code=404)

    control_routes = [
        Route("/_receiver/events", list_events, methods=["GET"]),
        Route("/_receiver/script", set_script, methods=["POST"]),
        Route("/_receiver/secrets", set_secrets, methods=["POST"]),
        Route("/_receiver/reset", reset, methods=["POST"]),
    ]
    return Starlette(routes=[
        *(control_routes if controls else []),
        Route("/_receiver/{rest:path}", unknown_control, methods=["GET", "POST"]),
        Route("/{path:path}", receive, methods=["POST"]),
    ])
