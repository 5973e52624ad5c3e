"""api.webhook_signing against the reference implementation: what we sign, the
``standardwebhooks`` package verifies, and what it signs, we verify; what either refuses,
the other refuses too."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api import webhook_signing as ws

BODY = json.dumps({"type": "message.delivered", "timestamp": "2026-01-01T00:00:00Z",
                   "data": {"id": 12, "state": "delivered", "sequence": 3}}).encode()


def package_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Headers as the reference package signs them."""
    sig = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": sig}


def package_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)  # bodies here need not be JSON
        return True
    except WebhookVerificationError:
        return False


def ours_accepts(secrets: list[str], headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    try:
        ws.verify(secrets, headers, body, now=time.time() if now is None else now)
        return True
    except ws.BadSignature:
        return False


def test_a_new_secret_is_whsec_and_32_random_bytes():
    one, two = ws.new_secret(), ws.new_secret()
    assert one.startswith("whsec_") and one != two
    assert len(base64.b64decode(one[len("whsec_"):], validate=True)) == 32
    assert ws.secret_key(one) == base64.b64decode(one[6:])


@pytest.mark.parametrize("bad", ["", "whsec_", "abc", "sk_" + "A" * 43, "whsec_not base64!!",
                                 "whsec_" + base64.b64encode(b"short").decode(),
                                 "whsec_" + base64.b64encode(b"x" * 65).decode()])
def test_a_malformed_secret_is_a_clear_error_that_does_not_quote_it(bad):
    with pytest.raises(ValueError, match="webhook secret") as caught:
        ws.secret_key(bad)
    assert bad[6:] == "" or bad[6:] not in str(caught.value)


def test_a_secret_without_padding_is_the_same_key():
    secret = ws.new_secret()
    assert ws.secret_key(secret.rstrip("=")) == ws.secret_key(secret)


def test_ours_signed_the_package_verifies():
    secret, now = ws.new_secret(), int(time.time())
    headers = ws.headers([secret], "msg_12_3", now, BODY)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert ours_accepts([secret], headers, BODY)


def test_the_package_signed_ours_verifies():
    secret, now = ws.new_secret(), int(time.time())
    headers = package_headers(secret, "msg_1", now, BODY)
    ws.verify([secret], headers, BODY, now=now)
    # and the header value is exactly ours
    assert headers["webhook-signature"] == ws.signature([secret], "msg_1", now, BODY)


def test_header_names_are_matched_in_any_case():
    secret, now = ws.new_secret(), int(time.time())
    headers = {name.upper(): value for name, value in ws.headers([secret], "msg_1", now, BODY).items()}
    ws.verify([secret], headers, BODY, now=now)


def test_two_secrets_sign_side_by_side_and_either_verifies():
    current, previous, now = ws.new_secret(), ws.new_secret(), int(time.time())
    headers = ws.headers([current, previous], "msg_7", now, BODY)
    first, second = headers["webhook-signature"].split(" ")
    assert first == ws.signature([current], "msg_7", now, BODY)
    assert second == ws.signature([previous], "msg_7", now, BODY)
    for secret in (current, previous):
        assert package_accepts(secret, headers, BODY)
        assert ours_accepts([secret], headers, BODY)
    assert not package_accepts(ws.new_secret(), headers, BODY)
    assert not ours_accepts([ws.new_secret()], headers, BODY)


def test_a_receiver_holding_both_secrets_accepts_either_signature():
    current, previous, now = ws.new_secret(), ws.new_secret(), int(time.time())
    assert ours_accepts([current, previous], ws.headers([previous], "m", now, BODY), BODY)
    assert ours_accepts([current, previous], ws.headers([current], "m", now, BODY), BODY)


def tampered(secret: str):
    now = int(time.time())
    good = ws.headers([secret], "msg_12_3", now, BODY)
    yield "body", good, BODY.replace(b"delivered", b"failed")
    yield "id", {**good, "webhook-id": "msg_12_4"}, BODY
    yield "timestamp", {**good, "webhook-timestamp": str(now - 1)}, BODY
    yield "signature", {**good, "webhook-signature": "v1," + base64.b64encode(b"\0" * 32).decode()}, BODY
    yield "wrong secret", ws.headers([ws.new_secret()], "msg_12_3", now, BODY), BODY


def test_tampering_is_refused_by_ours_and_by_the_package():
    secret = ws.new_secret()
    for what, headers, body in tampered(secret):
        assert not package_accepts(secret, headers, body), what
        with pytest.raises(ws.BadSignature, match="no matching signature"):
            ws.verify([secret], headers, body, now=time.time())


@pytest.mark.parametrize("offset, word", [(-301, "too old"), (-3600, "too old"), (301, "too new"), (86400, "too new")])
def test_stale_and_future_timestamps_are_refused_by_both(offset, word):
    secret, now = ws.new_secret(), int(time.time())
    headers = ws.headers([secret], "msg_1", now + offset, BODY)
    assert not package_accepts(secret, headers, BODY)
    with pytest.raises(ws.BadSignature, match=word):
        ws.verify([secret], headers, BODY, now=now)


def test_a_timestamp_just_inside_the_window_is_accepted():
    secret, now = ws.new_secret(), 1_800_000_000
    for offset in (-300, 0, 300):
        ws.verify([secret], ws.headers([secret], "m", now + offset, BODY), BODY, now=now)
    ws.verify([secret], ws.headers([secret], "m", now - 900, BODY), BODY, now=now, tolerance=1000)


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(drop):
    secret, now = ws.new_secret(), int(time.time())
    headers = ws.headers([secret], "msg_1", now, BODY)
    del headers[drop]
    with pytest.raises(ws.BadSignature, match=f"missing header {drop}"):
        ws.verify([secret], headers, BODY, now=now)


@pytest.mark.parametrize("stamp", ["soon", "1.5e9", "-5", ""])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(stamp):
    secret, now = ws.new_secret(), int(time.time())
    headers = {**ws.headers([secret], "msg_1", now, BODY), "webhook-timestamp": stamp}
    with pytest.raises(ws.BadSignature):
        ws.verify([secret], headers, BODY, now=now)


def test_other_versions_and_garbage_beside_a_good_signature_do_not_hide_it():
    secret, now = ws.new_secret(), int(time.time())
    good = ws.signature([secret], "m", now, BODY)
    headers = {**ws.headers([secret], "m", now, BODY),
               "webhook-signature": f"v1a,abc v2,{good[3:]} v1,!!! nonsense {good}"}
    ws.verify([secret], headers, BODY, now=now)
    headers["webhook-signature"] = f"v2,{good[3:]}"
    with pytest.raises(ws.BadSignature, match="no v1 signature"):
        ws.verify([secret], headers, BODY, now=now)


def test_without_a_secret_nothing_verifies_or_signs():
    with pytest.raises(ws.BadSignature, match="no secret"):
        ws.verify([], {}, BODY, now=time.time())
    with pytest.raises(ValueError):
        ws.signature([], "m", 1, BODY)


SECRET = ws.new_secret()


@settings(max_examples=150, deadline=None)
@given(body=st.text(), webhook_id=st.text(st.characters(min_codepoint=33, max_codepoint=0x10FFFF,
                                                         blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                                          min_size=1, max_size=60))
def test_property_ours_and_the_package_agree_on_any_body_and_id(body, webhook_id):
    """Any text body and id: our signature is the package's, each verifies the other's, and
    one changed byte of the body is refused by both."""
    data, now = body.encode(), int(time.time())
    ours = ws.headers([SECRET], webhook_id, now, data)
    theirs = package_headers(SECRET, webhook_id, now, data)
    assert ours["webhook-signature"] == theirs["webhook-signature"]
    assert package_accepts(SECRET, ours, data)
    ws.verify([SECRET], theirs, data, now=now)
    changed = data + b" "
    assert not package_accepts(SECRET, ours, changed)
    assert not ours_accepts([SECRET], ours, changed, now=now)
