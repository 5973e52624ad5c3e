"""Secrets at rest (api.secrets) and their configuration: pure, no processes."""

from __future__ import annotations

import base64

import pytest

from api import secrets
from api.config import ConfigError, Settings

PURPOSE = "sms_gateways.password"
KEY_A = secrets.generate_key()
KEY_B = secrets.generate_key()


def ring(current: str | None, *previous: str) -> secrets.Keyring:
    return secrets.keyring_from(current, ",".join(previous))


def test_a_sealed_value_names_its_scheme_and_key_and_holds_no_plaintext():
    keyring = ring(KEY_A)
    sealed = secrets.seal(keyring, "hunter2-gateway-pw", PURPOSE)
    scheme, version, key_id, body = sealed.split(":")
    assert (scheme, version, key_id) == ("aesgcm", "v1", keyring.current_id)
    assert "hunter2" not in sealed
    assert len(base64.urlsafe_b64decode(body + "==")) == 12 + len("hunter2-gateway-pw") + 16
    assert secrets.unseal(keyring, sealed, PURPOSE) == "hunter2-gateway-pw"


def test_each_seal_uses_a_new_nonce():
    keyring = ring(KEY_A)
    assert secrets.seal(keyring, "same", PURPOSE) != secrets.seal(keyring, "same", PURPOSE)


def test_plaintext_is_read_as_it_is():
    assert secrets.unseal(ring(KEY_A), "old-plain-pw", PURPOSE) == "old-plain-pw"
    assert secrets.unseal(secrets.Keyring(), "old-plain-pw", PURPOSE) == "old-plain-pw"


def test_a_value_sealed_with_a_key_not_held_is_unavailable_and_says_which_key():
    sealed = secrets.seal(ring(KEY_A), "pw", PURPOSE)
    for keyring in (ring(KEY_B), secrets.Keyring()):
        with pytest.raises(secrets.SecretUnavailable) as caught:
            secrets.unseal(keyring, sealed, PURPOSE)
        assert ring(KEY_A).current_id in str(caught.value) and "pw" not in str(caught.value).split()
    assert secrets.unseal(ring(KEY_B, KEY_A), sealed, PURPOSE) == "pw"  # a previous key reads it


def test_a_sealed_value_is_bound_to_its_purpose_and_to_its_bytes():
    keyring = ring(KEY_A)
    sealed = secrets.seal(keyring, "pw", PURPOSE)
    with pytest.raises(secrets.SecretUnavailable):
        secrets.unseal(keyring, sealed, "sms_gateways.notes")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(secrets.SecretUnavailable):
        secrets.unseal(keyring, flipped, PURPOSE)
    for body in ("AAAA", "AAAAA"):  # too short; not even whole base64
        with pytest.raises(secrets.SecretUnavailable):
            secrets.unseal(keyring, f"aesgcm:v1:{keyring.current_id}:{body}", PURPOSE)


def test_reseal_moves_values_to_the_current_key_and_leaves_current_ones_alone():
    old = secrets.seal(ring(KEY_A), "pw", PURPOSE)
    rotating = ring(KEY_B, KEY_A)
    moved = secrets.reseal(rotating, old, PURPOSE)
    assert moved.split(":")[2] == rotating.current_id
    assert secrets.unseal(ring(KEY_B), moved, PURPOSE) == "pw"  # the old key is no longer needed
    assert secrets.reseal(rotating, moved, PURPOSE) is None
    assert secrets.unseal(ring(KEY_B), secrets.reseal(ring(KEY_B), "plain", PURPOSE), PURPOSE) == "plain"
    with pytest.raises(secrets.SecretUnavailable):
        secrets.reseal(ring(KEY_B), old, PURPOSE)


def test_the_keyring_repr_shows_key_ids_never_keys():
    keyring = ring(KEY_A, KEY_B)
    shown = repr(keyring) + repr(Settings(keyring=keyring))
    assert KEY_A not in shown and KEY_B not in shown
    assert keyring.current_id in shown


def test_generated_keys_are_32_random_bytes_in_base64url():
    assert secrets.parse_key(KEY_A) != secrets.parse_key(KEY_B)
    assert len(secrets.parse_key(KEY_A)) == 32
    assert secrets.parse_key(KEY_A + "=") == secrets.parse_key(KEY_A)  # padding optional


@pytest.mark.parametrize("env, says", [
    ({"SMSGW_SECRET_KEY": "not a key!"}, "SMSGW_SECRET_KEY is not base64url"),
    ({"SMSGW_SECRET_KEY": base64.urlsafe_b64encode(b"k" * 16).decode()}, "SMSGW_SECRET_KEY holds 16 bytes"),
    ({"SMSGW_SECRET_KEY": KEY_A, "SMSGW_SECRET_KEY_PREVIOUS": f"{KEY_B},short"}, "SMSGW_SECRET_KEY_PREVIOUS"),
    ({"SMSGW_SECRET_KEY_PREVIOUS": KEY_B}, "without SMSGW_SECRET_KEY"),
])
def test_a_malformed_key_is_a_config_error_that_does_not_echo_it(env, says):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert says in str(caught.value)
    for value in env.values():
        assert value not in str(caught.value)


def test_the_settings_read_both_variables():
    settings = Settings.from_env({"SMSGW_SECRET_KEY": KEY_A, "SMSGW_SECRET_KEY_PREVIOUS": f" {KEY_B} , "})
    assert settings.keyring == ring(KEY_A, KEY_B)
    assert Settings.from_env({}).keyring == secrets.Keyring()


def test_the_settings_repr_never_shows_the_admin_key():
    admin_key = "a-bootstrap-admin-key-" + "z" * 30
    assert admin_key not in repr(Settings(admin_key=admin_key))
    assert admin_key not in repr(Settings.from_env({"SMSGW_ADMIN_KEY": admin_key}))
