"""The OpenAPI 3.1 document, built from what the API runs on: served at ``/api/openapi.json``.

Nothing in it is kept by hand apart from words. The paths and methods are
``api.app.routes()``'s; request bodies and query parameters are the ``Field``
dicts that ``api.validation`` checks them with (``field_schema``), plus the
list fields each module declares beside the code that reads them; each response
object is the ``SHAPE`` its module declares beside the function that shapes it
(``api.openapi_shapes``), each named once under ``components/schemas``
(``component_schemas``); the scope each operation needs is ``api.scopes.ROUTES``.
What is written here, per operation (``operations()``), is only what no code can
say: a summary, which answers it gives, and which declarations it uses. A route
that has no entry there makes ``build`` fail, so a new route is never undocumented.

Public (no API key): the document itself and the page that shows it
(``api.openapi_docs``): it names routes and fields, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from api import (
    audit, batch_sends, events, gateway_reads, gateways, keys, messages, pages, phone, scopes, sending, unmatched,
    webhook_deliveries, webhook_endpoints,
)
from api.openapi_shapes import (
    ID, INTEGER, OBJECT, STRING, Schema, described, enum, extended, nullable, shape,
)
from api.responses import REASONS
from api.validation import Field

TITLE = "smsgw"
PATH_ID = "{id:int}"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
SECURITY_SCHEME = "apiKey"


# --- pure: Field -> JSON Schema ----------------------------------------------------------


def field_schema(spec: Field, *, in_query: bool = False) -> Schema:
    """What ``api.validation.validate`` accepts for one field, as JSON Schema.

    Text is trimmed before it is checked, so a blank value counts as absent: it is
    null for a nullable field and refused for any other (``minLength: 1``). In a
    query string a value is never null, only absent.
    """
    schema: Schema
    if spec.kind in ("string", "text"):
        schema = {"type": "string"}
        if not spec.nullable:
            schema["minLength"] = 1
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
        if spec.choices:
            schema["enum"] = list(spec.choices)
        if spec.pattern is not None:
            schema["pattern"] = spec.pattern.pattern
        if spec.kind == "string":
            schema.setdefault("description", "One line: no control characters.")
    elif spec.kind in ("integer", "number"):
        schema = {"type": spec.kind}
        if spec.min_value is not None:
            schema["minimum"] = spec.min_value
        if spec.max_value is not None:
            schema["maximum"] = spec.max_value
    elif spec.kind == "boolean":
        schema = {"type": "boolean"}
    elif spec.kind == "object":
        schema = {"type": "object"}
    else:
        raise AssertionError(f"unknown field kind {spec.kind!r}")
    if spec.nullable and not in_query:
        schema = nullable(schema)
    return schema


def object_schema(fields: Mapping[str, Field], *, partial: bool = False, lists: Mapping[str, Schema] = {},
                  required_lists: Iterable[str] = (), ignored: Iterable[str] = (),
                  notes: Mapping[str, Mapping[str, Any]] = {}) -> Schema:
    """A request body ``validate(data, fields, partial=...)`` accepts: every field it knows,
    the required ones (none when ``partial``), and no other (an unknown field is a 422).
    ``lists`` are list fields a module checks itself; ``ignored`` names read-only fields a
    client may send back from a GET, which are dropped; ``notes`` adds words to a field."""
    properties: dict[str, Schema] = {}
    for name, spec in fields.items():
        properties[name] = {**field_schema(spec), **notes.get(name, {})}
    properties.update(lists)
    for name in ignored:
        properties[name] = {"description": "Read-only: accepted and ignored, so a GET's answer can be sent back."}
    required = [] if partial else [
        *(name for name, spec in fields.items() if spec.required), *required_lists]
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def query_parameters(fields: Mapping[str, Field], notes: Mapping[str, str] = {}) -> list[Schema]:
    return [{
        "name": name, "in": "query", "required": spec.required,
        "schema": field_schema(spec, in_query=True),
        **({"description": notes[name]} if name in notes else {}),
    } for name, spec in fields.items()]


# --- envelopes ---------------------------------------------------------------------------

ERROR: Schema = {
    "type": "object",
    "description": "Every refusal: a message for people and, for anything a client can correct, "
                   "the problems by field.",
    "required": ["message"],
    "properties": {
        "message": STRING,
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": STRING},
                   "description": "Field name (or body, content_type, Idempotency-Key, messages.N.field) "
                                  "-> problems."},
        "request_id": described(STRING, "The request's id (X-Request-ID), to find it in the logs."),
    },
}
PAGE_META = shape({"limit": INTEGER, "next_cursor": described(nullable(STRING),
                                                              "Pass as cursor for the next page; null on the last.")})
HEALTH = {
    "type": "object", "required": ["status"],
    "properties": {"status": enum(("ok", "unavailable")),
                   "reason": described(STRING, "Why it is unavailable, when smsgw can tell "
                                               "(e.g. run `smsgw migrate`).")},
    "additionalProperties": False,
}
RECEIVED = shape({"message": {"const": "DLR received"}})


def envelope(data: Schema, meta: Schema | None = None) -> Schema:
    """A success: ``{"message": ..., "data": ...}`` (and ``meta`` on lists and batches)."""
    properties = {"message": STRING, "data": data}
    required = ["message", "data"]
    if meta is not None:
        properties["meta"] = meta
        required.append("meta")
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def items(schema: Schema) -> Schema:
    return {"type": "array", "items": schema}


@dataclass(frozen=True)
class Answer:
    """One documented answer of an operation."""

    description: str
    schema: Schema | None = None        # the JSON body; None: ERROR
    content: Mapping[str, Schema] | None = None  # instead of a JSON body
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


def ok_answer(description: str, data: Schema, meta: Schema | None = None, **headers: str) -> Answer:
    return Answer(description, envelope(data, meta), headers={k.replace("_", "-"): v for k, v in headers.items()})


def refusal(description: str) -> Answer:
    return Answer(description)


# --- operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    schema: Schema
    forms: bool = True       # also accepted as a form (urlencoded or multipart)
    optional: bool = False   # an empty body is fine


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    answers: Mapping[int, Answer]
    description: str = ""
    body: Body | None = None
    query: list[Schema] = field(default_factory=list)
    headers: list[Schema] = field(default_factory=list)
    paged: bool = False
    public: bool = False     # no API key (the receipts: the guard checks their token)
    links: Mapping[int, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)


def link(operation_id: str, pointer: str = "/data/id", description: str = "") -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"id": f"$response.body#{pointer}"},
            **({"description": description} if description else {})}


def ref(name: str) -> Schema:
    """A schema declared once, under ``components/schemas`` (``component_schemas``)."""
    return {"$ref": f"#/components/schemas/{name}"}


# The objects answers carry, by the names the document (and a generated client) gives them.
GATEWAY, MESSAGE, EVENT, UNMATCHED = ref("Gateway"), ref("Message"), ref("MessageEvent"), ref("UnmatchedReceipt")
AUDIT_EVENT, KEY, KEY_WITH_SECRET = ref("AuditEvent"), ref("ApiKey"), ref("NewApiKey")
ENDPOINT, ENDPOINT_WITH_SECRET, DELIVERY = ref("WebhookEndpoint"), ref("NewWebhookEndpoint"), ref("WebhookDelivery")
BATCH, PAGE, DELETED = ref("Batch"), ref("PageMeta"), ref("Deleted")
GATEWAY_NOTES = {
    "server_host": {"description": "A host name or an IP address, without scheme, port or path."},
    "password": {"description": "HTTP Basic Auth for sending. Write-only: no answer ever shows it."},
    "callback_token": {"description": "Generated (32 random bytes) unless given."},
    "meta": {"description": "Any JSON object; not in a form."},
}
SEND_NOTES = {
    "to_number": {"description": "International format, + and the country code first (E.164 once stored): "
                                 "+14155550123. Short codes and premium-rate numbers are refused.",
                  "pattern": phone.PUNCTUATED.pattern, "examples": ["+14155550123"]},
    "from_sender": {"description": "Required when the gateway has no default_sender_id.", "examples": ["ACME"]},
    "message": {"description": "GSM-7 or UCS-2, worked out from the text; long texts go as several segments.",
                "examples": ["Your code is 4711."]},
    "client_reference": {"description": "Your own reference, to find the message by (?client_reference=).",
                         "examples": ["order-42"]},
    "callback_url": {"description": "An http(s) URL for receipts; smsgw's own (with the gateway's token) when absent."},
    "send_at": {"description": "RFC 3339 with its offset: sent then (at most a year ahead). In the past: now.",
                "examples": ["2026-11-27T18:00:00Z"]},
    "validity_period": {"description": "Seconds; not handed to the gateway by then, it fails as expired. "
                                       "Absent: the gateway's default_validity_seconds; null: none."},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "The same key with the same request within 24 hours answers the original again "
                   "(Idempotent-Replayed: true) and sends nothing; with another request it is a 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": sending.IDEMPOTENCY_KEY.pattern},
}
PREFER = {
    "name": "Prefer", "in": "header", "required": False,
    "description": "respond-async: 202 once stored; the dispatcher sends it.",
    "schema": {"type": "string", "examples": ["respond-async"]},
}
# Read leniently (api.receipts.parse_receipt): a number is read as its text; an object, a
# list, a boolean or a blank counts as absent. A gateway is never refused for a field's form.
RECEIPT_FIELDS = {
    "message_id": {"description": "The gateway's id of the message (else id, else messageId)."},
    "id": {},
    "messageId": {},
    "status": {"description": "The delivery status (else message_status); delivered when absent."},
    "message_status": {},
}
RECEIPT_ANSWERS = {
    200: Answer("Received and stored (matched to its message, parked until it is known, or ignored): never "
                "sent again. Jasmin's thrower (or Accept: text/plain) gets ACK/Jasmin as text.",
                content={JSON: RECEIVED, "text/plain": {"type": "string", "const": "ACK/Jasmin"}}),
    503: Answer("Not stored now (the database is away): send it again.", headers={"Retry-After": "Seconds."}),
}
SEND_ANSWERS = {
    200: ok_answer("The Idempotency-Key was used with this request already: the original message; nothing sent.",
                   MESSAGE, Idempotent_Replayed="true"),
    201: ok_answer("The gateway took it: submitted.", MESSAGE),
    202: ok_answer("Stored (Prefer: respond-async, or send_at ahead): the dispatcher sends it.", MESSAGE,
                   Preference_Applied="respond-async"),
    403: refusal("The key may not send to this number's country (errors.to_number says where it may)."),
    409: refusal("The gateway is inactive."),
    502: ok_answer("The gateway refused or failed the message: it is failed (see failure_reason).", MESSAGE),
    503: ok_answer("smsgw cannot read the gateway's password (SMSGW_SECRET_KEY): failed, never sent.", MESSAGE),
    504: ok_answer("The gateway did not answer in time: the message is failed.", MESSAGE),
}
MESSAGE_LINKS = {"getMessage": link("getMessage"), "cancelMessage": link("cancelMessage"),
                 "listMessageEvents": link("listMessageEvents")}
GATEWAY_LINKS = {"getGateway": link("getGateway"), "updateGateway": link("updateGateway"),
                 "sendMessage": link("sendMessage"), "listGatewayMessages": link("listGatewayMessages")}
ENDPOINT_LINKS = {"getWebhookEndpoint": link("getWebhookEndpoint"),
                  "listWebhookDeliveries": link("listWebhookDeliveries")}


def health_operation(operation_id: str, summary: str, description: str) -> Operation:
    return Operation(operation_id, "health", summary, {
        200: Answer("Yes.", ref("Health")), 503: Answer("No, and why when smsgw can tell.", ref("Health"))},
        description=description, public=True)


def component_schemas(max_batch: int) -> dict[str, Schema]:
    """Every named schema: the response objects as their modules declare them (``SHAPE``), and
    the request bodies as the Field dicts that validate them make them."""
    send = object_schema(sending.SEND_SCHEMA, notes=SEND_NOTES)
    return {
        "Error": ERROR,
        "Gateway": gateway_reads.SHAPE,
        "Message": messages.SHAPE,
        "MessageEvent": events.SHAPE,
        "UnmatchedReceipt": unmatched.SHAPE,
        "AuditEvent": audit.SHAPE,
        "ApiKey": keys.SHAPE,
        "NewApiKey": extended(keys.SHAPE, {"key": described(STRING, "The key itself: shown only this once.")}),
        "WebhookEndpoint": webhook_endpoints.SHAPE,
        "NewWebhookEndpoint": extended(webhook_endpoints.SHAPE, {
            "secret": described(STRING, "The signing secret (whsec_...): shown only this once.")}),
        "WebhookDelivery": webhook_deliveries.SHAPE,
        "Batch": batch_sends.SHAPE,
        "BatchMeta": batch_sends.META,
        "PageMeta": PAGE_META,
        "Deleted": shape({"id": ID}),
        "Health": HEALTH,
        "GatewayCreate": object_schema(gateways.SCHEMA, ignored=sorted(gateways.READ_ONLY), notes=GATEWAY_NOTES),
        "GatewayUpdate": object_schema(gateways.SCHEMA, partial=True, ignored=sorted(gateways.READ_ONLY),
                                       notes=GATEWAY_NOTES),
        "SendRequest": send,
        "BatchRequest": {"type": "object", "required": ["messages"], "additionalProperties": False, "properties": {
            "messages": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": ref("SendRequest"),
                         "description": "At most SMSGW_MAX_BATCH. A problem is keyed messages.N.field."}}},
        "ApiKeyCreate": object_schema({"name": keys.NAME}, lists=keys.LIST_FIELDS, required_lists=keys.REQUIRED_LISTS),
        "WebhookEndpointCreate": object_schema(
            {name: spec for name, spec in webhook_endpoints.SCHEMA.items() if name in webhook_endpoints.CREATE_FIELDS},
            lists=webhook_endpoints.LIST_FIELDS, required_lists=("events",)),
        "WebhookEndpointUpdate": object_schema(webhook_endpoints.SCHEMA, partial=True,
                                               lists=webhook_endpoints.LIST_FIELDS,
                                               ignored=sorted(webhook_endpoints.READ_ONLY)),
    }


def operations() -> dict[tuple[str, str], Operation]:
    """What no code says about each route: keyed by method and route path as in ``routes()``."""
    gateway_body, gateway_patch, send_body = ref("GatewayCreate"), ref("GatewayUpdate"), ref("SendRequest")
    update_gateway = Operation(
        "updateGateway", "gateways", "Update a gateway: the fields given, the others unchanged",
        {200: ok_answer("Updated.", GATEWAY)}, body=Body(gateway_patch),
        description="Changing server_host, server_port, use_ssl, api_path or provider_type needs password in the "
                    "same request: the stored password is only ever sent where it was given for. A callback_token "
                    "given here replaces the current one at once (rotate for a grace period).")
    endpoint_body, endpoint_patch = ref("WebhookEndpointCreate"), ref("WebhookEndpointUpdate")
    receipt = {
        "GET": Operation("receiveReceiptGet{}", "receipts", "A delivery receipt, its fields in the query string",
                         RECEIPT_ANSWERS, public=True,
                         query=[{"name": name, "in": "query", "required": False, "schema": schema}
                                for name, schema in RECEIPT_FIELDS.items()],
                         description="As Jasmin sends it with dlr-method=GET. Not an API key: the guard in front "
                                     "checks the gateway's callback token (?token=) before the API sees it."),
        "POST": Operation("receiveReceipt{}", "receipts", "A delivery receipt, its fields in a JSON or form body",
                          RECEIPT_ANSWERS, public=True,
                          body=Body({"type": "object", "properties": RECEIPT_FIELDS}, optional=True),
                          description="Not an API key: the guard in front checks the gateway's callback token "
                                      "(?token=) before the API sees it. Other fields are kept with the receipt."),
    }

    def receipt_operation(method: str, suffix: str) -> Operation:
        return replace(receipt[method], operation_id=receipt[method].operation_id.format(suffix))

    return {
        ("GET", "/webhooks/jasmin/{id:int}/dlr"): receipt_operation("GET", "Jasmin"),
        ("POST", "/webhooks/jasmin/{id:int}/dlr"): receipt_operation("POST", "Jasmin"),
        ("GET", "/api/sms-gateways/{id:int}/dlr"): receipt_operation("GET", "Http"),
        ("POST", "/api/sms-gateways/{id:int}/dlr"): receipt_operation("POST", "Http"),
        ("GET", "/healthz"): health_operation(
            "healthz", "Alive: the database answers with its schema in place",
            "503 with a reason when the schema is missing (run `smsgw migrate`)."),
        ("GET", "/readyz"): health_operation(
            "readyz", "Ready for traffic", "503 while it is not, with the reason when smsgw can tell."),
        ("GET", "/api/openapi.json"): Operation(
            "getOpenApiDocument", "documentation", "This document", {
                200: Answer("The OpenAPI 3.1 document.", OBJECT)}, public=True),
        ("GET", "/api/docs"): Operation(
            "getDocsPage", "documentation", "This document as a page to read and try (Swagger UI)", {
                200: Answer("An HTML page; its scripts and styles are served by the API itself.",
                            content={"text/html": STRING})}, public=True),
        ("GET", "/api/docs/{asset}"): Operation(
            "getDocsAsset", "documentation", "A file of the docs page", {
                200: Answer("The file.", content={"text/css": STRING, "text/javascript": STRING,
                                                  "image/png": STRING, JSON: OBJECT}),
                404: refusal("No such file: only these are served.")}, public=True),
        ("GET", "/api/sms-gateways"): Operation(
            "listGateways", "gateways", "List gateways", {200: ok_answer("Every gateway the key may use.",
                                                                      items(GATEWAY))},
            query=query_parameters(gateway_reads.FILTERS, {
                "search": "Part of the name, server_host or provider_type, ignoring case."})),
        ("POST", "/api/sms-gateways"): Operation(
            "createGateway", "gateways", "Create a gateway", {201: ok_answer("Created.", GATEWAY)},
            body=Body(gateway_body), links={201: GATEWAY_LINKS}),
        ("GET", "/api/sms-gateways/{id:int}"): Operation(
            "getGateway", "gateways", "One gateway", {200: ok_answer("The gateway.", GATEWAY)}),
        ("PATCH", "/api/sms-gateways/{id:int}"): update_gateway,
        ("PUT", "/api/sms-gateways/{id:int}"): replace(update_gateway, operation_id="replaceGateway",
                                                       summary="Update a gateway (as PATCH)"),
        ("DELETE", "/api/sms-gateways/{id:int}"): Operation(
            "deleteGateway", "gateways", "Delete a gateway that has sent nothing", {
                200: ok_answer("Deleted.", DELETED),
                409: refusal("It has messages: its delivery history. Deactivate it instead (is_active false).")}),
        ("POST", "/api/sms-gateways/{id:int}/callback-token/rotate"): Operation(
            "rotateCallbackToken", "gateways", "A new callback token; previous ones keep a grace period", {
                200: ok_answer("Rotated: the new token, and until when each previous one is accepted.", GATEWAY),
                409: refusal("Too many previous tokens in grace: rotate with grace_seconds 0, or later.")},
            body=Body(object_schema(gateways.ROTATE_SCHEMA, notes={"grace_seconds": {
                "description": "How long previous tokens stay valid; default SMSGW_CALLBACK_TOKEN_GRACE (24 h); "
                               "0 revokes them all now."}}), optional=True)),
        ("POST", "/api/sms-gateways/{id:int}/send"): Operation(
            "sendMessage", "messages", "Send one SMS", SEND_ANSWERS, body=Body(send_body),
            headers=[IDEMPOTENCY_KEY, PREFER],
            links={201: MESSAGE_LINKS, 202: MESSAGE_LINKS}),
        ("GET", "/api/sms-gateways/{id:int}/messages"): Operation(
            "listGatewayMessages", "messages", "A gateway's messages, newest first",
            {200: ok_answer("A page of messages.", items(MESSAGE), PAGE)},
            query=query_parameters(messages.FILTERS, {"to_number": "Normalised as a send's is: write + as %2B."}),
            paged=True),
        ("POST", "/api/sms-gateways/{id:int}/messages"): Operation(
            "sendBatch", "messages", "Send a batch: all stored or none, then sent by the dispatcher", {
                202: ok_answer("Every message stored, in request order.", items(MESSAGE), ref("BatchMeta")),
                200: ok_answer("The Idempotency-Key was used with this batch already: the original messages.",
                               items(MESSAGE), ref("BatchMeta"), Idempotent_Replayed="true"),
                403: refusal("The key may not send to some of these numbers (messages.N.to_number); none stored."),
                409: refusal("The gateway is inactive.")},
            body=Body(ref("BatchRequest"), forms=False),
            headers=[IDEMPOTENCY_KEY], links={202: {"getBatch": link("getBatch", "/meta/batch_id")}}),
        ("GET", "/api/sms-batches/{id:int}"): Operation(
            "getBatch", "messages", "A batch: its messages counted by state",
            {200: ok_answer("The batch.", BATCH)}),
        ("GET", "/api/sms-messages/{id:int}"): Operation(
            "getMessage", "messages", "One message", {200: ok_answer("The message.", MESSAGE)},
            description="A message of a gateway the key may not use is a 404, as an unknown id."),
        ("POST", "/api/sms-messages/{id:int}/cancel"): Operation(
            "cancelMessage", "messages", "Cancel a message no gateway call has begun for", {
                200: ok_answer("Canceled: it will not be sent.", MESSAGE),
                409: refusal("A gateway call has begun (or it has ended): it can no longer be called back.")}),
        ("GET", "/api/sms-messages/{id:int}/events"): Operation(
            "listMessageEvents", "messages", "A message's history: receipts and state changes, oldest first",
            {200: ok_answer("A page of events.", items(EVENT), PAGE)}, paged=True),
        ("GET", "/api/sms-gateways/{id:int}/unmatched-dlrs"): Operation(
            "listUnmatchedReceipts", "receipts", "Receipts that arrived before their message was known",
            {200: ok_answer("A page of them, newest first.", items(UNMATCHED), PAGE)},
            query=query_parameters(unmatched.FILTERS), paged=True),
        ("POST", "/api/api-keys"): Operation(
            "createApiKey", "keys", "Make an API key", {
                201: ok_answer("Made: the key is shown only this once.", KEY_WITH_SECRET),
                403: refusal("A key never makes a key stronger than itself.")},
            body=Body(ref("ApiKeyCreate"), forms=False),
            links={201: {"revokeApiKey": link("revokeApiKey")}}),
        ("GET", "/api/api-keys"): Operation(
            "listApiKeys", "keys", "Every key (never the key or its hash)", {200: ok_answer("The keys.",
                                                                                       items(KEY))}),
        ("DELETE", "/api/api-keys/{id:int}"): Operation(
            "revokeApiKey", "keys", "Revoke a key", {
                200: ok_answer("Revoked.", KEY),
                403: refusal("A key never revokes a key stronger than itself."),
                404: refusal("No active key has this id.")}),
        ("GET", "/api/audit-events"): Operation(
            "listAuditEvents", "audit", "The audit trail, newest first",
            {200: ok_answer("A page of events.", items(AUDIT_EVENT), PAGE)},
            query=query_parameters(audit.FILTERS), paged=True),
        ("POST", "/api/webhook-endpoints"): Operation(
            "createWebhookEndpoint", "webhooks", "Make a status webhook endpoint", {
                201: ok_answer("Made: the signing secret is shown only this once.", ENDPOINT_WITH_SECRET)},
            body=Body(endpoint_body, forms=False), links={201: ENDPOINT_LINKS},
            description="The URL must be https and public unless SMSGW_WEBHOOK_ALLOW_HTTP / "
                        "SMSGW_WEBHOOK_ALLOW_PRIVATE allow otherwise."),
        ("GET", "/api/webhook-endpoints"): Operation(
            "listWebhookEndpoints", "webhooks", "Every webhook endpoint",
            {200: ok_answer("The endpoints.", items(ENDPOINT))}),
        ("GET", "/api/webhook-endpoints/{id:int}"): Operation(
            "getWebhookEndpoint", "webhooks", "One webhook endpoint",
            {200: ok_answer("The endpoint.", ENDPOINT)}),
        ("PATCH", "/api/webhook-endpoints/{id:int}"): Operation(
            "updateWebhookEndpoint", "webhooks", "Change a webhook endpoint: the fields given",
            {200: ok_answer("Updated.", ENDPOINT)}, body=Body(endpoint_patch, forms=False),
            description="is_active true re-enables one smsgw disabled, and its failure count starts afresh."),
        ("DELETE", "/api/webhook-endpoints/{id:int}"): Operation(
            "deleteWebhookEndpoint", "webhooks", "Delete a webhook endpoint and its deliveries",
            {200: ok_answer("Deleted.", DELETED)}),
        ("POST", "/api/webhook-endpoints/{id:int}/secret/rotate"): Operation(
            "rotateWebhookSecret", "webhooks", "A new signing secret; the previous one signs beside it for a while",
            {200: ok_answer("Rotated: the new secret is shown only this once.", ENDPOINT_WITH_SECRET)},
            body=Body(object_schema(webhook_endpoints.ROTATE_SCHEMA, notes={"grace_seconds": {
                "description": "Default SMSGW_WEBHOOK_SECRET_GRACE; 0 stops the previous one now."}}),
                optional=True)),
        ("GET", "/api/webhook-endpoints/{id:int}/deliveries"): Operation(
            "listWebhookDeliveries", "webhooks", "An endpoint's deliveries, newest first",
            {200: ok_answer("A page of deliveries.", items(DELIVERY), PAGE)},
            query=query_parameters(webhook_deliveries.FILTERS), paged=True),
        ("POST", "/api/webhook-endpoints/{id:int}/replay"): Operation(
            "replayWebhookEvents", "webhooks", "Queue again every event of a time window", {
                202: ok_answer("Queued (how many).", shape({"queued": INTEGER})),
                409: refusal("The endpoint is not active: enable it first.")},
            query=[{"name": "since", "in": "query", "required": True,
                    "schema": {"type": "string", "format": "date-time"},
                    "description": f"Required: {webhook_deliveries.TIME_EXAMPLE}; not in the future."},
                   {"name": "until", "in": "query", "required": False,
                    "schema": {"type": "string", "format": "date-time"},
                    "description": "Optional, after since."}]),
        ("POST", "/api/webhook-deliveries/{id:int}/retry"): Operation(
            "retryWebhookDelivery", "webhooks", "Send a delivery again now, its schedule started over", {
                200: ok_answer("Queued.", DELIVERY),
                409: refusal("It is being attempted right now, or its endpoint is not active.")}),
    }


# --- the document ------------------------------------------------------------------------


def openapi_path(route_path: str) -> str:
    """``/api/sms-gateways/{id:int}`` -> ``/api/sms-gateways/{id}``."""
    return route_path.replace(PATH_ID, "{id}")


def documented_methods(route) -> list[str]:
    """A route's methods but HEAD, which Starlette answers for every GET."""
    return sorted(method for method in (getattr(route, "methods", None) or ()) if method != "HEAD")


def build(routes: Iterable[Any], *, version: str, max_batch: int) -> dict[str, Any]:
    """The document for ``routes`` (``api.app.routes()``); KeyError names a route with no entry."""
    table = operations()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in documented_methods(route):
            entry = table.get((method, route.path))
            if entry is None:
                raise KeyError(f"{method} {route.path} has no entry in api.openapi.operations()")
            paths.setdefault(openapi_path(route.path), {})[method.lower()] = operation(method, route.path, entry)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": version,
            "description": DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "An API key (smsgw_...): `smsgw apikey create`, or SMSGW_ADMIN_KEY."}},
            "schemas": component_schemas(max_batch),
        },
    }


DESCRIPTION = (
    "Send SMS through the gateways you run and know what became of every message.\n\n"
    "A success is `{\"message\", \"data\"}` (lists and batches add `meta`); a refusal is "
    "`{\"message\", \"errors\"?}`, where `errors` maps each field to its problems. Every `/api/` "
    "operation but this document, its page and the receipts needs `Authorization: Bearer <API key>` "
    "holding the scope the operation names (`x-scope`). Bodies are JSON or, where the operation says so, "
    "a form (numbers and booleans as text: true/false, 1/0, yes/no, on/off). An unknown field is a 422."
)
TAGS = (
    ("gateways", "The SMS gateways smsgw sends through."),
    ("messages", "Sending, and what became of each message."),
    ("receipts", "Delivery receipts from gateways, admitted by callback token (the guard)."),
    ("keys", "API keys."),
    ("audit", "Who did what, chained by hash."),
    ("webhooks", "Status webhooks: endpoints, deliveries, replays."),
    ("health", "For load balancers and supervisors."),
    ("documentation", "This document and its page."),
)


def operation(method: str, route_path: str, entry: Operation) -> dict[str, Any]:
    """One operation object: ``entry``'s words, and what the code decides (scope, id, errors)."""
    has_id = PATH_ID in route_path
    has_asset = "{asset}" in route_path
    result: dict[str, Any] = {"operationId": entry.operation_id, "tags": [entry.tag], "summary": entry.summary}
    description = entry.description
    parameters: list[Schema] = []
    if has_id:
        parameters.append({"name": "id", "in": "path", "required": True,
                           "schema": {"type": "integer", "minimum": 0, "examples": [1]}})
    if has_asset:
        from api.openapi_docs import asset_names  # (that module serves this one: imported when built)

        parameters.append({"name": "asset", "in": "path", "required": True, "schema": enum(asset_names())})
    parameters += entry.query
    if entry.paged:
        parameters += query_parameters(pages.PAGE_FIELDS, {
            "limit": f"1 to {pages.MAX_PAGE}; {pages.DEFAULT_PAGE} by default.",
            "cursor": "meta.next_cursor of the page before."})
    parameters += entry.headers
    if parameters:
        result["parameters"] = parameters
    answers: dict[int, Answer] = dict(entry.answers)
    rule = scopes.ROUTES.get((method, route_path))
    if not entry.public:
        if rule is None:
            raise KeyError(f"{method} {route_path} is private but api.scopes.ROUTES names no scope for it")
        result["security"] = [{SECURITY_SCHEME: []}]
        result["x-scope"] = rule.scope
        result["x-unlimited-only"] = rule.unlimited_only
        needs = f"Needs the scope `{rule.scope}`"
        if rule.unlimited_only:
            needs += ", in a key not limited to some gateways"
        description = f"{needs}.\n\n{description}".strip()
        answers.setdefault(401, Answer("No valid API key.", headers={"WWW-Authenticate": "Bearer realm=\"smsgw\"."}))
        answers.setdefault(403, refusal("The key lacks the scope, or may not use this gateway."))
    else:
        result["security"] = []
    if has_id and not route_path.endswith("/dlr"):
        answers.setdefault(404, refusal("No such one (or one the key may not see)."))
    elif has_id:
        answers.setdefault(404, refusal("The id is not a number."))
    if entry.body is not None:
        content = {JSON: {"schema": entry.body.schema}}
        if entry.body.forms:
            content[FORM] = {"schema": entry.body.schema}
            content[MULTIPART] = {"schema": entry.body.schema}
        result["requestBody"] = {"required": not entry.body.optional, "content": content}
        answers.setdefault(400, refusal("The body is not valid JSON (or a form), or not an object."))
        answers.setdefault(413, refusal("The body is larger than SMSGW_MAX_BODY_BYTES "
                                        "(a batch may be larger: 8 KiB a message)."))
        answers.setdefault(415, refusal("The Content-Type is neither JSON nor"
                                        + (" a form." if entry.body.forms else " (here) accepted: send JSON.")))
    if entry.body is not None or entry.query or entry.paged or entry.headers:
        if not entry.public:
            answers.setdefault(422, refusal("The given data was invalid: errors lists each problem by field."))
    if description:
        result["description"] = description
    result["responses"] = {str(status): answer_object(status, answer) for status, answer in sorted(answers.items())}
    for status, named in entry.links.items():
        result["responses"][str(status)]["links"] = dict(named)
    return result


def answer_object(status: int, answer: Answer) -> dict[str, Any]:
    found: dict[str, Any] = {"description": answer.description or REASONS.get(status, "")}
    if answer.content is not None:
        found["content"] = {kind: {"schema": schema} for kind, schema in answer.content.items()}
    else:
        schema = answer.schema if answer.schema is not None else ref("Error")
        found["content"] = {JSON: {"schema": schema}}
    if answer.headers:
        found["headers"] = {name: {"description": text, "schema": STRING} for name, text in answer.headers.items()}
    return found


def document(app) -> dict[str, Any]:
    """The app's document, built once per process (routes and settings do not change)."""
    built = getattr(app.state, "openapi", None)
    if built is None:
        from api.cli import version

        built = app.state.openapi = build(app.routes, version=version(), max_batch=app.state.settings.max_batch)
    return built
