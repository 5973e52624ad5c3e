"""How a text travels as SMS: GSM-7 when every character fits, else UCS-2; and how
many segments it costs.

The choice matters to whoever pays: one character outside GSM-7 turns a
160-character message into three UCS-2 segments. So the encoding and the
segment count are decided here, stored on the message, and shown.

GSM 03.38: the basic table (one septet a character) and its extension table
(reached by an escape, two septets a character). A single segment holds 160
septets; a concatenated one 153 (the rest is the UDH), and an escaped pair is
never split across segments. UCS-2 (UTF-16BE): 70 units, 67 when concatenated;
a character outside the BMP takes two units, and is never split either.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7, UCS2 = "gsm7", "ucs2"
SINGLE = {GSM7: 160, UCS2: 70}
CONCATENATED = {GSM7: 153, UCS2: 67}


@dataclass(frozen=True)
class Encoded:
    encoding: str    # "gsm7" or "ucs2"
    segments: int
    units: int       # septets (GSM-7) or UTF-16 code units (UCS-2)
    data_coding: int  # SMPP data_coding / Jasmin's "coding": 0 GSM default, 8 UCS-2


def fits_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _costs(text: str, encoding: str) -> list[int]:
    if encoding == GSM7:
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def count_segments(costs: list[int], single: int, concatenated: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:  # walk, so no escaped pair or surrogate pair straddles two segments
        if used + cost > concatenated:
            segments, used = segments + 1, 0
        used += cost
    return segments


def encode(text: str) -> Encoded:
    encoding = GSM7 if fits_gsm7(text) else UCS2
    costs = _costs(text, encoding)
    return Encoded(
        encoding=encoding,
        segments=count_segments(costs, SINGLE[encoding], CONCATENATED[encoding]),
        units=sum(costs),
        data_coding=0 if encoding == GSM7 else 8,
    )


def ucs2_hex(text: str) -> str:
    """The text as Jasmin's ``hex-content`` for ``coding=8``: UTF-16BE, hex."""
    return text.encode("utf-16-be").hex()
