"""Scopes as pure decisions: which scope each route needs, what a key may see and grant."""

from __future__ import annotations

import pytest

from api import scopes
from api.app import routes
from api.gateways import password_rule
from api.validation import ValidationFailed

EVERY = scopes.ALL
SEND_ONLY = frozenset({scopes.MESSAGES_SEND})


def private_routes() -> set[tuple[str, str]]:
    found = set()
    for route in routes():
        if route.path.startswith("/api/") and not route.path.endswith("/dlr"):
            found |= {(method, route.path) for method in route.methods if method != "HEAD"} - scopes.PUBLIC_ROUTES
    return found


def test_every_private_route_names_its_scope_in_the_one_table():
    assert private_routes() == set(scopes.ROUTES)


def test_a_route_missing_from_the_table_is_refused_even_to_full_access():
    assert scopes.refusal("GET", "/api/not-in-the-table", EVERY, None, None) == "This key may not do this."


@pytest.mark.parametrize("method, path, message", [
    ("GET", "/api/sms-gateways", "This key may not read SMS gateways."),
    ("POST", "/api/sms-gateways", "This key may not manage SMS gateways."),
    ("PATCH", "/api/sms-gateways/{id:int}", "This key may not manage SMS gateways."),
    ("POST", "/api/sms-gateways/{id:int}/callback-token/rotate", "This key may not manage SMS gateways."),
    ("GET", "/api/sms-messages/{id:int}", "This key may not read messages."),
    ("GET", "/api/sms-gateways/{id:int}/unmatched-dlrs", "This key may not read messages."),
    ("POST", "/api/api-keys", "This key may not manage API keys or read the audit trail."),
    ("GET", "/api/audit-events", "This key may not manage API keys or read the audit trail."),
])
def test_a_send_only_key_is_refused_everything_but_sending(method, path, message):
    assert scopes.refusal(method, path, SEND_ONLY, None, 1) == message
    assert scopes.refusal("POST", "/api/sms-gateways/{id:int}/send", SEND_ONLY, None, 1) is None


def test_gateways_admin_includes_reading_gateways_but_nothing_else():
    admin = frozenset({scopes.GATEWAYS_ADMIN})
    assert scopes.refusal("GET", "/api/sms-gateways", admin, None, None) is None
    assert scopes.refusal("POST", "/api/sms-gateways/{id:int}/send", admin, None, 1) == \
        "This key may not send messages."


def test_a_gateway_limited_key_may_use_only_its_gateways_and_create_none():
    mine = frozenset({3, 5})
    assert scopes.refusal("POST", "/api/sms-gateways/{id:int}/send", EVERY, mine, 3) is None
    assert scopes.refusal("POST", "/api/sms-gateways/{id:int}/send", EVERY, mine, 4) == \
        "This key may not use this SMS gateway."
    assert scopes.refusal("GET", "/api/sms-gateways/{id:int}/unmatched-dlrs", EVERY, mine, 4) == \
        "This key may not use this SMS gateway."
    assert "may not create SMS gateways" in scopes.refusal("POST", "/api/sms-gateways", EVERY, mine, None)
    # routes not naming a gateway in the path are decided by the route itself (lists filter, messages 404)
    assert scopes.refusal("GET", "/api/sms-messages/{id:int}", EVERY, mine, 4) is None
    assert scopes.may_use_gateway(mine, 5) and not scopes.may_use_gateway(mine, 4)
    assert scopes.may_use_gateway(None, 4)


def test_gateway_secrets_only_with_gateways_admin():
    gateway = {"id": 1, "name": "g", "callback_token": "t" * 43, "callback_token_previous_expires_at": "x",
               "callback_token_history": []}
    assert scopes.without_secrets(gateway, {scopes.GATEWAYS_READ}) == {"id": 1, "name": "g"}
    assert scopes.without_secrets(gateway, {scopes.GATEWAYS_ADMIN}) == gateway


def test_scope_names_are_checked():
    assert scopes.parse_scopes(["messages:send", " messages:read "]) == {"messages:send", "messages:read"}
    assert scopes.parse_scopes(["all"]) == EVERY
    with pytest.raises(ValueError, match="unknown scope 'messages:write'"):
        scopes.parse_scopes(["messages:write"])
    assert scopes.ordered(EVERY) == list(scopes.SCOPES)


def test_countries_are_iso_codes_libphonenumber_knows():
    assert scopes.parse_countries(["gb", "US"]) == {"GB", "US"}
    for bad in ("UK", "XX", "GBR", ""):
        with pytest.raises(ValueError, match="unknown country"):
            scopes.parse_countries([bad])


def test_a_key_never_grants_more_than_it_holds():
    read = frozenset({scopes.MESSAGES_READ, scopes.KEYS_ADMIN})
    assert scopes.grant_refusal(EVERY, None, None, EVERY, None, None) is None
    assert scopes.grant_refusal(read, None, None, frozenset({scopes.MESSAGES_SEND}), None, None) == \
        "This key may not grant scopes it does not hold."
    assert scopes.grant_refusal(EVERY, frozenset({1}), None, EVERY, frozenset({1}), None) is None
    assert scopes.grant_refusal(EVERY, frozenset({1}), None, EVERY, None, None) is not None
    assert scopes.grant_refusal(EVERY, frozenset({1}), None, EVERY, frozenset({1, 2}), None) is not None
    assert scopes.grant_refusal(EVERY, None, frozenset({"GB"}), EVERY, None, None) is not None
    assert scopes.grant_refusal(EVERY, None, frozenset({"GB"}), EVERY, None, frozenset({"GB"})) is None


CURRENT = {"server_host": "h", "server_port": 80, "use_ssl": False, "api_path": "send", "provider_type": "http"}


@pytest.mark.parametrize("values", [
    {"server_host": "elsewhere"}, {"server_port": 81}, {"use_ssl": True}, {"api_path": "x"},
    {"provider_type": "jasmin"},
])
def test_the_password_rule_refuses_a_redirect_without_the_password(values):
    with pytest.raises(ValidationFailed) as caught:
        password_rule(CURRENT, values)
    assert list(caught.value.errors) == ["password"]
    password_rule(CURRENT, {**values, "password": "new"})
    password_rule(CURRENT, {**values, "password": None})  # clearing it sends no password anywhere


def test_the_password_rule_lets_same_values_and_other_fields_through():
    password_rule(CURRENT, dict(CURRENT))
    password_rule(CURRENT, {"name": "n", "username": "u", "is_active": False, "notes": None})


KEYS_ROUTES = [("POST", "/api/api-keys"), ("GET", "/api/api-keys"), ("DELETE", "/api/api-keys/{id:int}"),
               ("GET", "/api/audit-events")]


@pytest.mark.parametrize("method, path", KEYS_ROUTES)
def test_only_a_key_not_limited_to_gateways_manages_keys_and_reads_the_trail(method, path):
    """Keys and audit rows are not per gateway: a limited key would see (and probe) every gateway's."""
    assert scopes.refusal(method, path, EVERY, frozenset({1}), 1) == \
        "This key may not manage API keys or read the audit trail: it is limited to some gateways."
    assert scopes.refusal(method, path, EVERY, None, 1) is None


def test_a_key_grants_what_its_scopes_include():
    """gateways:admin includes gateways:read, so its holder may hand out a read-only key."""
    admin = frozenset({scopes.GATEWAYS_ADMIN, scopes.KEYS_ADMIN})
    assert scopes.grant_refusal(admin, None, None, frozenset({scopes.GATEWAYS_READ}), None, None) is None
    assert scopes.grant_refusal(admin, None, None, frozenset({scopes.GATEWAYS_READ, scopes.MESSAGES_READ}),
                                None, None) == "This key may not grant scopes it does not hold."
