"""The guard's pure decisions: which request targets are DLRs, which token they carry.

The corpus below is the attack surface: every spelling a client might use to
reach the API's receipt handler under a path the guard did not check.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api import callback_tokens, clock
from guard import decision
from guard.store import Credentials

# (method, raw request target) -> canonical path, or None when it is no DLR request.
CANONICAL = [
    ("POST", "/api/sms-gateways/1/dlr", "/api/sms-gateways/1/dlr"),
    ("POST", "/webhooks/jasmin/1/dlr", "/webhooks/jasmin/1/dlr"),
    ("GET", "/webhooks/jasmin/42/dlr?id=a&message_status=DELIVRD", "/webhooks/jasmin/42/dlr"),
    ("POST", "/api/sms-gateways/9223372036854775807/dlr?token=t", "/api/sms-gateways/9223372036854775807/dlr"),
]
NOT_DLR = [
    ("POST", "/api/sms-gateways/1/dlr/"),                 # trailing slash
    ("POST", "/api/sms-gateways/1/dlr//"),
    ("POST", "//api/sms-gateways/1/dlr"),                 # doubled slashes
    ("POST", "/api//sms-gateways/1/dlr"),
    ("POST", "/api/sms-gateways//1/dlr"),
    ("POST", "/api/sms-gateways/1//dlr"),
    ("POST", "/api/sms-gateways/1/./dlr"),                # dot segments
    ("POST", "/api/sms-gateways/2/../1/dlr"),
    ("POST", "/./api/sms-gateways/1/dlr"),
    ("POST", "/api/sms-gateways/1/dlr/.."),
    ("POST", "/api/sms-gateways/%31/dlr"),                # percent-encoding
    ("POST", "/api/sms-gateways/1/dl%72"),
    ("POST", "/api/sms-gateways/1%2Fdlr"),
    ("POST", "%2Fapi/sms-gateways/1/dlr"),
    ("POST", "/api/sms-gateways/1/dlr%00"),
    ("POST", "/api/sms-gateways/1/dlr%3Ftoken=x"),
    ("POST", "/API/sms-gateways/1/dlr"),                  # case
    ("POST", "/api/SMS-gateways/1/dlr"),
    ("POST", "/webhooks/Jasmin/1/dlr"),
    ("POST", "/api/sms-gateways/1/DLR"),
    ("POST", "/api/sms-gateways/1/dlr;jsessionid=1"),     # ;params
    ("POST", "/api/sms-gateways/1;x/dlr"),
    ("POST", "/api/sms-gateways/abc/dlr"),                # non-integer ids
    ("POST", "/api/sms-gateways/-1/dlr"),
    ("POST", "/api/sms-gateways/1.0/dlr"),
    ("POST", "/api/sms-gateways/01/dlr"),                 # leading zero: another spelling of 1
    ("POST", "/api/sms-gateways/0/dlr"),
    ("POST", "/api/sms-gateways/+1/dlr"),
    ("POST", "/api/sms-gateways/ 1/dlr"),
    ("POST", "/api/sms-gateways/9223372036854775808/dlr"),  # past 64 bits
    ("POST", "/api/sms-gateways/99999999999999999999/dlr"),
    ("POST", "http://127.0.0.1:8000/api/sms-gateways/1/dlr"),  # absolute form
    ("POST", "*"),
    ("POST", "/api/sms-gateways/1/dlr#frag"),
    ("POST", "/api/sms-gateways/1"),                      # other routes
    ("POST", "/api/sms-gateways/1/send"),
    ("GET", "/api/sms-gateways"),
    ("GET", "/healthz"),
    ("POST", "/webhooks/jasmin/1/dlr/extra"),
    ("PUT", "/api/sms-gateways/1/dlr"),                   # other methods
    ("DELETE", "/webhooks/jasmin/1/dlr"),
    ("OPTIONS", "/webhooks/jasmin/1/dlr"),
    ("HEAD", "/webhooks/jasmin/1/dlr"),
    ("post", "/webhooks/jasmin/1/dlr"),
    ("CONNECT", "/webhooks/jasmin/1/dlr"),
]


@pytest.mark.parametrize("method, raw, canonical", CANONICAL)
def test_canonical_dlr_targets(method, raw, canonical):
    target = decision.parse_target(method, raw)
    assert target is not None and target.path == canonical


@pytest.mark.parametrize("method, raw", NOT_DLR)
def test_every_other_spelling_is_not_a_dlr(method, raw):
    assert decision.parse_target(method, raw) is None


def test_the_corpus_is_large():
    assert len(NOT_DLR) >= 30


def test_the_forwarded_query_keeps_everything_but_the_token():
    target = decision.parse_target("GET", "/webhooks/jasmin/7/dlr?id=a%20b&token=s3cret&level=2")
    assert target.query == "id=a+b&level=2"
    assert decision.parse_target("POST", "/webhooks/jasmin/7/dlr?token=s3cret").query == ""


@pytest.mark.parametrize("raw, headers, expected", [
    ("/x?token=abc", [], "abc"),
    ("/x", ["abc"], "abc"),
    ("/x?token=abc", ["abc"], "abc"),                 # the same in both places is fine
    ("/x", [], decision.MISSING),
    ("/x?token=", [], decision.MISSING),
    ("/x", [" "], decision.MISSING),
    ("/x?Token=abc", [], decision.MISSING),           # only the exact parameter name counts
    ("/x?token=abc&token=abc", [], decision.CONFLICT),
    ("/x?token=abc&token=def", [], decision.CONFLICT),
    ("/x?token=abc", ["def"], decision.CONFLICT),
    ("/x?token=", ["abc"], decision.CONFLICT),
    ("/x", ["abc", "abc"], decision.CONFLICT),
    ("/x?to%6Ben=abc", [], "abc"),                    # what the API would decode
])
def test_find_token(raw, headers, expected):
    assert decision.find_token(raw, headers) == expected


def test_verdicts():
    now = clock.now_iso()
    current, old = "current-token-" + "c" * 20, "old-token-" + "o" * 20
    creds = Credentials(current, ((old, clock.iso_after(60)),))
    expired = Credentials(current, ((old, clock.iso_after(-1)),))
    assert decision.verdict_for_token(current, creds, now) == decision.ALLOW
    assert decision.verdict_for_token(old, creds, now) == decision.ALLOW
    assert decision.verdict_for_token(old, expired, now).status == 403
    assert decision.verdict_for_token("wrong", creds, now).status == 403
    assert decision.verdict_for_token(current, None, now).status == 403  # no such gateway
    assert decision.verdict_for_token(current, decision.UNCHECKED, now).status == 503  # not looked at
    assert decision.verdict_for_token("short", decision.UNCHECKED, now).status == 403  # never a token
    assert decision.verdict_for_token(decision.MISSING, creds, now).status == 401
    assert decision.verdict_for_token(decision.CONFLICT, creds, now).status == 400
    # a wrong token and an unknown gateway are indistinguishable
    assert decision.verdict_for_token("wrong", creds, now) == decision.verdict_for_token("x", None, now)
    assert decision.verdict_for_token("w" * 30, creds, now) == decision.verdict_for_token("w" * 30, None, now)


def test_only_a_refused_token_that_could_be_one_is_looked_up_again():
    assert decision.worth_a_fresh_look("t" * 30, decision.FORBIDDEN)
    assert not decision.worth_a_fresh_look("t" * 30, decision.ALLOW)
    assert not decision.worth_a_fresh_look("t" * 30, decision.RETRY)
    assert not decision.worth_a_fresh_look("too-short", decision.FORBIDDEN)


# Finding 8: text that no token can be (outside ASCII, lone surrogates as mitmproxy's
# surrogateescape makes of raw bytes) is a wrong token, and checking it never raises.
any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=80)


@given(token=any_text, header=any_text)
@settings(max_examples=300, deadline=None)
def test_no_text_makes_the_token_check_raise(token, header):
    now = clock.now_iso()
    creds = Credentials("current-token-" + "a" * 20, (("old-token-" + "b" * 20, clock.iso_after(60)),))
    assert callback_tokens.token_matches(token, creds.current, creds.previous, now) is False
    for raw, headers in ((f"/x?token={token}", []), ("/x", [header]), (f"/x?token={token}", [header])):
        found = decision.find_token(raw, headers)
        verdict = decision.verdict_for_token(found, creds, now)
        assert verdict.status in (400, 401, 403)


@pytest.mark.parametrize("token", ["\udcff" * 30, "é" * 30, "\udcc3\udca9" + "a" * 30, "a" * 30 + "\n",
                                   "current-token-" + "a" * 20 + "\udcff", "\x00" * 30])
def test_a_token_outside_the_token_alphabet_never_matches(token):
    assert callback_tokens.token_matches(token, token) is False
    assert decision.well_formed(token) is False


@pytest.mark.parametrize("fields, plain", [
    ([(b"Host", b"smsgw"), (b"Content-Length", b"4")], True),
    ([(b"X-Note", b"a\r\n Transfer-Encoding: chunked")], False),  # an obs-fold, kept by the parser
    ([(b"X-Note", b"a\rTransfer-Encoding: chunked")], False),      # a bare CR
    ([(b"X-Note", b"a\nb")], False),
    ([(b"X-Note", b"a\x00b")], False),
    ([(b"X-No\rte", b"a")], False),
    ([(b"X-Note", b"tab\tand spaces are fine")], True),
])
def test_a_header_with_a_line_break_or_nul_is_malformed(fields, plain):
    """A line break inside a header would become a header line of its own upstream
    (RFC 9112 5.2: refuse it); so a request carrying one is never forwarded."""
    assert decision.plain_headers(fields) is plain
