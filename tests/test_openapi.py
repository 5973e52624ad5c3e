"""The OpenAPI document and its page: valid OpenAPI 3.1, one operation for each route
and no other, each response shape true to the function that shapes it, request
schemas true to the validation they describe, and a docs page whose every file
comes from the API itself. (Schemathesis holds the live API to the document:
tests/test_schemathesis.py.)"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from api import (
    audit, clock, events, gateway_reads, keys, messages, openapi, scopes, unmatched, webhook_deliveries,
    webhook_endpoints,
)
from api.app import routes
from api.gateways import SCHEMA as GATEWAY_SCHEMA
from api.sending import SEND_SCHEMA
from api.tables import (
    Timestamp, api_keys, audit_events, events as events_table, gateways, messages as messages_table, unmatched_receipts,
    webhook_deliveries as deliveries_table, webhook_endpoints as endpoints_table,
)
from api.validation import Field, ValidationFailed, validate


# --- the document as served -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(api) -> dict:
    """The document as a client without a key gets it."""
    response = httpx.get(api.url + "/api/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_the_served_document_is_valid_openapi_3_1(served):
    validate_spec(served)
    assert served["openapi"].startswith("3.1.")


def deref(document: dict, schema: dict) -> dict:
    """The schema a ``$ref`` names (the document declares each object once, by name)."""
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def route_operations() -> set[tuple[str, str]]:
    return {(method, openapi.openapi_path(route.path)) for route in routes()
            for method in openapi.documented_methods(route)}


def test_every_route_has_its_operations_in_the_document_and_nothing_else(served):
    documented = {(method.upper(), path) for path, item in served["paths"].items() for method in item}
    assert documented == route_operations()
    assert len(route_operations()) > 30  # not an empty match of two empty sets


def test_a_route_with_no_entry_fails_the_build_instead_of_going_undocumented():
    from starlette.routing import Route

    with pytest.raises(KeyError, match="GET /api/not-documented"):
        openapi.build([*routes(), Route("/api/not-documented", lambda r: None)], version="0", max_batch=1)


def test_readyz_is_documented_as_soon_as_the_route_exists():
    """/readyz comes from another part of issue 14; its entry waits for it."""
    from starlette.routing import Route

    built = openapi.build([*routes(), Route("/readyz", lambda r: None)], version="0", max_batch=1)
    readyz = built["paths"]["/readyz"]["get"]
    assert readyz["security"] == [] and set(readyz["responses"]) == {"200", "503"}


def test_each_private_operation_names_the_scope_the_api_enforces(served):
    for (method, path), rule in scopes.ROUTES.items():
        operation = served["paths"][openapi.openapi_path(path)][method.lower()]
        assert operation["x-scope"] == rule.scope
        assert operation["security"] == [{openapi.SECURITY_SCHEME: []}]
        assert rule.scope in operation["description"]
        assert {"401", "403"} <= set(operation["responses"])
    assert served["components"]["securitySchemes"][openapi.SECURITY_SCHEME] == {
        **served["components"]["securitySchemes"][openapi.SECURITY_SCHEME], "type": "http", "scheme": "bearer"}


def test_the_operations_without_a_key_are_the_docs_the_receipts_and_health_and_no_other(served):
    public = {(method.upper(), path) for path, item in served["paths"].items() for method, operation in item.items()
              if not operation["security"]}
    docs = {(method, openapi.openapi_path(path)) for method, path in scopes.PUBLIC_ROUTES}
    receipts = {(method, path) for method, path in route_operations() if path.endswith("/dlr")}
    health = {(method, path) for method, path in route_operations() if path in ("/healthz", "/readyz")}
    assert public == docs | receipts | health
    assert len(receipts) == 4 and len(docs) == 3


def test_the_document_and_the_docs_page_need_no_key_while_the_api_does(api, anonymous):
    for path in ("/api/openapi.json", "/api/docs"):
        assert anonymous.get(path).status_code == 200
    refused = anonymous.get("/api/sms-gateways")
    assert refused.status_code == 401


def test_each_object_is_declared_once_by_name_and_every_name_is_used(served):
    text = json.dumps(served["paths"]) + json.dumps(served["components"]["schemas"])
    named = set(served["components"]["schemas"])
    assert set(re.findall(r'"#/components/schemas/(\w+)"', text)) == named
    assert deref(served, {"$ref": "#/components/schemas/Gateway"}) == gateway_reads.SHAPE
    assert deref(served, {"$ref": "#/components/schemas/Message"}) == messages.SHAPE


def test_every_error_answer_has_the_contracts_shape(served):
    error = served["components"]["schemas"]["Error"]
    assert error["required"] == ["message"]
    assert set(error["properties"]) == {"message", "errors", "request_id"}
    assert error.get("additionalProperties", True) is not False  # room for what later versions add
    # every refusal is an Error, but health's 503 (its own shape) and a send's 502-504 (the message, failed)
    for path, item in served["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if int(status) < 400:
                    continue
                schema = answer["content"]["application/json"]["schema"]
                if path in ("/healthz", "/readyz"):
                    assert schema == {"$ref": "#/components/schemas/Health"}
                elif path == "/api/sms-gateways/{id}/send" and status in ("502", "503", "504"):
                    assert schema["properties"]["data"] == {"$ref": "#/components/schemas/Message"}
                else:
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    # a validation failure as the API sends it fits the schema
    jsonschema.validate({"message": "The given data was invalid.", "errors": {"name": ["The name field is required."]},
                         "request_id": "abc"}, error)


def test_the_contract_says_what_validation_refuses(served):
    create = served["paths"]["/api/sms-gateways"]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "403", "413", "415", "422"}
    body = deref(served, create["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["required"]) == {name for name, spec in GATEWAY_SCHEMA.items() if spec.required}
    assert body["additionalProperties"] is False
    assert set(create["requestBody"]["content"]) == {"application/json", "application/x-www-form-urlencoded",
                                                     "multipart/form-data"}
    send = served["paths"]["/api/sms-gateways/{id}/send"]["post"]
    assert set(send["responses"]) >= {"200", "201", "202", "403", "404", "409", "422", "502", "503", "504"}
    assert {p["name"] for p in send["parameters"]} == {"id", "Idempotency-Key", "Prefer"}
    listing = served["paths"]["/api/sms-gateways/{id}/messages"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"id", *messages.FILTERS, "limit", "cursor"}
    receipt = served["paths"]["/webhooks/jasmin/{id}/dlr"]["post"]["responses"]["200"]["content"]
    assert receipt["text/plain"]["schema"]["const"] == "ACK/Jasmin"


def test_the_batch_limit_is_the_running_settings(served, api):
    def limit(document: dict) -> int:
        body = document["paths"]["/api/sms-gateways/{id}/messages"]["post"]["requestBody"]["content"]
        return deref(document, body["application/json"]["schema"])["properties"]["messages"]["maxItems"]

    assert limit(served) == 1000  # SMSGW_MAX_BATCH's default
    assert limit(openapi.build(routes(), version="0", max_batch=7)) == 7


# --- request schemas: generated from the Field dicts that validate -------------------


def test_a_field_becomes_the_json_schema_of_what_validate_accepts():
    assert openapi.field_schema(Field("string", required=True, max_length=5)) == {
        "type": "string", "minLength": 1, "maxLength": 5, "description": "One line: no control characters."}
    assert openapi.field_schema(Field("integer", nullable=True, min_value=1, max_value=9)) == {
        "type": ["integer", "null"], "minimum": 1, "maximum": 9}
    assert openapi.field_schema(Field("string", nullable=True, choices=("a", "b")), in_query=True) == {
        "type": "string", "enum": ["a", "b"], "description": "One line: no control characters."}
    assert openapi.field_schema(Field("text", max_length=9)) == {"type": "string", "minLength": 1, "maxLength": 9}
    assert openapi.field_schema(Field("object", nullable=True)) == {"type": ["object", "null"]}


VALID_GATEWAY = {"name": "g", "provider_type": "http", "server_host": "127.0.0.1", "server_port": 80,
                 "api_path": "/send", "username": None, "password": "pw", "default_sender_id": "ACME",
                 "callback_token": "t" * 24, "is_active": True, "use_ssl": False, "notes": None, "meta": {"a": 1},
                 "throughput_per_second": 2.5, "max_in_flight": 3, "max_attempts": 2, "retry_ambiguous": True,
                 "default_validity_seconds": 60}


@pytest.mark.parametrize("schema, valid, invalid", [
    (GATEWAY_SCHEMA, VALID_GATEWAY, [
        {"server_host": "h"}, {**VALID_GATEWAY, "server_port": 0}, {**VALID_GATEWAY, "provider_type": "smpp"},
        {**VALID_GATEWAY, "name": ""}, {**VALID_GATEWAY, "nickname": "x"}, {**VALID_GATEWAY, "username": "a:b"},
        {**VALID_GATEWAY, "max_attempts": 51}, {**VALID_GATEWAY, "is_active": "yes"}, {**VALID_GATEWAY, "meta": []},
        {**VALID_GATEWAY, "name": "n" * 256}]),
    (SEND_SCHEMA, {"to_number": "+14155550123", "message": "hi", "validity_period": None}, [
        {"message": "hi"}, {"to_number": "+14155550123", "message": "m" * 1601},
        {"to_number": "+14155550123", "message": "hi", "validity_period": 0},
        {"to_number": "14155550123", "message": "hi"}]),
])
def test_the_generated_body_schema_agrees_with_validation(schema, valid, invalid):
    """What the schema accepts, validation accepts; what the schema refuses, validation refuses."""
    body = openapi.object_schema(schema, notes=openapi.SEND_NOTES if schema is SEND_SCHEMA else {})
    jsonschema.validate(valid, body)
    validate(valid, schema)
    for data in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, body)
        with pytest.raises(ValidationFailed):
            validate(data, schema)


def test_a_partial_body_requires_nothing_and_read_only_fields_are_accepted():
    body = openapi.object_schema(GATEWAY_SCHEMA, partial=True, ignored=["id", "created_at"])
    assert "required" not in body
    jsonschema.validate({"id": 5, "created_at": "then", "notes": None}, body)
    assert validate({"id": 5, "created_at": "then", "notes": None}, GATEWAY_SCHEMA, partial=True,
                    ignored=frozenset({"id", "created_at"})) == {"notes": None}


# --- response shapes: declared beside the function that shapes them --------------------

NOW = clock.now_iso()
# Values for the JSON columns (their type alone cannot say what they hold).
JSON_VALUES = {
    "previous_callback_tokens": [{"token": "o" * 24, "expires_at": clock.iso_after(60)}],
    "meta": {"region": "eu"}, "remote_response": {"data": "Success"}, "payload": {"id": "x"},
    "details": {"fields": ["name"]}, "scopes": ["messages:send"], "gateway_ids": [1],
    "allowed_countries": ["US"], "events": ["message.delivered"],
}
TEXT_VALUES = {"state": "submitted", "kind": "receipt", "status": "pending", "provider_type": "jasmin",
               "action": "key.created", "event_type": "message.delivered", "encoding": "gsm7",
               "callback_url": "https://sms.example/webhooks/jasmin/1/dlr?token=" + "t" * 24}


def sample_row(table, *, filled: bool, **extra) -> dict:
    """A row of ``table`` as the database gives it: every nullable column null, or every one filled."""
    row = {}
    for column in table.columns:
        if column.nullable and not filled and not column.primary_key:
            row[column.name] = None
        elif column.name in JSON_VALUES:
            row[column.name] = JSON_VALUES[column.name]
        elif column.type is Timestamp:
            row[column.name] = NOW
        elif column.name in TEXT_VALUES:
            row[column.name] = TEXT_VALUES[column.name]
        else:
            python_type = column.type.python_type
            row[column.name] = {bool: True, int: 1, float: 1.5}.get(python_type, "text")
    return {**row, **extra}


SHAPED = [
    ("gateway", gateway_reads.public, gateway_reads.SHAPE, gateways, {"messages_count": 3}),
    ("message", messages.public, messages.SHAPE, messages_table, {}),
    ("event", events.public, events.SHAPE, events_table, {}),
    ("unmatched receipt", unmatched.public, unmatched.SHAPE, unmatched_receipts, {}),
    ("audit event", audit.public, audit.SHAPE, audit_events, {}),
    ("api key", keys.public, keys.SHAPE, api_keys, {}),
    ("webhook endpoint", webhook_endpoints.public, webhook_endpoints.SHAPE, endpoints_table, {}),
    ("webhook delivery", webhook_deliveries.public, webhook_deliveries.SHAPE, deliveries_table, {}),
]


@pytest.mark.parametrize("name, present, shape, table, extra", SHAPED, ids=[s[0] for s in SHAPED])
@pytest.mark.parametrize("filled", [False, True], ids=["nulls", "filled"])
def test_each_shaping_function_returns_exactly_its_declared_shape(name, present, shape, table, extra, filled):
    shown = present(sample_row(table, filled=filled, **extra))
    assert set(shown) == set(shape["properties"])
    jsonschema.validate(shown, shape, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_a_gateway_without_its_token_fields_still_fits_its_shape():
    """A key without gateways:admin gets no callback token fields: the shape says they are optional."""
    shown = scopes.without_secrets(gateway_reads.public(sample_row(gateways, filled=True, messages_count=0)),
                                   {scopes.GATEWAYS_READ})
    assert not any(name.startswith("callback_token") for name in shown)
    jsonschema.validate(shown, gateway_reads.SHAPE)


def test_a_declared_shape_refuses_a_key_the_function_does_not_give():
    shown = {**messages.public(sample_row(messages_table, filled=True)), "idempotency_key": "k"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(shown, messages.SHAPE)


# --- the docs page ----------------------------------------------------------------------


class References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.found.append(value)


CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")
CSS_IMPORT = re.compile(r"@import\s+['\"]([^'\"]+)")
SOURCE_MAP = re.compile(r"sourceMappingURL=([^\s*]+)")


def test_the_docs_page_and_every_file_it_references_come_from_the_api_itself(api, anonymous):
    page = anonymous.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "default-src 'none'" in policy
    parser = References()
    parser.feed(page.text)
    assert len(parser.found) >= 3  # a stylesheet and two scripts at least
    base = api.url + "/api/docs"
    fetched: dict[str, httpx.Response] = {}
    pending = [urljoin(base, ref) for ref in parser.found]
    while pending:
        url = pending.pop()
        if url in fetched:
            continue
        assert urlsplit(url).netloc == urlsplit(api.url).netloc, f"{url} is not on the API's host"
        response = anonymous.get(url)
        assert response.status_code == 200, url
        fetched[url] = response
        kind = response.headers["content-type"]
        if kind.startswith("text/css"):
            refs = [r for r in CSS_URL.findall(response.text) + CSS_IMPORT.findall(response.text)
                    if not r.startswith("data:")]
            pending += [urljoin(url, ref) for ref in refs]
        if kind.startswith(("text/css", "text/javascript")):
            pending += [urljoin(url, ref) for ref in SOURCE_MAP.findall(response.text[-500:])]
    kinds = {response.headers["content-type"].split(";")[0] for response in fetched.values()}
    assert {"text/css", "text/javascript", "image/png"} <= kinds
    # the script that starts Swagger UI points it at this API's document and at no online validator
    own = next(r.text for u, r in fetched.items() if u.endswith("smsgw-docs.js"))
    assert 'new URL("openapi.json", window.location.href)' in own and "validatorUrl: null" in own
    assert urljoin(base, "openapi.json") == api.url + "/api/openapi.json"


def test_only_the_docs_files_are_served(anonymous):
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-initializer.js", "oauth2-redirect.html"):
        response = anonymous.get(f"/api/docs/{name}")
        assert response.status_code == 404, name
        assert response.json()["message"]


def body_schema(path: str, method: str) -> dict:
    built = openapi.build(routes(), version="0", max_batch=1000)
    return deref(built, built["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


def key_refused(data: dict) -> bool:
    try:
        validate({"name": data["name"]} if "name" in data else {}, {"name": keys.NAME})
        keys.parse_limits(data)
    except ValidationFailed:
        return True
    return False


def endpoint_refused(data: dict) -> bool:
    return bool(webhook_endpoints.check_fields(data, partial=False)[1])


@pytest.mark.parametrize("path, refused, valid, invalid", [
    ("/api/api-keys", key_refused, [
        {"name": "k", "scopes": ["all"]},
        {"name": "k", "scopes": ["messages:send", "gateways:read"], "gateway_ids": [1, 2], "allowed_countries": ["US"]},
        {"name": "k", "scopes": ["messages:read"], "gateway_ids": None, "allowed_countries": None},
    ], [
        {"name": "k"}, {"scopes": ["all"]}, {"name": "k", "scopes": []}, {"name": "k", "scopes": ["everything"]},
        {"name": "k", "scopes": ["all"], "gateway_ids": []}, {"name": "k", "scopes": ["all"], "gateway_ids": [0]},
        {"name": "k", "scopes": ["all"], "allowed_countries": []}, {"name": "k", "scopes": "all"},
    ]),
    ("/api/webhook-endpoints", endpoint_refused, [
        {"url": "https://app.example/hook", "events": ["message.delivered"]},
        {"url": "https://app.example/hook", "events": ["message.failed", "message.queued"], "gateway_ids": [3],
         "description": None},
    ], [
        {"url": "https://app.example/hook"}, {"events": ["message.delivered"]},
        {"url": "https://app.example/hook", "events": []},
        {"url": "https://app.example/hook", "events": ["message.delivered", "message.delivered"]},
        {"url": "https://app.example/hook", "events": ["message.read"]},
        {"url": "https://app.example/hook", "events": ["message.delivered"], "gateway_ids": []},
        {"url": "https://app.example/hook", "events": ["message.delivered"], "is_active": False},
    ]),
])
def test_the_declared_list_fields_agree_with_the_code_that_checks_them(path, refused, valid, invalid):
    """Keys and webhook endpoints check their list fields themselves: the document's schema
    must accept and refuse what that code does."""
    schema = body_schema(path, "post")
    for data in valid:
        jsonschema.validate(data, schema)
        assert not refused(data), data
    for data in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, schema)
        assert refused(data), data
