"""Secrets at rest: seal and open a value with AES-GCM under SMSGW_SECRET_KEY.

Pure: no I/O besides the random nonce. A sealed value names its scheme and the
key that sealed it, ``aesgcm:v1:<key id>:<base64url(nonce || ciphertext+tag)>``,
so a process holding several keys (the current one and ``_PREVIOUS`` ones during
a rotation) knows which to use, and a value it cannot open says which key is
missing. The key id is a short hash of the key: it identifies, it reveals
nothing useful. The authenticated data binds a sealed value to its purpose (the
column it lives in): moved into another column it no longer opens.

A stored value that is not in the sealed form is plaintext, as every password
was before encryption was configured: it is read as it is, so turning the key on
breaks nothing, and ``smsgw secrets rotate-key`` seals those rows afterwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32     # AES-256
NONCE_BYTES = 12   # 96-bit random nonce, new for every seal
TAG_BYTES = 16
PREFIX = "aesgcm:v1:"
SEALED = re.compile(r"aesgcm:v1:([0-9a-f]{8}):([A-Za-z0-9_-]+)")
KEY_HELP = "32 random bytes in base64url; `smsgw secrets generate-key` prints one"


class BadKey(ValueError):
    """A configured key cannot be used; the message names the variable, never the value."""


class SecretUnavailable(Exception):
    """A sealed value this process cannot open; the message says why, without secrets."""


def generate_key() -> str:
    """A new key as SMSGW_SECRET_KEY takes it."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def parse_key(text: str, name: str = "SMSGW_SECRET_KEY") -> bytes:
    """The 32 bytes ``text`` (base64url, padding optional) encodes, or BadKey naming ``name``."""
    text = text.strip()
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text):
            raise ValueError
        key = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (ValueError, binascii.Error):
        raise BadKey(f"{name} is not base64url: it must be {KEY_HELP}") from None
    if len(key) != KEY_BYTES:
        raise BadKey(f"{name} holds {len(key)} bytes, not {KEY_BYTES}: it must be {KEY_HELP}")
    return key


def key_id(key: bytes) -> str:
    """Eight hex digits naming ``key`` in sealed values and messages."""
    return hashlib.sha256(b"smsgw secret key id\x00" + key).hexdigest()[:8]


@dataclass(frozen=True)
class Keyring:
    """The key new values are sealed with (None: plaintext, as before), and older keys
    that are only read. Its repr shows key ids, never keys."""

    current: bytes | None = field(default=None, repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def current_id(self) -> str | None:
        return key_id(self.current) if self.current is not None else None

    def find(self, wanted: str) -> bytes | None:
        candidates = ((self.current,) if self.current is not None else ()) + self.previous
        return next((key for key in candidates if key_id(key) == wanted), None)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id}, previous={[key_id(k) for k in self.previous]})"


def keyring_from(current: str | None, previous: str | None) -> Keyring:
    """The keyring SMSGW_SECRET_KEY and SMSGW_SECRET_KEY_PREVIOUS (comma-separated) describe."""
    older = tuple(parse_key(text, "SMSGW_SECRET_KEY_PREVIOUS")
                  for text in (previous or "").split(",") if text.strip())
    if not (current or "").strip():
        if older:
            raise BadKey("SMSGW_SECRET_KEY_PREVIOUS is set without SMSGW_SECRET_KEY: "
                         "old keys are only read while a current key seals")
        return Keyring()
    return Keyring(parse_key(current), older)


def is_sealed(stored: str) -> bool:
    return SEALED.fullmatch(stored) is not None


def seal(keyring: Keyring, plaintext: str, purpose: str) -> str:
    """``plaintext`` sealed under the current key for ``purpose`` (e.g. the column)."""
    if keyring.current is None:
        raise ValueError("no SMSGW_SECRET_KEY to seal with")
    header = PREFIX + keyring.current_id + ":"
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(keyring.current).encrypt(nonce, plaintext.encode(), _aad(header, purpose))
    return header + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def at_rest(keyring: Keyring, plaintext: str, purpose: str) -> str:
    """A secret as it is stored: sealed when SMSGW_SECRET_KEY is set, as given otherwise
    (as before encryption was configured; ``smsgw secrets rotate-key`` seals it later)."""
    return seal(keyring, plaintext, purpose) if keyring.current is not None else plaintext


def unseal(keyring: Keyring, stored: str, purpose: str) -> str:
    """The plaintext of ``stored``: opened when sealed, as it is when it is plaintext.

    Raises SecretUnavailable when it was sealed with a key the keyring lacks, or
    does not open (damaged, or sealed for another purpose).
    """
    match = SEALED.fullmatch(stored)
    if match is None:
        return stored
    wanted, body = match.groups()
    key = keyring.find(wanted)
    if key is None:
        raise SecretUnavailable(f"sealed with key {wanted}, which is neither SMSGW_SECRET_KEY nor "
                                "in SMSGW_SECRET_KEY_PREVIOUS")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise InvalidTag
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                   _aad(stored[:len(PREFIX) + 9], purpose)).decode()
    except (InvalidTag, UnicodeDecodeError, binascii.Error):
        raise SecretUnavailable(f"sealed with key {wanted} but does not open with it "
                                "(altered, or copied from elsewhere)") from None


def reseal(keyring: Keyring, stored: str, purpose: str) -> str | None:
    """``stored`` sealed under the current key, or None when it already is (so a
    rotation is idempotent and touches only what changes)."""
    match = SEALED.fullmatch(stored)
    if match is not None and match.group(1) == keyring.current_id:
        unseal(keyring, stored, purpose)  # it must open, not merely carry the right id
        return None
    return seal(keyring, unseal(keyring, stored, purpose), purpose)


def _aad(header: str, purpose: str) -> bytes:
    return f"{header}{purpose}".encode()
