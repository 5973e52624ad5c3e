"""One log for every smsgw process: text or JSON, a request id, nothing private.

Every process (the API and its uvicorn workers, the guard and mitmproxy, the
simulator, the webhook receiver, the CLI) sends every line, its own and its
libraries', through the one root handler ``configure`` installs. So:

- ``SMSGW_LOG_FORMAT=json`` makes each line one JSON object (time in ISO-8601
  UTC, level, logger, message, request_id when there is one, and structured
  fields such as gateway_id and failure_code); ``text`` keeps the readable look.
- ``REQUEST_ID`` holds the id of the request being served (set by
  ``api.accesslog``); ``Redact`` puts it on every line made while it runs.
- ``Redact`` masks phone numbers (``+1555***4567``) and secrets in URLs and
  query strings in every line, message and fields alike: a rule here cannot
  be forgotten by a caller, whatever it logs.

uvicorn gets ``dict_config``, the same configuration as a dictConfig
dictionary: it applies it itself in each worker process it spawns.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import sys
import time
import uuid
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("smsgw_request_id", default=None)
HEADER = "X-Request-ID"

# An id from outside is an id only: letters, digits and . _ : - (nginx's $request_id is 32
# hex digits, a UUID has dashes), at most 128 characters. Anything else is replaced, never logged.
# The nginx configs (deploy/nginx/) keep a client's id by this same pattern, so every hop
# agrees on it (tests/test_logs.py compares them).
REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Libraries whose INFO lines name URLs: an outbound URL can carry credentials (Jasmin's HTTP
# API takes them as parameters), a database URL a password.
QUIET = ("alembic.runtime.plugins", "httpx", "httpcore", "databases")


def request_id_from(value: str | None) -> str:
    """``value`` (an ``X-Request-ID`` header) when it is a well-formed id, a new one otherwise."""
    if value is not None and REQUEST_ID_FORM.fullmatch(value):
        return value
    return new_request_id()


def new_request_id() -> str:
    return uuid.uuid4().hex


# --- masking -----------------------------------------------------------------------

# A number in international form: + (or its URL encoding) and 8 to 15 digits, not inside a
# longer run of digits. What smsgw stores and sends is E.164, so that is how numbers appear.
PHONE = re.compile(r"((?<![\d+])\+|%2[bB])(\d{8,15})(?!\d)")
# The query string of a URL (Jasmin's HTTP API takes the password there; a DLR URL the token).
URL_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
# user:password@ in a URL (a database URL, a gateway's).
URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@\"'<>]+@")
# key=value pairs named like secrets, wherever they appear (a path with its query, a form).
SECRET_PAIR = re.compile(r"(?i)\b([a-z_-]*(?:token|password|passwd|secret|api_key|apikey)=)[^&\s\"'<>;,]+")
MASK = "***"
# What each of those needs to match: a line without any of these is left as it is.
MAY_HIDE = re.compile(r"\+\d|%2[bB]|://|=")


def mask_phone(digits_with_plus: str) -> str:
    """``+15551234567`` -> ``+1555***4567``: the country code's end of the number and the
    last 4 digits, enough to tell numbers apart in a log, never the whole number.

    The leading digits kept shrink on short numbers so that at least 3 are always hidden.
    """
    plus, digits = (digits_with_plus[0], digits_with_plus[1:]) if digits_with_plus.startswith("+") else \
        (digits_with_plus[:3], digits_with_plus[3:])
    lead = max(1, min(4, len(digits) - 7))
    return f"{plus}{digits[:lead]}{MASK}{digits[-4:]}"


def redact(text: str) -> str:
    """``text`` with phone numbers masked and any secret a URL or a query string may carry
    replaced: a URL keeps its scheme, host and path only."""
    if not text or not MAY_HIDE.search(text):  # most lines: nothing to look at (and no cost)
        return text
    text = URL_QUERY.sub(lambda m: f"{m.group(1)}?{MASK}", text)
    text = URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = SECRET_PAIR.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return PHONE.sub(lambda m: mask_phone(m.group(1) + m.group(2)), text)


UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """Client text (a request path, decoded by the server) with control characters written as
    escapes: a %0A in a path must not start a forged line of the text log."""
    return UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if UNPRINTABLE.search(text) else text


# --- the record's fields ---------------------------------------------------------------

STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
DROPPED = frozenset({"color_message"})  # uvicorn's copy of a message with terminal colours


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a caller passed in ``extra=`` (and request_id), in the order given."""
    return {key: value for key, value in record.__dict__.items()
            if key not in STANDARD and key not in DROPPED and not key.startswith("_")}


class Redact(logging.Filter):
    """On the one handler: every line gets the current request id, and is masked.

    The message is rendered here (``msg % args``) and masked whole, so an argument cannot
    slip a number or a token past; string fields and tracebacks are masked too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        try:
            text = record.getMessage()
        except Exception:  # a bad format string in some caller: say what it was, never raise into it
            text = f"{record.msg!s} (unformattable arguments: {record.args!r})"
        record.msg = redact(text)
        record.args = None
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_second: tuple[int, str] = (-1, "")  # the last second formatted: a busy process logs many lines in each


def utc_time(record: logging.LogRecord) -> str:
    """``2026-11-27T23:02:42.064Z``."""
    global _second
    seconds = int(record.created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id (when a request
    caused it), the caller's fields, and exception (a traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": utc_time(record), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        if (request_id := getattr(record, "request_id", None)) is not None:
            line["request_id"] = request_id
        for key, value in extra_fields(record).items():
            if key != "request_id":
                line[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable look: ``2026-11-27 22:54:05,123 INFO smsgw.access [req 9f1c...] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(req)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.req = f" [req {request_id}]" if request_id else ""
        try:
            return super().format(record)
        finally:
            del record.req


FORMATTERS = {"json": JsonFormatter, "text": TextFormatter}


def make_handler(format: str = "text") -> logging.Handler:
    """The one handler: standard error, the chosen format, masking. (A dictConfig factory.)"""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FORMATTERS[format]())
    handler.addFilter(Redact())
    return handler


def dict_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """The logging configuration of every smsgw process, as a dictConfig dictionary
    (uvicorn's ``log_config``): the root logger with the one handler; uvicorn's loggers
    sent to it (no handlers of their own); the libraries that name URLs quietened."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"smsgw": {"()": "api.logs.make_handler", "format": log_format}},
        "root": {"level": level, "handlers": ["smsgw"]},
        "loggers": {
            **{name: {"level": "WARNING"} for name in QUIET},
            **{name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
        },
    }


def configure(settings: Any = None, *, log_format: str | None = None, level: str | None = None) -> None:
    """Set up logging in this process from ``settings`` (``log_format``, ``log_level``), or
    from the arguments; replaces whatever handlers were there. Safe to call again."""
    log_format = log_format or getattr(settings, "log_format", None) or "text"
    level = level or getattr(settings, "log_level", None) or "INFO"
    logging.config.dictConfig(dict_config(log_format, level))
