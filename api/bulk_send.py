"""``smsgw send``: a CSV file of messages uploaded to the API in batches.

It talks to the API over HTTP (``SMSGW_API_URL``, and the key in ``SMSGW_API_KEY``,
else ``SMSGW_ADMIN_KEY``; ``--api-url`` / ``--api-key`` override them), never to
the database: the API's validation, the key's scopes, idempotency and the
dispatcher all apply, and it works against a remote deployment alike.

The CSV has a header row naming its columns: ``to_number`` (required),
``message`` (required unless ``--message`` gives the text for rows that have none),
``client_reference`` (optional). Any other column is an error before anything is
sent. Line numbers are the file's own (the header is line 1); empty lines are
skipped; the file is UTF-8, with or without a byte-order mark.

Rows go up in chunks of ``--batch-size`` to ``POST /api/sms-gateways/{id}/messages``.
The server takes a chunk all or nothing: rows it refuses (422, or a key's country
limit, 403, keyed ``messages.N.field``) are reported by line and the rest of the
chunk is sent again. Each request carries an ``Idempotency-Key`` derived from the
file's content, the gateway, ``--message``, ``--batch-size``, the chunk's index and
the rows it holds, so running the same command again (after a crash, a lost
connection, ^C) within 24 hours stores nothing twice: the server answers such a
chunk with the batch it stored the first time.

Exit status: 0 when every row was stored; 1 when a row was rejected, the API
refused to go on (401, 403, 404, 409, 5xx: the upload stops there), or ``--wait``
timed out; 2 for a usage error (bad arguments, no key, a bad header, an unreadable
file), with nothing sent.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import httpx

from api.config import Settings

COLUMNS = ("to_number", "message", "client_reference")
FINAL_STATES = ("delivered", "failed", "canceled")
STATE_ORDER = ("scheduled", "queued", "submitted", "accepted", "delivered", "failed", "canceled")
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)  # before each new try of a 503 or a lost connection
MAX_RETRY_AFTER = 30.0
ROW_ERROR = re.compile(r"^messages\.(\d+)(?:\.(.+))?$")


class UsageError(ValueError):
    """The command cannot start as given (exit 2); nothing was sent."""


class Stop(Exception):
    """The API refused to go on (exit 1); what was stored before stays stored."""


@dataclass(frozen=True)
class Row:
    line: int
    item: dict[str, str]  # the message as the API takes it


@dataclass(frozen=True)
class Rejected:
    line: int
    field: str
    problem: str


@dataclass(frozen=True)
class Sheet:
    rows: list[Row]
    rejected: list[Rejected]


# --- the CSV: pure ---------------------------------------------------------------


def read_csv(data: bytes, default_message: str | None) -> Sheet:
    """The file's rows as messages. A header problem raises UsageError; a row that cannot
    be read as a message (more cells than the header) is rejected by its line number.

    A row's empty ``message`` cell (or a file with no ``message`` column) takes
    ``default_message``; an empty ``client_reference`` is left out. Everything else
    is the API's to judge, so its rules are written once."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UsageError(f"the file is not UTF-8 (line {line})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[Row] = []
    rejected: list[Rejected] = []
    last = 0
    try:
        for cells in reader:
            line, last = last + 1, reader.line_num  # a quoted cell may span lines: a row starts after the last
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = check_header(cells, default_message)
                continue
            if len(cells) > len(header):
                rejected.append(Rejected(line, "", f"{len(cells)} cells, but the header names {len(header)} "
                                                   "columns"))
                continue
            values = {name: cell.strip() for name, cell in zip(header, cells)}
            item = {"to_number": values.get("to_number", "")}
            message = values.get("message") or default_message
            if message:
                item["message"] = message
            if values.get("client_reference"):
                item["client_reference"] = values["client_reference"]
            rows.append(Row(line, item))
    except csv.Error as exc:
        raise UsageError(f"line {reader.line_num}: {exc}") from None
    if header is None:
        raise UsageError("the file is empty: it needs a header row (to_number,message,client_reference)")
    if not rows and not rejected:
        raise UsageError("the file has a header but no rows")
    return Sheet(rows, rejected)


def check_header(cells: list[str], default_message: str | None) -> list[str]:
    names = [cell.strip() for cell in cells]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise UsageError(f"line 1: unknown column {', '.join(map(repr, unknown))}; "
                         f"the columns are {', '.join(COLUMNS)}")
    if len(set(names)) != len(names):
        raise UsageError("line 1: a column is named twice")
    if "to_number" not in names:
        raise UsageError("line 1: the to_number column is required")
    if "message" not in names and default_message is None:
        raise UsageError("line 1: there is no message column: add one, or give the text with --message")
    return names


def chunked(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def file_digest(data: bytes, gateway_id: int, default_message: str | None, batch_size: int) -> str:
    """What makes a run the same run: the file's bytes and the choices that shape its requests."""
    digest = hashlib.sha256(data)
    digest.update(json.dumps([gateway_id, default_message, batch_size]).encode())
    return digest.hexdigest()


def chunk_key(digest: str, index: int, rows: list[Row], full: bool) -> str:
    """The Idempotency-Key of one request: the chunk's own, or — after rows were dropped
    from it — one that also names the lines still in it."""
    key = f"smsgw-send-{digest[:32]}-{index}"
    if full:
        return key
    lines = hashlib.sha256(",".join(str(row.line) for row in rows).encode()).hexdigest()[:16]
    return f"{key}-{lines}"


def row_errors(errors: Any, rows: list[Row]) -> list[Rejected] | None:
    """The server's ``messages.N.field`` errors as rejected lines; None when any error is
    not about one row of this request (then dropping rows cannot help)."""
    if not isinstance(errors, dict) or not errors:
        return None
    found = []
    for key, problems in errors.items():
        matched = ROW_ERROR.match(key)
        if not matched or int(matched.group(1)) >= len(rows):
            return None
        for problem in problems if isinstance(problems, list) else [problems]:
            found.append(Rejected(rows[int(matched.group(1))].line, matched.group(2) or "", str(problem)))
    return found


# --- the upload -------------------------------------------------------------------


@dataclass
class Result:
    total: int
    stored: int = 0
    replayed: int = 0  # stored by an earlier run of the same command
    rejected: list[Rejected] = field(default_factory=list)
    batch_ids: list[int] = field(default_factory=list)
    error: str | None = None
    counts: dict[str, int] | None = None  # --wait: messages by state
    final: int | None = None
    timed_out: bool = False

    @property
    def rejected_rows(self) -> int:
        """Lines rejected (a row may have several problems, each its own entry)."""
        return len({reject.line for reject in self.rejected})


def post(client: httpx.Client, url: str, body: dict, key: str,
         sleep: Callable[[float], None] = time.sleep) -> httpx.Response:
    """One request, tried again after a 503 or a lost connection (the Idempotency-Key makes
    that safe even if the first one was stored); any other answer is returned."""
    for pause in (*RETRY_PAUSES, None):
        try:
            response = client.post(url, json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError as exc:
            if pause is None:
                raise Stop(f"cannot reach the API at {client.base_url}: {type(exc).__name__} {exc}") from None
        else:
            if response.status_code != 503 or pause is None:
                return response
            pause = max(pause, min(retry_after(response), MAX_RETRY_AFTER))
        sleep(pause)
    raise AssertionError("unreachable")


def retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


def refusal(response: httpx.Response, gateway_id: int | None = None) -> str:
    """Why the API will not take more, in words a user can act on."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    said = body.get("message") if isinstance(body, dict) else None
    hints = {401: "check SMSGW_API_KEY (or --api-key)",
             403: "the key lacks a scope this needs — messages:send to send, messages:read for --wait — "
                  "or may not use this gateway",
             409: "the gateway is inactive"}
    if gateway_id is not None:
        hints[404] = f"no SMS gateway has id {gateway_id}, or this key may not use it"
    text = f"the API answered {response.status_code}" + (f": {said}" if said else "")
    if isinstance(body, dict) and isinstance(body.get("errors"), dict):
        text += "".join(f"\n  {name}: {'; '.join(map(str, problems))}" for name, problems in body["errors"].items())
    if response.status_code in hints:
        text += f" ({hints[response.status_code]})"
    return text


def upload(client: httpx.Client, gateway_id: int, sheet: Sheet, digest: str, batch_size: int,
           result: Result, progress: "Progress") -> None:
    """Every chunk in turn, counted in ``result`` as it goes (so a stop still says what was
    stored); rows the server refuses are dropped and the rest of their chunk sent again."""
    url = f"/api/sms-gateways/{gateway_id}/messages"
    chunks = chunked(sheet.rows, batch_size)
    progress.show(result, f"{plural(len(chunks), 'chunk')} of up to {batch_size}")
    for index, chunk in enumerate(chunks):
        rows, full = chunk, True
        while rows:
            response = post(client, url, {"messages": [row.item for row in rows]}, chunk_key(digest, index, rows, full))
            if response.status_code in (200, 202):
                meta = json_of(response, result).get("meta") or {}
                batch_id = meta.get("batch_id")
                if batch_id is not None and batch_id not in result.batch_ids:
                    result.batch_ids.append(batch_id)
                if response.status_code == 200:
                    result.replayed += len(rows)
                else:
                    result.stored += len(rows)
                how = "already stored by an earlier run" if response.status_code == 200 else "stored"
                progress.show(result, f"chunk {index + 1}/{len(chunks)}: {plural(len(rows))} {how} "
                                      f"in batch {batch_id}")
                break
            dropped = row_errors(error_fields(response), rows) if response.status_code in (403, 422) else None
            if dropped is None:
                raise_stop(result, refusal(response, gateway_id))
            result.rejected.extend(dropped)
            bad = {reject.line for reject in dropped}
            rows, full = [row for row in rows if row.line not in bad], False
            progress.show(result, f"chunk {index + 1}/{len(chunks)}: {plural(len(bad))} rejected, "
                                  "sending the rest")
    progress.done()


def plural(count: int, word: str = "row") -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def json_of(response: httpx.Response, result: Result) -> dict[str, Any]:
    """A success's body; not JSON means --api-url is not smsgw's API."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise_stop(result, f"{response.request.url} answered {response.status_code} without the API's JSON: "
                           "is --api-url (SMSGW_API_URL) smsgw's API?")
    return body


def error_fields(response: httpx.Response) -> Any:
    try:
        return response.json().get("errors")
    except (ValueError, AttributeError):
        return None


def raise_stop(result: Result, message: str) -> None:
    result.error = message
    raise Stop(message)


# --- waiting ----------------------------------------------------------------------


def watch(client: httpx.Client, result: Result, timeout: float | None, progress: "Progress",
          interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll each batch every ``interval`` until all its messages are final (or ``timeout``)."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        counts: dict[str, int] = {}
        size = 0
        for batch_id in result.batch_ids:
            try:
                response = client.get(f"/api/sms-batches/{batch_id}")
            except httpx.TransportError:
                break  # a passing loss: the next poll tells
            if response.status_code != 200:
                raise_stop(result, f"batch {batch_id}: {refusal(response)}")
            batch = json_of(response, result).get("data") or {}
            size += batch.get("size", 0)
            for state, count in (batch.get("counts") or {}).items():
                counts[state] = counts.get(state, 0) + count
        else:
            result.counts = counts
            result.final = sum(counts.get(state, 0) for state in FINAL_STATES)
            progress.counts(counts, result.final, size)
            if result.final >= size:
                break
        if deadline is not None and clock() >= deadline:
            result.timed_out = True
            break
        sleep(interval)
    progress.done()


def describe_counts(counts: dict[str, int]) -> str:
    ordered = [state for state in STATE_ORDER if counts.get(state)] + sorted(set(counts) - set(STATE_ORDER))
    return ", ".join(f"{state} {counts[state]}" for state in ordered) or "none yet"


# --- what the user sees -------------------------------------------------------------


class Progress:
    """On a terminal one line redrawn with \\r; otherwise one line per step (a log)."""

    def __init__(self, stream: TextIO, tty: bool):
        self.stream, self.tty, self.drawn, self.last = stream, tty, False, None

    def show(self, result: Result, note: str) -> None:
        done = result.stored + result.replayed + result.rejected_rows
        if self.tty:
            self.draw(f"{bar(done, result.total)} {done}/{result.total} rows"
                      + (f", {result.rejected_rows} rejected" if result.rejected else ""))
        else:
            self.line(f"{note} ({done}/{result.total} rows)")

    def counts(self, counts: dict[str, int], final: int, size: int) -> None:
        text = f"{final}/{size} final: {describe_counts(counts)}"
        if self.tty:
            self.draw(f"{bar(final, size)} {text}")
        elif text != self.last:  # a log gets a line when something changed, not every second
            self.line(text)
        self.last = text

    def draw(self, text: str) -> None:
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def summary(result: Result) -> dict[str, Any]:
    data = {
        "rows": result.total, "stored": result.stored, "already_stored": result.replayed,
        "rejected": [{"line": r.line, "field": r.field, "problem": r.problem}
                     for r in sorted(result.rejected, key=lambda r: r.line)],
        "batch_ids": result.batch_ids, "error": result.error,
    }
    if result.counts is not None:
        data.update(counts=result.counts, final=result.final, timed_out=result.timed_out)
    return data


def print_summary(result: Result, out: TextIO) -> None:
    for reject in sorted(result.rejected, key=lambda r: r.line):
        print(f"line {reject.line}: rejected: " + (f"{reject.field}: " if reject.field else "") + reject.problem,
              file=out)
    text = f"{result.stored} stored"
    if result.replayed:
        text += f", {result.replayed} already stored by an earlier run (not stored again)"
    text += f", {result.rejected_rows} rejected, of {plural(result.total)}"
    if result.batch_ids:
        text += "; batch " + ", ".join(map(str, result.batch_ids))
    print(text, file=out)
    if result.counts is not None:
        state = "timed out" if result.timed_out else "all final"
        print(f"{state}: {describe_counts(result.counts)}", file=out)


def exit_status(result: Result) -> int:
    return 1 if result.rejected or result.error or result.timed_out else 0


# --- the command --------------------------------------------------------------------


def api_key(args: argparse.Namespace, environ: dict[str, str], settings: Settings) -> str:
    key = args.api_key or environ.get("SMSGW_API_KEY") or settings.admin_key
    if not key:
        raise UsageError("no API key: set SMSGW_API_KEY (or SMSGW_ADMIN_KEY), or give --api-key")
    return key


def run(settings: Settings, args: argparse.Namespace, environ: dict[str, str],
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        key = api_key(args, environ, settings)
        try:
            with open(args.csv, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.csv}: {exc.strerror}") from None
        sheet = read_csv(data, args.message)
    except UsageError as exc:
        print(f"smsgw send: {exc}; nothing was sent", file=err)
        return 2
    digest = file_digest(data, args.gateway, args.message, args.batch_size)
    progress = Progress(err, err.isatty())
    headers = {"Authorization": f"Bearer {key}", "User-Agent": "smsgw-send"}
    result = Result(total=len(sheet.rows) + len(sheet.rejected), rejected=list(sheet.rejected))
    with httpx.Client(base_url=args.api_url or settings.api_url, headers=headers,
                      timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        try:
            upload(client, args.gateway, sheet, digest, args.batch_size, result, progress)
            if args.wait and result.batch_ids:
                watch(client, result, args.timeout, progress)
        except Stop as exc:
            progress.done()
            result.error = result.error or str(exc)
            print(f"smsgw send: stopped: {exc}", file=err)
        except KeyboardInterrupt:
            progress.done()
            result.error = "interrupted"
    if args.json:
        print(json.dumps(summary(result), indent=2), file=out)
    else:
        print_summary(result, out)
    return exit_status(result)
