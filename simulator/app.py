"""The Jasmin simulator: Jasmin's REST send API as ``../shared/reference/jasmin.md`` describes it.

``POST /secure/send`` with Basic Auth and a JSON body answers exactly as Jasmin
0.11 does: ``200 {"data": "Success \\"<uuid>"}`` (no closing quote), or an
error status with ``{"message": "Error \\"<text>\\""}``. ``GET /_simulator/messages``
lists what it accepted, newest first, so a demo can see the gateway's side.

Partial: it does not yet throw receipts back to ``dlr-url``, nor speak Jasmin's
HTTP API (``/send``); both come with the Jasmin interop work.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import uuid
from collections import deque
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.callback_tokens import redact_url

# The keys Jasmin's send API knows (underscores arrive as dashes).
KNOWN_KEYS = {
    "to", "from", "coding", "content", "hex-content", "priority", "sdt", "validity-period",
    "dlr", "dlr-url", "dlr-level", "dlr-method", "tags", "custom_tlvs",
}
PHONE = re.compile(r"^\+?\d+$")
KEEP = 1000  # accepted messages remembered for /_simulator/messages


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def jasmin_error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"message": f'Error "{text}"'}, status_code=status)


def basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def check_send(body: dict) -> str | None:
    """Jasmin's argument validation, as text for ``Error "..."``; None when the send is valid."""
    for key in body:
        if key not in KNOWN_KEYS:
            return f"Argument [{key}] is unknown."
    for key in ("to", "from"):
        if key not in body:
            return f"Mandatory argument [{key}] is not found."
    if not PHONE.match(str(body["to"])):
        return f"Argument [to] has an invalid value: [{body['to']}]."
    if ("content" in body) == ("hex-content" in body):
        return "content or hex-content not present."
    dlr_url = body.get("dlr-url")
    if dlr_url is not None and not str(dlr_url).startswith(("http://", "https://")):
        return f"Argument [dlr-url] has an invalid value: [{dlr_url}]."
    if str(body.get("dlr-level", 1)) not in ("1", "2", "3"):
        return f"Argument [dlr-level] has an invalid value: [{body['dlr-level']}]."
    return None


def create_app(credentials: Credentials) -> Starlette:
    accepted: deque[dict] = deque(maxlen=KEEP)

    async def rest_send(request: Request) -> JSONResponse:
        given = basic_auth(request.headers.get("authorization"))
        if given is None:
            return JSONResponse({"message": "Authentication required"}, status_code=401)
        user_ok = hmac.compare_digest(given[0].encode(), credentials.username.encode())
        password_ok = hmac.compare_digest(given[1].encode(), credentials.password.encode())
        if not (user_ok and password_ok):
            return jasmin_error(403, f"Authentication failure for username:{given[0]}")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return jasmin_error(400, "Cannot parse request body.")
        if not isinstance(body, dict):
            return jasmin_error(400, "Cannot parse request body.")
        body = {key.replace("_", "-") if key != "custom_tlvs" else key: value for key, value in body.items()}
        problem = check_send(body)
        if problem:
            return jasmin_error(400, problem)
        message_id = str(uuid.uuid4())
        accepted.appendleft({
            "id": message_id,
            "to": body["to"],
            "from": body["from"],
            "content": body.get("content"),
            "dlr-url": redact_url(str(body["dlr-url"])) if body.get("dlr-url") else None,
            "dlr-level": body.get("dlr-level"),
        })
        # Jasmin strips only the trailing quote: the id is left unclosed.
        return JSONResponse({"data": f'Success "{message_id}'})

    async def list_accepted(request: Request) -> JSONResponse:
        return JSONResponse({"data": list(accepted)})

    return Starlette(routes=[
        Route("/secure/send", rest_send, methods=["POST"]),
        Route("/_simulator/messages", list_accepted, methods=["GET"]),
    ])
