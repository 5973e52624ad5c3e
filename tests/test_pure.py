"""Pure decisions: validation, tokens, configuration."""

from __future__ import annotations

import re

import pytest

from api import callback_tokens, clock
from api.config import ConfigError, Settings
from api.validation import Field, ValidationFailed, validate

SCHEMA = {
    "name": Field("string", required=True, max_length=5),
    "port": Field("integer", min_value=1, max_value=10),
    "flag": Field("boolean"),
    "note": Field("text", nullable=True),
}


def errors_of(data, **kw):
    with pytest.raises(ValidationFailed) as caught:
        validate(data, SCHEMA, **kw)
    return caught.value.errors


def test_valid_values_are_cleaned():
    assert validate({"name": " abc ", "port": 3, "flag": False, "note": None}, SCHEMA) == {
        "name": "abc", "port": 3, "flag": False, "note": None}


def test_every_problem_is_reported_at_once():
    errors = errors_of({"name": "toolong", "port": 11, "flag": "true", "extra": 1})
    assert set(errors) == {"name", "port", "flag", "extra"}


def test_partial_makes_nothing_required_but_blank_required_fields_still_fail():
    assert validate({}, SCHEMA, partial=True) == {}
    assert "name" in errors_of({"name": " "}, partial=True)


def test_form_values_are_read_from_text():
    assert validate({"name": "a", "port": "7", "flag": "on"}, SCHEMA, from_form=True) == {
        "name": "a", "port": 7, "flag": True}
    assert "port" in errors_of({"name": "a", "port": "7.5"}, from_form=True)
    assert "port" in errors_of({"name": "a", "port": "7"})  # JSON must carry a number


def test_control_characters_are_refused():
    assert "name" in errors_of({"name": "a\x00b"})
    assert "name" in errors_of({"name": "a\nb"})
    assert validate({"name": "a", "note": "line\nbreak"}, SCHEMA)["note"] == "line\nbreak"


def test_generated_tokens_are_url_safe_and_random():
    tokens = {callback_tokens.generate() for _ in range(100)}
    assert len(tokens) == 100
    assert all(callback_tokens.TOKEN_PATTERN.match(t) and len(t) >= 43 for t in tokens)


def test_token_matches_current_and_each_previous_within_its_own_grace():
    now = clock.now_iso()
    later, latest, earlier = clock.iso_after(60), clock.iso_after(120), clock.iso_after(-60)
    cur, old, older, gone = ("c" * 30, "o" * 30, "p" * 30, "g" * 30)
    previous = [(old, later), (older, latest), (gone, earlier)]
    assert callback_tokens.token_matches(cur, cur, previous, now)
    assert callback_tokens.token_matches(old, cur, previous, now)
    assert callback_tokens.token_matches(older, cur, previous, now)
    assert not callback_tokens.token_matches(gone, cur, previous, now)  # its grace is over
    assert not callback_tokens.token_matches(old, cur, [(old, "")], now)
    assert not callback_tokens.token_matches("", cur, [("", later)], now)
    assert not callback_tokens.token_matches(None, cur)
    assert not callback_tokens.token_matches(cur[:-1], cur)
    assert not callback_tokens.token_matches("cur", "cur")  # not a well-formed token at all


def test_redact_url_hides_only_the_token():
    url = "https://h/webhooks/jasmin/1/dlr?token=s3cret&x=1"
    redacted = callback_tokens.redact_url(url)
    assert "s3cret" not in redacted and "x=1" in redacted and redacted.startswith("https://h/webhooks/jasmin/1/dlr?")
    assert callback_tokens.redact_url("https://h/dlr?ref=2") == "https://h/dlr?ref=2"
    assert callback_tokens.redact_url("https://h/dlr") == "https://h/dlr"


def test_clock_text_is_fixed_width_utc():
    text = clock.now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)


def test_settings_defaults():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/smsgw.db"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.public_url == "http://127.0.0.1:8080"  # the guard, in front of the DLR routes
    assert settings.api_url == "http://127.0.0.1:8000"
    assert (settings.guard_host, settings.guard_port, settings.guard_cache_ttl) == ("127.0.0.1", 8080, 5.0)
    assert settings.admin_key is None and settings.gateway_timeout == 10.0
    assert settings.callback_token_grace == 86400


def test_settings_from_environment():
    settings = Settings.from_env({"SMSGW_API_PORT": "9000", "SMSGW_PUBLIC_URL": "https://sms.example.com/",
                                  "SMSGW_GATEWAY_TIMEOUT": "2.5", "SMSGW_ADMIN_KEY": "k"})
    assert settings.api_port == 9000 and settings.public_url == "https://sms.example.com"
    assert settings.gateway_timeout == 2.5 and settings.admin_key == "k"


@pytest.mark.parametrize("env, name", [
    ({"SMSGW_API_PORT": "http"}, "SMSGW_API_PORT"),
    ({"SMSGW_API_PORT": "70000"}, "SMSGW_API_PORT"),
    ({"SMSGW_GATEWAY_TIMEOUT": "0"}, "SMSGW_GATEWAY_TIMEOUT"),
    ({"SMSGW_GATEWAY_TIMEOUT": "soon"}, "SMSGW_GATEWAY_TIMEOUT"),
    ({"SMSGW_PUBLIC_URL": "sms.example.com"}, "SMSGW_PUBLIC_URL"),
])
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_the_tokens_in_grace_are_exactly_the_previous_tokens_that_match():
    """token_matches (the guard, receipts) and in_grace (what the API says, rotation) share one rule."""
    now = clock.now_iso()
    history = [{"token": f"{n}" * 30, "expires_at": expires} for n, expires in enumerate(
        (clock.iso_after(60), clock.iso_after(-1), now, "", clock.iso_after(3600)))]
    pairs = [(e["token"], e["expires_at"]) for e in history]
    matching = [e["token"] for e in history if callback_tokens.token_matches(e["token"], "c" * 30, pairs, now)]
    assert sorted(e["token"] for e in callback_tokens.in_grace(history, now)) == sorted(matching)
    assert len(matching) == 2
