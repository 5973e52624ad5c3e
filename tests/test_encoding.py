"""GSM-7 or UCS-2, and what each costs in segments."""

from __future__ import annotations

import pytest

from api.encoding import GSM7_BASIC, encode, fits_gsm7, ucs2_hex


@pytest.mark.parametrize("text, encoding, segments, units", [
    ("hello", "gsm7", 1, 5),
    ("a" * 160, "gsm7", 1, 160),
    ("a" * 161, "gsm7", 2, 161),
    ("a" * 306, "gsm7", 2, 306),
    ("a" * 307, "gsm7", 3, 307),
    ("€" * 80, "gsm7", 1, 160),            # extension characters count two septets
    ("€" * 81, "gsm7", 2, 162),
    ("a" * 152 + "€" + "a" * 10, "gsm7", 2, 164),
    ("a" * 152 + "€", "gsm7", 1, 154),
    ("Ça coûte 5€ {ok} [x] ~ | ^ \\", "ucs2", 1, 28),  # û is not GSM-7
    ("Ça va? 5€ {ok} [x] ~ | ^ \\", "gsm7", 1, 35),   # 26 characters, 9 of them escaped
    ("ж" * 70, "ucs2", 1, 70),
    ("ж" * 71, "ucs2", 2, 71),
    ("ж" * 134, "ucs2", 2, 134),
    ("ж" * 135, "ucs2", 3, 135),
    ("😀" * 35, "ucs2", 1, 70),            # outside the BMP: two UTF-16 units
    ("😀" * 36, "ucs2", 2, 72),
    ("a" * 66 + "😀", "ucs2", 1, 68),
    ("a" * 66 + "😀" + "a" * 3, "ucs2", 2, 71),
])
def test_encoding_and_segments(text, encoding, segments, units):
    encoded = encode(text)
    assert (encoded.encoding, encoded.segments, encoded.units) == (encoding, segments, units)
    assert encoded.data_coding == (0 if encoding == "gsm7" else 8)


def test_an_escaped_pair_is_never_split_across_segments():
    # 306 septets would fit two 153-septet segments if a pair could be split;
    # it cannot, so the first segment ends after 152 and the text needs three.
    assert encode("a" * 152 + "€" * 77).segments == 3
    assert encode("a" * 153 + "€" * 76).segments == 2   # 153 | 152: no pair straddles


def test_the_basic_table_has_127_printable_entries_and_no_escape():
    assert len(GSM7_BASIC) == 127 and "\x1b" not in GSM7_BASIC
    assert fits_gsm7("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà")
    assert not fits_gsm7("á") and not fits_gsm7("`")


def test_ucs2_hex_is_utf16_big_endian():
    assert ucs2_hex("ж€") == "043620ac"
    assert ucs2_hex("😀") == "d83dde00"
