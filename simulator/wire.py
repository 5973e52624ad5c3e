"""How the simulator checks and reads a send as Jasmin does: pure functions, no I/O.

Facts from ``../shared/reference/jasmin.md`` (Jasmin 0.11): the send APIs'
argument checks. What Jasmin's send APIs take and its thrower posts is written
once, in ``api.providers.jasmin``, for smsgw and the simulator alike.
"""

from __future__ import annotations

import re

from api.providers import jasmin

PHONE = re.compile(r"^\+?\d+$")
CODINGS = {str(n) for n in (*range(0, 11), 13, 14)}


def check_send(fields: dict, rest: bool) -> str | None:
    """Jasmin's argument validation, as the text of ``Error "..."``; None when valid."""
    allowed = jasmin.SEND_KEYS - ({"username", "password"} if rest else set())
    for key in fields:
        if key not in allowed:
            return f"Argument [{key}] is unknown."
    required = ("to", "from") if rest else ("username", "password", "to", "from")
    for key in required:
        if key not in fields:
            return f"Mandatory argument [{key}] is not found."
    if not PHONE.match(str(fields["to"])):
        return f"Argument [to] has an invalid value: [{fields['to']}]."
    if ("content" in fields) == ("hex-content" in fields):
        return "content or hex-content not present."
    if "coding" in fields and str(fields["coding"]) not in CODINGS:
        return f"Argument [coding] has an invalid value: [{fields['coding']}]."
    if "hex-content" in fields:
        try:
            bytes.fromhex(str(fields["hex-content"]))
        except ValueError:
            return f"Argument [hex-content] has an invalid value: [{fields['hex-content']}]."
    dlr_url = fields.get("dlr-url")
    if dlr_url is not None and not str(dlr_url).startswith(("http://", "https://")):
        return f"Argument [dlr-url] has an invalid value: [{dlr_url}]."
    if str(fields.get("dlr-level", 1)) not in ("1", "2", "3"):
        return f"Argument [dlr-level] has an invalid value: [{fields['dlr-level']}]."
    if str(fields.get("dlr-method", "POST")).upper() not in ("GET", "POST"):
        return f"Argument [dlr-method] has an invalid value: [{fields['dlr-method']}]."
    return None


def text_of(fields: dict) -> str:
    """The message text, from ``content`` or from ``hex-content`` (UCS-2 with coding 8)."""
    if "content" in fields:
        return str(fields["content"])
    raw = bytes.fromhex(str(fields["hex-content"]))
    codec = "utf-16-be" if str(fields.get("coding")) == "8" else "latin-1"
    return raw.decode(codec, "replace")


def wants_receipts(fields: dict) -> bool:
    """``dlr-url`` or ``dlr-level`` imply ``dlr=yes``; with no ``dlr-url`` nothing is ever thrown."""
    return bool(fields.get("dlr-url"))


def levels(fields: dict) -> list[int]:
    level = int(fields.get("dlr-level", 1))
    return {1: [1], 2: [2], 3: [1, 2]}[level]
