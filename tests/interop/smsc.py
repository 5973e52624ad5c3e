"""An SMPP 3.4 SMSC stand-in for the interop tests, written with asyncio and no SMPP library.

Two layers:

* Pure functions (``encode_pdu``, ``split_pdus``, ``parse_sm``, ``encode_sm``,
  ``receipt_text``, ...) that turn bytes into values and back. They do no I/O and
  are unit-tested in ``test_smsc_pdus.py``.
* ``SmscStandIn``: an asyncio server on a loopback port, run in a background
  thread so that synchronous pytest code can start it, read what it recorded
  (``submits``) and wait on it by condition.

What the server does: it accepts any bind (transmitter, receiver, transceiver)
with any system_id/password and answers with its own system_id; answers
enquire_link and unbind; answers every submit_sm with a message id that is
unique across runs (``uuid4().hex``); and, when registered_delivery asks for a
receipt, sends a deliver_sm receipt (esm_class 0x04, the standard receipt text,
TLVs receipted_message_id and message_state) after ``receipt_delay`` seconds.
The final status comes from ``final_status(submit)``; by default a destination
ending in "9" is UNDELIV and everything else DELIVRD. Unknown commands get a
generic_nack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

# --- command ids (SMPP 3.4, section 5.1.2.1) --------------------------------
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESP = 0x80000000  # a response's id is the request's id with this bit set

BIND_COMMANDS = {BIND_RECEIVER: "receiver", BIND_TRANSMITTER: "transmitter", BIND_TRANSCEIVER: "transceiver"}

# --- command_status values used here ----------------------------------------
ESME_ROK = 0x00000000
ESME_RINVMSGLEN = 0x00000001
ESME_RINVCMDLEN = 0x00000002
ESME_RINVCMDID = 0x00000003
ESME_RSYSERR = 0x00000008
ESME_RTHROTTLED = 0x00000058

# --- TLV tags ------------------------------------------------------------------
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_MESSAGE_PAYLOAD = 0x0424
TLV_SC_INTERFACE_VERSION = 0x0210

# message_state values (SMPP 3.4, section 5.2.28), keyed by the receipt's stat word
MESSAGE_STATES = {
    "ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4,
    "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
}
FAILED_STATES = {"EXPIRED", "DELETED", "UNDELIV", "REJECTD"}

HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024
MAX_MESSAGE_ID = 65  # octets, excluding the terminating NUL


class PduError(ValueError):
    """A PDU (or a field in it) that cannot be read."""


# =============================================================================
# Pure encoding and decoding
# =============================================================================

def encode_pdu(command_id: int, command_status: int, sequence_number: int, body: bytes = b"") -> bytes:
    """A whole PDU: the 16-octet header followed by ``body``."""
    return HEADER.pack(HEADER.size + len(body), command_id, command_status, sequence_number) + body


@dataclass(frozen=True)
class Pdu:
    command_id: int
    command_status: int
    sequence_number: int
    body: bytes

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP)


def decode_pdu(data: bytes) -> Pdu:
    """One whole PDU (exactly ``command_length`` octets)."""
    if len(data) < HEADER.size:
        raise PduError(f"PDU shorter than its header: {len(data)} octets")
    length, command_id, status, seq = HEADER.unpack_from(data)
    if length != len(data):
        raise PduError(f"command_length {length} but {len(data)} octets given")
    return Pdu(command_id, status, seq, data[HEADER.size:])


def split_pdus(buffer: bytes) -> tuple[list[Pdu], bytes]:
    """Cut the complete PDUs off the front of ``buffer``; return them and the rest.

    Raises ``PduError`` for a command_length that no valid PDU can have.
    """
    pdus = []
    offset = 0
    while len(buffer) - offset >= 4:
        (length,) = struct.unpack_from(">I", buffer, offset)
        if length < HEADER.size or length > MAX_PDU:
            raise PduError(f"invalid command_length {length}")
        if len(buffer) - offset < length:
            break
        pdus.append(decode_pdu(buffer[offset:offset + length]))
        offset += length
    return pdus, buffer[offset:]


def cstring(value: str | bytes) -> bytes:
    """A C-Octet String: the text followed by one NUL."""
    raw = value.encode("ascii") if isinstance(value, str) else value
    if b"\x00" in raw:
        raise PduError("NUL inside a C-Octet String")
    return raw + b"\x00"


def read_cstring(body: bytes, offset: int) -> tuple[bytes, int]:
    end = body.find(b"\x00", offset)
    if end < 0:
        raise PduError(f"unterminated C-Octet String at offset {offset}")
    return body[offset:end], end + 1


def encode_tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def parse_tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise PduError("truncated TLV header")
        tag, length = struct.unpack_from(">HH", data, offset)
        offset += 4
        if len(data) - offset < length:
            raise PduError(f"TLV 0x{tag:04x} longer than the PDU")
        tlvs[tag] = data[offset:offset + length]
        offset += length
    return tlvs


@dataclass
class ShortMessage:
    """The body of a submit_sm or a deliver_sm (they share one layout)."""

    source_addr: str = ""
    destination_addr: str = ""
    short_message: bytes = b""
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def message_payload(self) -> bytes | None:
        return self.tlvs.get(TLV_MESSAGE_PAYLOAD)


def parse_sm(body: bytes) -> ShortMessage:
    """Read a submit_sm or deliver_sm body."""
    def text(raw: bytes) -> str:
        return raw.decode("latin-1")

    try:
        sm = ShortMessage()
        offset = 0
        raw, offset = read_cstring(body, offset)
        sm.service_type = text(raw)
        sm.source_addr_ton, sm.source_addr_npi = body[offset], body[offset + 1]
        offset += 2
        raw, offset = read_cstring(body, offset)
        sm.source_addr = text(raw)
        sm.dest_addr_ton, sm.dest_addr_npi = body[offset], body[offset + 1]
        offset += 2
        raw, offset = read_cstring(body, offset)
        sm.destination_addr = text(raw)
        sm.esm_class, sm.protocol_id, sm.priority_flag = body[offset:offset + 3]
        offset += 3
        raw, offset = read_cstring(body, offset)
        sm.schedule_delivery_time = text(raw)
        raw, offset = read_cstring(body, offset)
        sm.validity_period = text(raw)
        (sm.registered_delivery, sm.replace_if_present_flag, sm.data_coding,
         sm.sm_default_msg_id, sm_length) = body[offset:offset + 5]
        offset += 5
    except (IndexError, ValueError) as exc:
        raise PduError(f"truncated short message body: {exc}") from None
    if len(body) - offset < sm_length:
        raise PduError(f"sm_length {sm_length} longer than the PDU")
    sm.short_message = body[offset:offset + sm_length]
    sm.tlvs = parse_tlvs(body[offset + sm_length:])
    return sm


def encode_sm(sm: ShortMessage) -> bytes:
    """The body of a submit_sm or deliver_sm."""
    if len(sm.short_message) > 254:
        raise PduError("short_message longer than 254 octets: use message_payload")
    return b"".join([
        cstring(sm.service_type),
        bytes([sm.source_addr_ton, sm.source_addr_npi]),
        cstring(sm.source_addr),
        bytes([sm.dest_addr_ton, sm.dest_addr_npi]),
        cstring(sm.destination_addr),
        bytes([sm.esm_class, sm.protocol_id, sm.priority_flag]),
        cstring(sm.schedule_delivery_time),
        cstring(sm.validity_period),
        bytes([sm.registered_delivery, sm.replace_if_present_flag, sm.data_coding,
               sm.sm_default_msg_id, len(sm.short_message)]),
        sm.short_message,
        *(encode_tlv(tag, value) for tag, value in sm.tlvs.items()),
    ])


def parse_bind(body: bytes) -> dict[str, str]:
    """system_id, password and system_type of a bind_* body."""
    system_id, offset = read_cstring(body, 0)
    password, offset = read_cstring(body, offset)
    system_type, offset = read_cstring(body, offset)
    return {"system_id": system_id.decode("latin-1"), "password": password.decode("latin-1"),
            "system_type": system_type.decode("latin-1")}


def bind_resp_body(system_id: str) -> bytes:
    return cstring(system_id) + encode_tlv(TLV_SC_INTERFACE_VERSION, b"\x34")


def new_message_id() -> str:
    """An SMSC message id that no earlier run of the stand-in gave out (32 hex digits)."""
    return uuid.uuid4().hex


def submit_resp_body(message_id: str) -> bytes:
    if len(message_id.encode("ascii")) > MAX_MESSAGE_ID:
        raise PduError(f"message_id longer than {MAX_MESSAGE_ID} octets")
    return cstring(message_id)


def wants_receipt(registered_delivery: int, stat: str) -> bool:
    """SMSC delivery receipt bits (0-1): 1 = always, 2 = on failure only."""
    bits = registered_delivery & 0x03
    return bits == 1 or (bits == 2 and stat in FAILED_STATES)


def message_text(sm: ShortMessage) -> str:
    """The message's text as far as a receipt needs it (UDH dropped, UCS-2 decoded)."""
    data = sm.short_message or (sm.message_payload or b"")
    if sm.esm_class & 0x40 and data:  # UDHI: the first octet is the header's length
        data = data[1 + data[0]:]
    if sm.data_coding == 8:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


def smpp_date(moment: dt.datetime) -> str:
    return moment.strftime("%y%m%d%H%M")


def receipt_text(message_id: str, stat: str, submitted: dt.datetime, done: dt.datetime,
                 text: str, err: str = "000") -> str:
    """The de-facto standard receipt text of SMPP 3.4 Appendix B."""
    delivered = "001" if stat == "DELIVRD" else "000"
    return (f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{smpp_date(submitted)} "
            f"done date:{smpp_date(done)} stat:{stat} err:{err} text:{text[:20]}")


def receipt_sm(submit: ShortMessage, message_id: str, stat: str,
               submitted: dt.datetime, done: dt.datetime) -> ShortMessage:
    """The deliver_sm receipt for ``submit``: addresses swapped, esm_class 0x04, TLVs set."""
    err = "000" if stat == "DELIVRD" else "001"
    text = receipt_text(message_id, stat, submitted, done, message_text(submit), err)
    return ShortMessage(
        source_addr=submit.destination_addr, source_addr_ton=submit.dest_addr_ton,
        source_addr_npi=submit.dest_addr_npi,
        destination_addr=submit.source_addr, dest_addr_ton=submit.source_addr_ton,
        dest_addr_npi=submit.source_addr_npi,
        esm_class=0x04, data_coding=0,
        short_message=text.encode("ascii", "replace"),
        tlvs={TLV_RECEIPTED_MESSAGE_ID: cstring(message_id),
              TLV_MESSAGE_STATE: bytes([MESSAGE_STATES[stat]])},
    )


def undeliverable_if_ends_in_9(submit: ShortMessage) -> str:
    """The default final-status rule."""
    return "UNDELIV" if submit.destination_addr.endswith("9") else "DELIVRD"


# =============================================================================
# The server
# =============================================================================

@dataclass(frozen=True)
class SubmitRecord:
    """One submit_sm as the stand-in received it, with what it answered."""

    message_id: str
    source: str
    destination: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    short_message: bytes
    message_payload: bytes | None
    tlvs: dict[int, bytes]
    system_id: str
    command_status: int
    final_status: str | None
    received_at: float


@dataclass(frozen=True)
class ReceiptRecord:
    message_id: str
    stat: str
    text: str
    sent_at: float


class SmscStandIn:
    """The SMSC stand-in: ``start()`` it, point an SMPP client at ``host``:``port``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, system_id: str = "smscstandin",
                 receipt_delay: float = 0.2,
                 final_status: Callable[[ShortMessage], str] = undeliverable_if_ends_in_9,
                 submit_status: Callable[[ShortMessage], int] = lambda submit: ESME_ROK):
        self.host = host
        self.port = port
        self.system_id = system_id
        self.receipt_delay = receipt_delay
        self.final_status = final_status
        self.submit_status = submit_status
        self._lock = threading.Lock()
        self._submits: list[SubmitRecord] = []
        self._receipts: list[ReceiptRecord] = []
        self._binds: list[dict] = []
        self._sessions: set[_Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # --- what was recorded (thread-safe copies) ----------------------------------
    @property
    def submits(self) -> list[SubmitRecord]:
        with self._lock:
            return list(self._submits)

    @property
    def receipts(self) -> list[ReceiptRecord]:
        with self._lock:
            return list(self._receipts)

    @property
    def binds(self) -> list[dict]:
        """Every bind: system_id, password, system_type, mode ("transceiver", ...), active."""
        with self._lock:
            return [dict(b) for b in self._binds]

    def bound_sessions(self) -> int:
        with self._lock:
            return sum(1 for b in self._binds if b["active"])

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"SMSC stand-in: timed out after {timeout} s waiting for {what}")
            time.sleep(0.01)

    def wait_for_submit(self, predicate: Callable[[SubmitRecord], bool], timeout: float = 10.0) -> SubmitRecord:
        found: list[SubmitRecord] = []

        def seen() -> bool:
            found[:] = [s for s in self.submits if predicate(s)]
            return bool(found)

        self.wait_for(seen, timeout, "a matching submit_sm")
        return found[0]

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> "SmscStandIn":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="smsc-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for session in list(self._sessions):
                session.close()
            await self._server.wait_closed()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "SmscStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class _Session:
    """One SMPP connection."""

    def __init__(self, smsc: SmscStandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.smsc = smsc
        self.reader = reader
        self.writer = writer
        self.bind: dict | None = None
        self.sequence = 0
        self.tasks: set[asyncio.Task] = set()

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.writer.close()

    async def run(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                pdus, buffer = split_pdus(buffer)
                for pdu in pdus:
                    if not self.dispatch(pdu):
                        await self.writer.drain()
                        return
                await self.writer.drain()
        except (PduError, ConnectionError):
            pass
        finally:
            if self.bind is not None:
                with self.smsc._lock:
                    self.bind["active"] = False
            self.close()

    def dispatch(self, pdu: Pdu) -> bool:
        """Answer one PDU; False ends the session."""
        cid, seq = pdu.command_id, pdu.sequence_number
        if cid in BIND_COMMANDS:
            try:
                creds = parse_bind(pdu.body)
            except PduError:
                self.send(encode_pdu(cid | RESP, ESME_RINVCMDLEN, seq))
                return True
            self.bind = {**creds, "mode": BIND_COMMANDS[cid], "active": True}
            with self.smsc._lock:
                self.smsc._binds.append(self.bind)
            self.send(encode_pdu(cid | RESP, ESME_ROK, seq, bind_resp_body(self.smsc.system_id)))
        elif cid == ENQUIRE_LINK:
            self.send(encode_pdu(ENQUIRE_LINK | RESP, ESME_ROK, seq))
        elif cid == UNBIND:
            self.send(encode_pdu(UNBIND | RESP, ESME_ROK, seq))
            return False
        elif cid == SUBMIT_SM:
            self.on_submit(pdu)
        elif pdu.is_response:
            pass  # deliver_sm_resp, enquire_link_resp, generic_nack: nothing to do
        else:
            self.send(encode_pdu(GENERIC_NACK, ESME_RINVCMDID, seq))
        return True

    def on_submit(self, pdu: Pdu) -> None:
        try:
            sm = parse_sm(pdu.body)
        except PduError:
            self.send(encode_pdu(SUBMIT_SM | RESP, ESME_RINVMSGLEN, pdu.sequence_number))
            return
        status = self.smsc.submit_status(sm)
        message_id = new_message_id() if status == ESME_ROK else ""
        stat = self.smsc.final_status(sm) if status == ESME_ROK else None
        record = SubmitRecord(
            message_id=message_id, source=sm.source_addr, destination=sm.destination_addr,
            data_coding=sm.data_coding, esm_class=sm.esm_class,
            registered_delivery=sm.registered_delivery, short_message=sm.short_message,
            message_payload=sm.message_payload, tlvs=dict(sm.tlvs),
            system_id=self.bind["system_id"] if self.bind else "", command_status=status,
            final_status=stat, received_at=time.time(),
        )
        with self.smsc._lock:
            self.smsc._submits.append(record)
        body = submit_resp_body(message_id) if status == ESME_ROK else b""
        self.send(encode_pdu(SUBMIT_SM | RESP, status, pdu.sequence_number, body))
        if stat is not None and wants_receipt(sm.registered_delivery, stat):
            submitted = dt.datetime.now(dt.timezone.utc)
            task = asyncio.get_running_loop().create_task(self.send_receipt(sm, message_id, stat, submitted))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def receiver(self) -> "_Session | None":
        """Where receipts go: this session if it can receive, else a receiver bound with the same system_id."""
        if self.bind and self.bind["mode"] == "transceiver":
            return self
        for session in self.smsc._sessions:
            if (session.bind and session.bind["active"] and session.bind["mode"] == "receiver"
                    and self.bind and session.bind["system_id"] == self.bind["system_id"]):
                return session
        return None

    async def send_receipt(self, sm: ShortMessage, message_id: str, stat: str, submitted: dt.datetime) -> None:
        await asyncio.sleep(self.smsc.receipt_delay)
        target = self.receiver()
        if target is None:
            return
        receipt = receipt_sm(sm, message_id, stat, submitted, dt.datetime.now(dt.timezone.utc))
        target.send(encode_pdu(DELIVER_SM, ESME_ROK, target.next_sequence(), encode_sm(receipt)))
        await target.writer.drain()
        with self.smsc._lock:
            self.smsc._receipts.append(ReceiptRecord(
                message_id, stat, receipt.short_message.decode("ascii"), time.time()))
