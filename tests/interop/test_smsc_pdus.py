"""The SMSC stand-in's pure PDU functions, and one loopback session against its server (no Jasmin)."""

from __future__ import annotations

import datetime as dt
import socket
import struct

import pytest

from . import smsc
from .smsc import (
    BIND_TRANSCEIVER, BIND_TRANSMITTER, DELIVER_SM, ENQUIRE_LINK, ESME_RINVCMDID, ESME_ROK, GENERIC_NACK,
    RESP, SUBMIT_SM, TLV_MESSAGE_PAYLOAD, TLV_MESSAGE_STATE, TLV_RECEIPTED_MESSAGE_ID, UNBIND, PduError,
    ShortMessage, SmscStandIn, cstring, decode_pdu, encode_pdu, encode_sm, encode_tlv, message_text,
    new_message_id, parse_bind, parse_sm, parse_tlvs, receipt_sm, receipt_text, split_pdus,
    submit_resp_body, undeliverable_if_ends_in_9, wants_receipt,
)

# A submit_sm body as an ESME (Jasmin) sends it, written out by hand from SMPP 3.4 section 4.4.1.
SUBMIT_BODY = (
    b"\x00"                      # service_type ""
    b"\x02\x08" b"smsgw\x00"     # source ton/npi, source_addr
    b"\x01\x01" b"15551234567\x00"  # dest ton/npi, destination_addr
    b"\x00\x00\x00"              # esm_class, protocol_id, priority_flag
    b"\x00" b"\x00"              # schedule_delivery_time, validity_period
    b"\x01\x00\x00\x00"          # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    b"\x05hello"                 # sm_length, short_message
)


def test_header_round_trip():
    pdu = encode_pdu(ENQUIRE_LINK, ESME_ROK, 7)
    assert pdu == b"\x00\x00\x00\x10\x00\x00\x00\x15\x00\x00\x00\x00\x00\x00\x00\x07"
    decoded = decode_pdu(pdu)
    assert (decoded.command_id, decoded.command_status, decoded.sequence_number, decoded.body) == (
        ENQUIRE_LINK, 0, 7, b"")
    assert not decoded.is_response
    assert decode_pdu(encode_pdu(ENQUIRE_LINK | RESP, 0, 7)).is_response


def test_decode_rejects_a_wrong_length():
    with pytest.raises(PduError):
        decode_pdu(encode_pdu(ENQUIRE_LINK, 0, 1) + b"x")
    with pytest.raises(PduError):
        decode_pdu(b"\x00\x00")


def test_split_pdus_keeps_the_incomplete_tail():
    first = encode_pdu(ENQUIRE_LINK, 0, 1)
    second = encode_pdu(SUBMIT_SM, 0, 2, SUBMIT_BODY)
    stream = first + second
    pdus, rest = split_pdus(stream[:-3])
    assert [p.sequence_number for p in pdus] == [1]
    assert rest == second[:-3]
    pdus, rest = split_pdus(rest + stream[-3:])
    assert [p.command_id for p in pdus] == [SUBMIT_SM]
    assert rest == b""
    assert split_pdus(b"\x00\x00") == ([], b"\x00\x00")


@pytest.mark.parametrize("length", [0, 15, 10_000_000])
def test_split_pdus_rejects_impossible_lengths(length):
    with pytest.raises(PduError):
        split_pdus(struct.pack(">I", length) + b"\x00" * 12)


def test_parse_submit_sm():
    sm = parse_sm(SUBMIT_BODY)
    assert (sm.source_addr, sm.source_addr_ton, sm.source_addr_npi) == ("smsgw", 2, 8)
    assert (sm.destination_addr, sm.dest_addr_ton, sm.dest_addr_npi) == ("15551234567", 1, 1)
    assert (sm.registered_delivery, sm.data_coding, sm.short_message) == (1, 0, b"hello")
    assert sm.tlvs == {} and sm.message_payload is None


def test_parse_submit_sm_with_message_payload():
    body = SUBMIT_BODY[:-6] + b"\x00" + encode_tlv(TLV_MESSAGE_PAYLOAD, b"a long text")
    sm = parse_sm(body)
    assert sm.short_message == b""
    assert sm.message_payload == b"a long text"
    assert message_text(sm) == "a long text"


def test_encode_sm_round_trips():
    sm = ShortMessage(source_addr="a", destination_addr="b", short_message=b"\x00\x41",
                      data_coding=8, esm_class=0x04, tlvs={0x1400: b"xy"})
    assert encode_sm(sm).startswith(b"\x00\x00\x00a\x00\x00\x00b\x00\x04")
    assert parse_sm(encode_sm(sm)) == sm


@pytest.mark.parametrize("cut", [1, 5, 20, len(SUBMIT_BODY) - 1])
def test_parse_sm_rejects_truncated_bodies(cut):
    with pytest.raises(PduError):
        parse_sm(SUBMIT_BODY[:cut])


def test_tlvs():
    data = encode_tlv(TLV_MESSAGE_STATE, b"\x02") + encode_tlv(TLV_RECEIPTED_MESSAGE_ID, b"abc\x00")
    assert data == b"\x04\x27\x00\x01\x02\x00\x1e\x00\x04abc\x00"
    assert parse_tlvs(data) == {TLV_MESSAGE_STATE: b"\x02", TLV_RECEIPTED_MESSAGE_ID: b"abc\x00"}
    with pytest.raises(PduError):
        parse_tlvs(data[:-1])


def test_bind_body():
    body = cstring("jasmin") + cstring("secret") + cstring("") + b"\x34\x00\x00\x00"
    assert parse_bind(body) == {"system_id": "jasmin", "password": "secret", "system_type": ""}
    with pytest.raises(PduError):
        cstring("a\x00b")


def test_message_ids_are_unique_and_short_enough():
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) <= smsc.MAX_MESSAGE_ID for i in ids)
    assert submit_resp_body("abc") == b"abc\x00"
    with pytest.raises(PduError):
        submit_resp_body("x" * 66)


@pytest.mark.parametrize("registered, stat, wanted", [
    (0, "DELIVRD", False), (1, "DELIVRD", True), (1, "UNDELIV", True),
    (2, "DELIVRD", False), (2, "UNDELIV", True), (0x11, "DELIVRD", True), (3, "UNDELIV", False),
])
def test_wants_receipt(registered, stat, wanted):
    assert wants_receipt(registered, stat) is wanted


def test_default_final_status_rule():
    assert undeliverable_if_ends_in_9(ShortMessage(destination_addr="15551234569")) == "UNDELIV"
    assert undeliverable_if_ends_in_9(ShortMessage(destination_addr="15551234567")) == "DELIVRD"


def test_receipt_text_is_the_standard_one():
    when = dt.datetime(2026, 11, 26, 21, 5)
    text = receipt_text("abc123", "DELIVRD", when, when, "a text longer than twenty characters")
    assert text == ("id:abc123 sub:001 dlvrd:001 submit date:2611262105 done date:2611262105 "
                    "stat:DELIVRD err:000 text:a text longer than t")


def test_message_text_drops_udh_and_decodes_ucs2():
    udh = b"\x05\x00\x03\x2a\x02\x02"
    assert message_text(ShortMessage(esm_class=0x40, short_message=udh + b"part two")) == "part two"
    assert message_text(ShortMessage(data_coding=8, short_message="héllo €".encode("utf-16-be"))) == "héllo €"


def test_receipt_sm():
    submit = parse_sm(SUBMIT_BODY)
    when = dt.datetime(2026, 1, 2, 3, 4)
    receipt = receipt_sm(submit, "0abc", "UNDELIV", when, when)
    assert (receipt.source_addr, receipt.destination_addr) == ("15551234567", "smsgw")
    assert (receipt.source_addr_ton, receipt.dest_addr_ton) == (1, 2)
    assert receipt.esm_class == 0x04
    assert receipt.short_message == (b"id:0abc sub:001 dlvrd:000 submit date:2601020304 "
                                     b"done date:2601020304 stat:UNDELIV err:001 text:hello")
    assert receipt.tlvs == {TLV_RECEIPTED_MESSAGE_ID: b"0abc\x00", TLV_MESSAGE_STATE: b"\x05"}
    assert parse_sm(encode_sm(receipt)) == receipt


# --- the server, over a real loopback socket ------------------------------------

class Esme:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, command_id: int, seq: int, body: bytes = b"") -> None:
        self.sock.sendall(encode_pdu(command_id, 0, seq, body))

    def read(self):
        while True:
            pdus, rest = split_pdus(self.buffer)
            if pdus:
                first = pdus[0]
                self.buffer = self.buffer[16 + len(first.body):]
                return first
            chunk = self.sock.recv(65536)
            assert chunk, "the stand-in closed the connection"
            self.buffer += chunk


def test_server_session():
    with SmscStandIn(system_id="standin", receipt_delay=0.0,
                     final_status=lambda sm: "EXPIRED") as server:
        esme = Esme(server.port)
        esme.send(BIND_TRANSCEIVER, 1, cstring("jasmin") + cstring("pw") + cstring("") + b"\x34\x00\x00\x00")
        resp = esme.read()
        assert (resp.command_id, resp.command_status, resp.sequence_number) == (BIND_TRANSCEIVER | RESP, 0, 1)
        assert resp.body.startswith(b"standin\x00")
        server.wait_for(lambda: server.bound_sessions() == 1, 5, "the bind")
        assert server.binds[0]["system_id"] == "jasmin" and server.binds[0]["mode"] == "transceiver"

        esme.send(ENQUIRE_LINK, 2)
        assert esme.read().command_id == ENQUIRE_LINK | RESP

        esme.send(0x00000103, 3)  # data_sm: not implemented here
        nack = esme.read()
        assert (nack.command_id, nack.command_status, nack.sequence_number) == (GENERIC_NACK, ESME_RINVCMDID, 3)

        esme.send(SUBMIT_SM, 4, SUBMIT_BODY)
        resp = esme.read()
        assert (resp.command_id, resp.command_status, resp.sequence_number) == (SUBMIT_SM | RESP, 0, 4)
        message_id = resp.body.rstrip(b"\x00").decode()
        record = server.submits[0]
        assert record.message_id == message_id
        assert (record.source, record.destination, record.short_message, record.data_coding) == (
            "smsgw", "15551234567", b"hello", 0)

        deliver = esme.read()
        assert deliver.command_id == DELIVER_SM
        receipt = parse_sm(deliver.body)
        assert receipt.esm_class == 0x04
        assert f"id:{message_id} ".encode() in receipt.short_message
        assert b"stat:EXPIRED" in receipt.short_message
        assert receipt.tlvs[TLV_MESSAGE_STATE] == b"\x03"
        esme.send(DELIVER_SM | RESP, deliver.sequence_number, b"\x00")

        esme.send(UNBIND, 5)
        assert esme.read().command_id == UNBIND | RESP
        server.wait_for(lambda: server.bound_sessions() == 0, 5, "the unbind")


def test_transmitter_gets_no_receipt_without_a_receiver():
    with SmscStandIn(receipt_delay=0.0) as server:
        esme = Esme(server.port)
        esme.send(BIND_TRANSMITTER, 1, cstring("tx") + cstring("pw") + cstring("") + b"\x34\x00\x00\x00")
        assert esme.read().command_id == BIND_TRANSMITTER | RESP
        esme.send(SUBMIT_SM, 2, SUBMIT_BODY)
        assert esme.read().command_id == SUBMIT_SM | RESP
        esme.send(ENQUIRE_LINK, 3)  # the next PDU is the enquire_link_resp, not a deliver_sm
        assert esme.read().command_id == ENQUIRE_LINK | RESP
        assert server.receipts == []
