"""What each API key may do: the scopes, which scope each route needs, and the rules.

Pure: no I/O. ``api.auth.require_api_key`` enforces ``ROUTES`` for every /api/
route, so a route is never private without saying what it needs; the OpenAPI
document (when it exists) can be built from the same table.

A key holds a set of scopes, optionally a set of gateway ids (``None`` = every
gateway) and a set of destination countries (``None`` = anywhere; enforced
where a message is sent). ``SMSGW_ADMIN_KEY`` holds every scope, unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

MESSAGES_SEND = "messages:send"
MESSAGES_READ = "messages:read"
GATEWAYS_READ = "gateways:read"    # gateways without their secrets
GATEWAYS_ADMIN = "gateways:admin"  # secrets, rotation, create / update / delete
KEYS_ADMIN = "keys:admin"          # API keys and the audit trail
WEBHOOKS_ADMIN = "webhooks:admin"  # status webhook endpoints, their secrets and deliveries

# In the order a user reads them (`smsgw apikey list`, errors).
SCOPES = (MESSAGES_SEND, MESSAGES_READ, GATEWAYS_READ, GATEWAYS_ADMIN, KEYS_ADMIN, WEBHOOKS_ADMIN)
ALL = frozenset(SCOPES)
# `--scope all` / "all": every scope, as keys made before scopes existed have.
EVERY = "all"

# A scope that includes another: managing gateways includes reading them.
IMPLIES = {GATEWAYS_ADMIN: frozenset({GATEWAYS_READ})}

# "This key may not <what>."
WHAT = {
    MESSAGES_SEND: "send messages",
    MESSAGES_READ: "read messages",
    GATEWAYS_READ: "read SMS gateways",
    GATEWAYS_ADMIN: "manage SMS gateways",
    KEYS_ADMIN: "manage API keys or read the audit trail",
    WEBHOOKS_ADMIN: "manage webhook endpoints",
}

# Gateway fields only gateways:admin sees: whoever holds the callback token can
# forge receipts. Every field whose name starts with this is withheld.
SECRET_FIELD_PREFIX = "callback_token"


@dataclass(frozen=True)
class Rule:
    scope: str
    # True: the route serves every gateway at once (creating one, every key, the
    # whole audit trail), so a key limited to some gateways may not use it.
    unlimited_only: bool = False
    # What the refusal of a limited key names; the scope's WHAT when None.
    what: str | None = None


ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/api/sms-gateways"): Rule(GATEWAYS_READ),
    ("POST", "/api/sms-gateways"): Rule(GATEWAYS_ADMIN, unlimited_only=True, what="create SMS gateways"),
    ("GET", "/api/sms-gateways/{id:int}"): Rule(GATEWAYS_READ),
    ("PATCH", "/api/sms-gateways/{id:int}"): Rule(GATEWAYS_ADMIN),
    ("PUT", "/api/sms-gateways/{id:int}"): Rule(GATEWAYS_ADMIN),
    ("DELETE", "/api/sms-gateways/{id:int}"): Rule(GATEWAYS_ADMIN),
    ("POST", "/api/sms-gateways/{id:int}/callback-token/rotate"): Rule(GATEWAYS_ADMIN),
    ("POST", "/api/sms-gateways/{id:int}/send"): Rule(MESSAGES_SEND),
    ("GET", "/api/sms-gateways/{id:int}/messages"): Rule(MESSAGES_READ),
    ("POST", "/api/sms-gateways/{id:int}/messages"): Rule(MESSAGES_SEND),
    ("GET", "/api/sms-batches/{id:int}"): Rule(MESSAGES_READ),
    ("POST", "/api/sms-messages/{id:int}/cancel"): Rule(MESSAGES_SEND),
    ("GET", "/api/sms-gateways/{id:int}/unmatched-dlrs"): Rule(MESSAGES_READ),
    ("GET", "/api/sms-messages/{id:int}"): Rule(MESSAGES_READ),
    ("GET", "/api/sms-messages/{id:int}/events"): Rule(MESSAGES_READ),
    # Keys and audit rows are not per gateway: a key limited to some gateways would see
    # every gateway's rows and every key, and could tell which gateway ids exist.
    ("POST", "/api/api-keys"): Rule(KEYS_ADMIN, unlimited_only=True),
    ("GET", "/api/api-keys"): Rule(KEYS_ADMIN, unlimited_only=True),
    ("DELETE", "/api/api-keys/{id:int}"): Rule(KEYS_ADMIN, unlimited_only=True),
    ("GET", "/api/audit-events"): Rule(KEYS_ADMIN, unlimited_only=True),
    # An endpoint hears about messages of every gateway it names (or of all): a key limited
    # to some gateways could make one that names no gateway and read every message.
    ("POST", "/api/webhook-endpoints"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("GET", "/api/webhook-endpoints"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("GET", "/api/webhook-endpoints/{id:int}"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("PATCH", "/api/webhook-endpoints/{id:int}"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("DELETE", "/api/webhook-endpoints/{id:int}"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("POST", "/api/webhook-endpoints/{id:int}/secret/rotate"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("GET", "/api/webhook-endpoints/{id:int}/deliveries"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("POST", "/api/webhook-endpoints/{id:int}/replay"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
    ("POST", "/api/webhook-deliveries/{id:int}/retry"): Rule(WEBHOOKS_ADMIN, unlimited_only=True),
}
# The /api/ routes that need no key: the API's description and the page that shows it
# (they name no secret, and whoever reads them has no key yet). The receipts' routes
# are not API-key routes either: the guard admits them by callback token.
PUBLIC_ROUTES = frozenset({("GET", "/api/openapi.json"), ("GET", "/api/docs"), ("GET", "/api/docs/{asset}")})
# Routes whose {id} is a gateway's: a key limited to some gateways is checked against it.
GATEWAY_PATH = "/api/sms-gateways/{id:int}"

MAY_NOT_USE_GATEWAY = "This key may not use this SMS gateway."


def has(scopes: Iterable[str], scope: str) -> bool:
    """Does a key holding ``scopes`` have ``scope`` (itself or through IMPLIES)?"""
    held = frozenset(scopes)
    return scope in held or any(scope in IMPLIES.get(s, ()) for s in held)


def refusal(method: str, path: str, scopes: Iterable[str], gateway_ids: frozenset[int] | None,
            path_id: int | None) -> str | None:
    """Why a key may not call this route, as the 403 message; None when it may.

    ``path`` is the route's template (``/api/sms-gateways/{id:int}``), ``path_id``
    the id in the request's path. A route missing from ROUTES is refused:
    a route that forgot to name its scope fails closed.
    """
    rule = ROUTES.get((method, path))
    if rule is None:
        return "This key may not do this."
    if not has(scopes, rule.scope):
        return f"This key may not {WHAT[rule.scope]}."
    if rule.unlimited_only and gateway_ids is not None:
        return f"This key may not {rule.what or WHAT[rule.scope]}: it is limited to some gateways."
    if path.startswith(GATEWAY_PATH) and not may_use_gateway(gateway_ids, path_id):
        return MAY_NOT_USE_GATEWAY
    return None


def may_use_gateway(gateway_ids: frozenset[int] | None, gateway_id: int | None) -> bool:
    return gateway_ids is None or gateway_id in gateway_ids


def without_secrets(gateway: dict, scopes: Iterable[str]) -> dict:
    """A gateway as a key may see it: callback token fields only with gateways:admin."""
    if has(scopes, GATEWAYS_ADMIN):
        return gateway
    return {name: value for name, value in gateway.items() if not name.startswith(SECRET_FIELD_PREFIX)}


def parse_scopes(names: Iterable[str]) -> frozenset[str]:
    """Scopes named by a user (CLI or API); "all" is every scope. ValueError names an unknown one."""
    chosen: set[str] = set()
    for name in names:
        name = name.strip()
        if name == EVERY:
            chosen |= ALL
        elif name in ALL:
            chosen.add(name)
        else:
            raise ValueError(f"unknown scope {name!r}; scopes are: {', '.join(SCOPES)} (or {EVERY})")
    return frozenset(chosen)


def ordered(scopes: Iterable[str]) -> list[str]:
    """Scopes in SCOPES order, for output and storage."""
    held = frozenset(scopes)
    return [scope for scope in SCOPES if scope in held]


def grant_refusal(actor_scopes: frozenset[str], actor_gateways: frozenset[int] | None,
                  actor_countries: frozenset[str] | None, scopes: frozenset[str],
                  gateway_ids: frozenset[int] | None, countries: frozenset[str] | None,
                  verb: str = "grant") -> str | None:
    """Why the key ``actor_*`` may not make (or revoke) a key with these limits; None when it may.

    A key never hands out more than it holds: no scope it lacks (a scope it holds
    through IMPLIES counts), no gateway outside its own, no destination outside
    its own allow-list. Otherwise a keys:admin key could mint itself a stronger
    one. (ROUTES already keeps keys limited to gateways away from key routes; the
    gateway rule stays so this function is right on its own.)
    """
    if not all(has(actor_scopes, scope) for scope in scopes):
        return f"This key may not {verb} scopes it does not hold."
    if actor_gateways is not None and (gateway_ids is None or not gateway_ids <= actor_gateways):
        return f"This key may not {verb} gateways it is not limited to."
    if actor_countries is not None and (countries is None or not countries <= actor_countries):
        return f"This key may not {verb} destination countries outside its own."
    return None


def parse_countries(codes: Iterable[str]) -> frozenset[str]:
    """ISO 3166 alpha-2 codes (any case) as libphonenumber knows them; ValueError names a bad one.

    Checked against libphonenumber's regions, as numbers are: "UK" (not ISO) is
    refused rather than stored and never matched.
    """
    import phonenumbers

    chosen = set()
    for code in codes:
        upper = code.strip().upper()
        if upper not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown country {code!r}: use ISO 3166 alpha-2 codes such as US, GB, DE")
        chosen.add(upper)
    return frozenset(chosen)
