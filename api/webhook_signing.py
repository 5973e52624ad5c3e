"""Standard Webhooks signatures (standardwebhooks.com): what smsgw signs its status
webhooks with, and what a receiver (``smsgw webhook-receiver``, the tests) checks them with.

Pure: no I/O besides the random bytes of a new secret. A secret is ``whsec_`` + standard
base64 of the key bytes; a signature is ``v1,`` + base64(HMAC-SHA256(key,
"{webhook-id}.{webhook-timestamp}.{body}")). Several secrets sign one request side by side
(space-separated in ``webhook-signature``): that is how a secret is rotated without a gap,
since a receiver holding either secret finds a signature it can check.

Error messages never quote a secret or a signature, so they can be logged and answered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
KEY_BYTES = 32          # what new_secret() makes
MIN_KEY_BYTES = 24      # the spec's range for a key: 24 to 64 bytes
MAX_KEY_BYTES = 64
VERSION = "v1"
TOLERANCE = 300         # seconds a timestamp may be away from the receiver's clock (the spec's 5 minutes)
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class BadSignature(ValueError):
    """A request that does not verify; the message names the problem (and no secret)."""


def new_secret() -> str:
    """A new endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(os.urandom(KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key ``secret`` carries: its base64 after the prefix, decoded.

    Padding is optional (some senders strip it). ValueError when it is not a secret of this
    form, saying what is wrong, never what the value is."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise ValueError(f"a webhook secret starts with {PREFIX!r}")
    text = secret[len(PREFIX):].strip()
    if not BASE64.fullmatch(text):
        raise ValueError(f"a webhook secret is {PREFIX!r} followed by standard base64")
    try:
        key = base64.b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {PREFIX!r} followed by standard base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret's key holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, "
                         f"this one {len(key)}")
    return key


def _digest(key: bytes, webhook_id: str, timestamp: int | str, body: bytes) -> bytes:
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def signature(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space-separated, in
    the order given (the current secret first, then a previous one during a rotation's grace)."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    return " ".join(
        f"{VERSION},{base64.b64encode(_digest(secret_key(s), webhook_id, int(timestamp), body)).decode()}"
        for s in secrets
    )


def headers(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a signed delivery carries."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a header; other versions and malformed entries are
    skipped (a later version may sit beside v1, and one bad entry must not hide a good one)."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != VERSION or not BASE64.fullmatch(encoded):
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = TOLERANCE) -> None:
    """Accept a request if any of its v1 signatures is that of any of ``secrets`` and its
    timestamp is within ``tolerance`` seconds of ``now``; raise BadSignature otherwise.

    Header names are matched case-insensitively. Every comparison is constant-time and every
    pair is compared (no early exit on the first match), so timing tells nothing about which
    signature or secret came close."""
    if not secrets:
        raise BadSignature("no secret to verify with")
    keys = [secret_key(s) for s in secrets]
    lowered = {str(name).lower(): value for name, value in headers.items()}
    missing = [n for n in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(n)]
    if missing:
        raise BadSignature(f"missing header {', '.join(missing)}")
    webhook_id, header = lowered["webhook-id"], lowered["webhook-signature"]
    stamp = lowered["webhook-timestamp"].strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise BadSignature("webhook-timestamp is not whole Unix seconds")
    timestamp = int(stamp)
    if timestamp < now - tolerance:
        raise BadSignature(f"timestamp too old ({now - timestamp:.0f} s, more than {tolerance:g} s ago)")
    if timestamp > now + tolerance:
        raise BadSignature(f"timestamp too new ({timestamp - now:.0f} s ahead, more than {tolerance:g} s)")
    given = _signatures(header)
    if not given:
        raise BadSignature(f"no {VERSION} signature in webhook-signature")
    matched = False
    for key in keys:
        expected = _digest(key, webhook_id, timestamp, body)
        for candidate in given:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadSignature("no matching signature")
