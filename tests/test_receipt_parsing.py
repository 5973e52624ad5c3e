"""Reading a receipt (``api.receipts.parse_receipt``): the contract's field rules, on Jasmin's real receipts too."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from api.receipts import parse_receipt
from tests.providers.table import sample


def form(name: str) -> dict[str, str]:
    return dict(parse_qsl(sample("jasmin", name).decode()))


def test_jasmin_level1_receipt():
    receipt = parse_receipt(form("dlr-level1.form"))
    assert receipt.external_id == "81fe3757-7dc0-46ed-a2d9-6d7801811590"
    assert receipt.status == "esme_rok"
    assert receipt.payload == form("dlr-level1.form")


def test_jasmin_level2_receipt_keeps_every_field():
    receipt = parse_receipt(form("dlr-level2.form"))
    assert receipt.status == "delivrd"
    assert set(receipt.payload) == {"id", "level", "message_status", "connector", "id_smsc", "sub", "dlvrd",
                                    "subdate", "donedate", "err", "text"}


@pytest.mark.parametrize("fields, external_id, status", [
    ({"message_id": "a", "id": "b", "messageId": "c"}, "a", "delivered"),
    ({"id": "b", "messageId": "c"}, "b", "delivered"),
    ({"messageId": "c"}, "c", "delivered"),
    ({"message_id": "", "id": "b"}, "b", "delivered"),
    ({"message_id": 42, "status": "DELIVERED"}, "42", "delivered"),
    ({"status": "Failed", "message_status": "DELIVRD"}, None, "failed"),
    ({"status": "  ", "message_status": "UNDELIV"}, None, "undeliv"),
    ({"message_id": {"nested": 1}}, None, "delivered"),
    ({}, None, "delivered"),
])
def test_receipt_field_rules(fields, external_id, status):
    receipt = parse_receipt(fields)
    assert (receipt.external_id, receipt.status) == (external_id, status)


def test_receipt_payload_drops_the_token_and_nulls():
    assert parse_receipt({"id": "a", "token": "secret", "err": None}).payload == {"id": "a"}
