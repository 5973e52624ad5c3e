"""Destination numbers: parse, normalise to E.164, and say which country one is in.

Pure functions over libphonenumber (the ``phonenumbers`` package). A number is
accepted only in international form, ``+`` and the country code first, because
smsgw cannot know which country a caller dials from: ``0044…`` means the UK
from Paris but nothing from New York (where the prefix is ``011``), and
``4155550123`` could be anywhere. Common punctuation is allowed (``+1 (415)
555-0123``) and dropped; letters (``1-800-FLOWERS``), extensions and
non-ASCII digits are refused, since a gateway gets exactly the digits we store.
Short codes (``+44 999``, ``84444``) are refused too: they are not valid E.164
numbers and are the usual target of premium-rate SMS fraud. So are numbers
libphonenumber types as premium-rate (``+1 900 …``, ``+44 909 …``): valid, but
each text to one is billed at a premium to the sender, which is what SMS
pumping with a leaked key cashes in on.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import geocoder

INTERNATIONAL_FORMAT = "Use the international format, e.g. +14155550123."
# What a person may type between the digits; everything else is refused before parsing.
PUNCTUATED = re.compile(r"^\+[0-9][0-9 ().\-/]*$")
NON_GEOGRAPHIC = "001"  # libphonenumber's region for +800, +808, +870, +881, +882, +883, +888, +979


class InvalidNumber(ValueError):
    """Why a text is not a number smsgw can send to; the message is for the user."""


def parse(text: str) -> phonenumbers.PhoneNumber:
    """The number ``text`` names, or InvalidNumber saying what is wrong with it (or that it is
    premium-rate)."""
    text = text.strip()
    if not text.startswith("+"):
        raise InvalidNumber(f"The to_number must start with + and the country code. {INTERNATIONAL_FORMAT}")
    if not PUNCTUATED.fullmatch(text):
        raise InvalidNumber("The to_number may hold only digits after the +, with spaces, "
                            f"brackets, dots, dashes or slashes between them. {INTERNATIONAL_FORMAT}")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidNumber(f"The to_number is not a phone number. {INTERNATIONAL_FORMAT}") from None
    # number_type is UNKNOWN exactly when is_valid_number is false (both match the number
    # against its region's patterns): computed once, it answers both questions.
    kind = phonenumbers.number_type(number)
    if number.extension or kind == phonenumbers.PhoneNumberType.UNKNOWN:
        raise InvalidNumber("The to_number is not a valid phone number for its country code "
                            f"(short codes are not accepted). {INTERNATIONAL_FORMAT}")
    if kind == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        raise InvalidNumber("The to_number is a premium-rate number: premium-rate numbers are not accepted.")
    return number


def e164(text: str) -> str:
    """``text`` as E.164 (``+14155550123``), or InvalidNumber."""
    return phonenumbers.format_number(parse(text), phonenumbers.PhoneNumberFormat.E164)


def problem(text: str) -> str | None:
    """The user-facing reason ``text`` is refused, or None when it is a valid number
    (the shape ``api.validation.Field.check`` takes)."""
    try:
        parse(text)
    except InvalidNumber as exc:
        return str(exc)
    return None


def region(number: str) -> str:
    """The ISO 3166 alpha-2 code of the country ``number`` (E.164) is in, e.g. ``GB``;
    ``001`` for non-geographic numbers (+800 and the like), which are in no country."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or NON_GEOGRAPHIC


def allowed(number: str, countries: frozenset[str] | None) -> bool:
    """May a key limited to ``countries`` (None: any) send to ``number`` (E.164)?

    A non-geographic number is in no country, so only an unlimited key reaches it.
    """
    return countries is None or region(number) in countries


def country_label(number: str) -> str:
    """How a refusal names the country of ``number``: ``United Kingdom (GB)``."""
    code = region(number)
    if code == NON_GEOGRAPHIC:
        return "non-geographic numbers"
    name = geocoder.country_name_for_number(phonenumbers.parse(number, None), "en")
    return f"{name} ({code})" if name else code
