"""Jasmin's wire formats as the simulator speaks them: pure functions, no I/O.

Facts from ``../shared/reference/jasmin.md`` (Jasmin 0.11): the send APIs'
argument checks and replies, and the receipts its DLR thrower posts.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# The keys Jasmin's send API knows (the REST API turns underscores into dashes).
KNOWN_KEYS = {
    "username", "password", "to", "from", "coding", "content", "hex-content", "priority", "sdt",
    "validity-period", "dlr", "dlr-url", "dlr-level", "dlr-method", "tags", "custom_tlvs",
}
PHONE = re.compile(r"^\+?\d+$")
CODINGS = {str(n) for n in (*range(0, 11), 13, 14)}
FINAL_STATUSES = ("DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD")
USER_AGENT = "Jasmin gateway/1.0 DLRThrower"
ACK = "ACK/Jasmin"


def check_send(fields: dict, rest: bool) -> str | None:
    """Jasmin's argument validation, as the text of ``Error "..."``; None when valid."""
    allowed = KNOWN_KEYS - ({"username", "password"} if rest else set())
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


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%y%m%d%H%M")


def receipt(level: int, message_id: str, final_status: str, text: str, smsc_id: str,
            submitted: datetime, done: datetime) -> dict[str, str]:
    """The fields Jasmin's thrower sends for one receipt, in its order."""
    if level == 1:
        return {"id": message_id, "level": "1", "message_status": "ESME_ROK", "connector": "smsc-sim"}
    delivered = final_status == "DELIVRD"
    return {
        "id": message_id, "level": "2", "message_status": final_status, "connector": smsc_id.lower(),
        "id_smsc": smsc_id, "sub": "001", "dlvrd": "001" if delivered else "000",
        "subdate": stamp(submitted), "donedate": stamp(done), "err": "000" if delivered else "001",
        "text": text[:20],
    }
