"""Destination numbers (api.phone): what is accepted, how it is stored, which country it is in."""

from __future__ import annotations

import pytest

from api import phone


@pytest.mark.parametrize("typed, stored", [
    ("+14155550123", "+14155550123"),
    ("+1 (415) 555-0123", "+14155550123"),
    ("+1.415.555.0123", "+14155550123"),
    ("  +1 415/555 0123 ", "+14155550123"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+33 6 12 34 56 78", "+33612345678"),
    ("+49 151 23456789", "+4915123456789"),
])
def test_numbers_in_international_form_are_stored_as_e164(typed, stored):
    assert phone.problem(typed) is None
    assert phone.e164(typed) == stored


@pytest.mark.parametrize("typed", ["1", "4155550123", "0044 20 7946 0958", "(415) 555-0123"])
def test_a_number_without_its_country_code_is_refused_with_the_format_to_use(typed):
    assert "+14155550123" in phone.problem(typed)
    with pytest.raises(phone.InvalidNumber):
        phone.e164(typed)


@pytest.mark.parametrize("typed", [
    "+15555550123",           # 555 is no US area code
    "+1415555012",            # a digit short
    "+4479111234560000",      # too long
    "+44 999",                # a short code
    "+1-800-FLOWERS",         # letters: libphonenumber would dial them, we do not
    "+14155550123 ext. 12",   # an extension cannot be texted
    "+1 415 555 0123;ext=1",
    "＋１４１５５５５０１２３",  # full-width digits
    "+1 415 555 0123\u200b",  # an invisible character
    "+",
    "++14155550123",
])
def test_what_libphonenumber_does_not_call_a_valid_number_is_refused(typed):
    assert phone.problem(typed) is not None
    with pytest.raises(phone.InvalidNumber):
        phone.e164(typed)


@pytest.mark.parametrize("number, region", [
    ("+442079460958", "GB"), ("+447911123456", "GG"), ("+14155550123", "US"), ("+16135550199", "CA"),
    ("+80012345678", "001"),
])
def test_the_region_of_a_number(number, region):
    assert phone.region(number) == region


def test_a_key_limited_to_countries_may_send_only_there():
    assert phone.allowed("+442079460958", frozenset({"GB"}))
    assert phone.allowed("+442079460958", None)
    assert not phone.allowed("+14155550123", frozenset({"GB"}))
    # +1 is shared by the US and Canada: the country, not the code, decides
    assert not phone.allowed("+16135550199", frozenset({"US"}))
    assert phone.allowed("+16135550199", frozenset({"US", "CA"}))
    # a non-geographic number is in no country
    assert not phone.allowed("+80012345678", frozenset({"GB", "US"}))
    assert phone.allowed("+80012345678", None)


def test_a_refusal_names_the_country():
    assert phone.country_label("+14155550123") == "United States (US)"
    assert phone.country_label("+442079460958") == "United Kingdom (GB)"
    assert phone.country_label("+80012345678") == "non-geographic numbers"


@pytest.mark.parametrize("typed", ["+1 900 555 0199", "+44 909 879 0000", "+19005550199"])
def test_premium_rate_numbers_are_refused(typed):
    """Valid numbers, but each text to one is billed at a premium to the sender: the
    SMS-pumping fraud a leaked send key is used for."""
    assert "premium-rate numbers are not accepted" in phone.problem(typed)
    with pytest.raises(phone.InvalidNumber):
        phone.e164(typed)
