"""``smsgw message show ID [--events] [--watch]``: one message as ``GET /api/sms-messages/{id}``
shows it (``api.messages.public``), read straight from the database (SMSGW_DATABASE_URL).

The operator on the host sees the phone number in full; nothing secret is shown (the
callback URL's token is redacted, as the API does). ``--events`` adds its history
(``api.events.public``); ``--watch`` prints each change until the message is final
(delivered, failed or canceled) or Ctrl-C.

Exit status: 0 shown (or watched to its end, or Ctrl-C); 1 no message has that id.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import sqlalchemy as sa

from api import cli_help, cli_output, db, states
from api.config import Settings

EVENT_COLUMNS = [
    cli_output.column("id"), cli_output.column("recorded", "recorded_at"), cli_output.column("kind"),
    cli_output.column("raw status", "raw_status"),
    ("state", lambda e: f"{e['state_before'] or '-'} -> {e['state_after'] or '-'}"),
    cli_output.column("changed"), cli_output.column("reason"), cli_output.column("from", "source_address"),
]
# What a --watch line says of each change.
WATCHED = ("state", "delivery_status", "failure_code", "failure_reason", "attempts", "next_attempt_at")


def interval(text: str) -> float:
    value = float(text)
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be from 0.2 to 3600 seconds")
    return value


def register(commands) -> None:
    message = commands.add_parser(
        "message", help="show a message and its history (straight in the database)",
        description="SMS messages, read straight from the database.",
        epilog=cli_help.epilog("message", __doc__.split("\n\n")[-1]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = message.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="one message, as the API shows it",
        description="One message, every field the API shows, the phone number in full.",
        epilog=cli_help.epilog("message"), formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("id", type=int, help="the message's id")
    show.add_argument("--events", action="store_true",
                      help="also its history: every receipt and state change, oldest first")
    show.add_argument("--watch", action="store_true",
                      help="then print each change until it is delivered, failed or canceled (Ctrl-C stops)")
    show.add_argument("--interval", type=interval, default=2.0, metavar="SECONDS",
                      help="with --watch: seconds between looks (default 2)")
    show.add_argument("--json", action="store_true",
                      help="print JSON: the message (with --events, {\"message\": ..., \"events\": [...]}); "
                           "with --watch, one such document a line, each time it changes")
    message.set_defaults(run=cmd_message)


def cmd_message(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(show(settings, args))
    except KeyboardInterrupt:  # Ctrl-C ends a --watch: what the operator asked for
        return 0


async def fetch(database, message_id: int) -> dict[str, Any] | None:
    from api.messages import fetch_message, public

    row = await fetch_message(database, message_id) if db.is_row_id(message_id) else None
    return public(row) if row is not None else None


async def events_after(database, message_id: int, after: int = 0) -> list[dict[str, Any]]:
    """The message's events with ids above ``after``, oldest first, as the API shows them."""
    from api.events import public
    from api.tables import events

    rows = await database.fetch_all(sa.select(events).where(events.c.message_id == message_id,
                                                            events.c.id > after).order_by(events.c.id))
    return [public(db.as_dict(row)) for row in rows]


def document(message: dict[str, Any], history: list[dict[str, Any]] | None) -> Any:
    return message if history is None else {"message": message, "events": history}


def changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What changed between two readings of a message, on one line."""
    parts = [f"{name} {cli_output.cell(before[name])} -> {cli_output.cell(after[name])}"
             for name in WATCHED if before[name] != after[name]]
    return "; ".join(parts)


async def show(settings: Settings, args: argparse.Namespace) -> int:
    async with db.connected(settings.database_url) as (database, _):
        message = await fetch(database, args.id)
        if message is None:
            print(f"smsgw: no SMS message has id {args.id}", file=sys.stderr)
            return 1
        history = await events_after(database, args.id) if args.events else None
        if args.json:
            print(cli_output.as_json(document(message, history)) if not args.watch else
                  cli_output.json_line(document(message, history)), flush=True)
        else:
            print(cli_output.fields(message))
            if history is not None:
                print("\nEvents:" if history else "\nEvents: none yet")
                if history:
                    print(cli_output.table(history, EVENT_COLUMNS))
            sys.stdout.flush()
        if not args.watch:
            return 0
        last_event = history[-1]["id"] if history else 0
        if not args.json and message["state"] not in states.FINAL:
            print(f"\nWatching message {args.id} every {args.interval:g} s until it is final (Ctrl-C stops):",
                  flush=True)
        while message["state"] not in states.FINAL:
            await asyncio.sleep(args.interval)
            now = await fetch(database, args.id)
            if now is None:  # deleted meanwhile (its gateway's history was removed)
                print(f"smsgw: SMS message {args.id} is gone", file=sys.stderr)
                return 1
            fresh = await events_after(database, args.id, last_event) if args.events else []
            if now == message and not fresh:
                continue
            if fresh:
                last_event = fresh[-1]["id"]
            if args.json:
                history = history + fresh if history is not None else None
                print(cli_output.json_line(document(now, history)), flush=True)
            else:
                said = changes(message, now)
                if said:
                    print(f"{time.strftime('%H:%M:%S')}  {said}", flush=True)
                for event in fresh:
                    print(f"{time.strftime('%H:%M:%S')}  event {event['id']}: {event['kind']} "
                          f"{cli_output.cell(event['raw_status'])} ({event['state_before'] or '-'} -> "
                          f"{event['state_after'] or '-'}{', ' + event['reason'] if event['reason'] else ''})",
                          flush=True)
            message = now
        if not args.json:
            print(f"Message {args.id} is {message['state']}.", flush=True)
    return 0
