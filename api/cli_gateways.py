"""``smsgw gateway list|show|create|update|rotate-token|deactivate``: gateways from the host,
straight in the database (SMSGW_DATABASE_URL), by the API's own rules.

Values are checked with the API's schema (``api.gateways.SCHEMA``), written by the same
functions the routes call (``api.gateways.create`` / ``update`` / ``rotate_token``) and
recorded in the audit trail with the actor "cli". A gateway is shown as the API shows it
(``api.gateway_reads.public``), never with its password; its callback token only by
create and rotate-token, which print it for the gateway's dlr-url.

Exit status: 0 done; 1 no gateway has that id (or a rotation was refused); 2 a value the
API would refuse (the API's own messages, by option), or a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from api import audit, cli_help, cli_output, db, jsonsafe
from api.config import Settings
from api.responses import ApiError
from api.validation import ValidationFailed, validate

# Fields the command line never takes as an option: the password comes from stdin
# (--password-stdin), and a callback token is only ever made by smsgw (rotate-token).
NOT_OPTIONS = ("password", "callback_token")

HELP = {
    "name": "a name people recognise it by",
    "provider_type": "how smsgw talks to it (default jasmin)",
    "server_host": "its host name or IP address, without scheme, port or path",
    "server_port": "its port (default: the provider type's)",
    "api_path": "the path of its send API (default: the provider type's)",
    "username": "the user smsgw sends as (\"\" for none)",
    "default_sender_id": "the sender of messages that name none (\"\" for none)",
    "is_active": "true or false: whether smsgw sends through it",
    "use_ssl": "true or false: https instead of http",
    "notes": "free text for operators (\"\" for none)",
    "meta": "a JSON object kept with it",
    "throughput_per_second": "messages a second the dispatcher sends it at most (\"\" for no limit)",
    "max_in_flight": "its calls under way at once",
    "max_attempts": "attempts at one message before it fails",
    "retry_ambiguous": "true or false: resend after an answer that may mean it was sent",
    "default_validity_seconds": "seconds a message may wait to be sent (\"\" for no limit)",
}


METAVARS = {"string": "TEXT", "text": "TEXT", "integer": "N", "number": "N", "boolean": "true|false",
            "object": "JSON"}


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_of(field: str) -> str:
    """The option that sets a field, as an error names it."""
    return "--password-stdin" if field == "password" else option(field)


def add_field_options(parser: argparse.ArgumentParser, *, creating: bool) -> None:
    """An option for every field of the API's schema but the secrets, named as the field is."""
    from api.gateways import SCHEMA

    for name, spec in SCHEMA.items():
        if name in NOT_OPTIONS:
            continue
        required = creating and spec.required
        choices = f"; one of {', '.join(spec.choices)}" if spec.choices else ""
        parser.add_argument(option(name), dest=name, metavar=METAVARS[spec.kind], required=required,
                            help=HELP.get(name, name) + choices + (" (required)" if required else ""))
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the gateway's password from stdin (typed without echo on a terminal; "
                             "the whole input otherwise, one trailing newline dropped; empty for none). "
                             "Never an option's value: other users see those in ps")


def register(commands) -> None:
    gateway = commands.add_parser(
        "gateway", help="list, show, create, change and deactivate SMS gateways (straight in the database)",
        description="SMS gateways, straight in the database, checked and audited as the API does it.",
        epilog=cli_help.epilog("gateway", __doc__.split("\n\n")[-1]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = gateway.add_subparsers(dest="action", required=True, metavar="ACTION")
    formatted = {"formatter_class": argparse.RawDescriptionHelpFormatter,
                 "epilog": cli_help.epilog("gateway")}

    listed = actions.add_parser("list", help="a table of every gateway", description="Every gateway, in id order.",
                                **formatted)
    listed.add_argument("--search", metavar="TEXT", help="only those whose name, host or provider type holds TEXT")
    listed.add_argument("--json", action="store_true", help="print them as JSON, as the API lists them")

    show = actions.add_parser("show", help="one gateway, every field", description="One gateway, every field "
                              "but its password and callback token.", **formatted)
    show.add_argument("id", type=int, help="the gateway's id")
    show.add_argument("--json", action="store_true", help="print it as JSON")

    create = actions.add_parser("create", help="add a gateway; prints its callback token",
                                description="Add a gateway. Prints the callback token the gateway must send "
                                            "its receipts with.", **formatted)
    add_field_options(create, creating=True)
    create.add_argument("--json", action="store_true", help="print it as JSON (with its callback token)")

    update = actions.add_parser("update", help="change the fields given, leave the others",
                                description="Change the fields given and leave the others alone. Moving a "
                                            "gateway (host, port, path, TLS, provider type) needs its password "
                                            "again (--password-stdin), as over the API.", **formatted)
    update.add_argument("id", type=int, help="the gateway's id")
    add_field_options(update, creating=False)
    update.add_argument("--json", action="store_true", help="print it as JSON")

    rotate = actions.add_parser("rotate-token", help="give it a new callback token; prints it",
                                description="Give the gateway a new callback token and print it. The "
                                            "previous one is still accepted for the grace period.", **formatted)
    rotate.add_argument("id", type=int, help="the gateway's id")
    rotate.add_argument("--grace-seconds", metavar="N",
                        help="seconds the previous token is still accepted (default SMSGW_CALLBACK_TOKEN_GRACE, "
                             "24 h; 0 revokes every previous token at once)")
    rotate.add_argument("--json", action="store_true", help="print it as JSON (with its callback token)")

    deactivate = actions.add_parser("deactivate", help="stop sending through it (is_active false)",
                                    description="Stop sending through the gateway (is_active false), keeping it "
                                                "and its messages. update --is-active true undoes it.", **formatted)
    deactivate.add_argument("id", type=int, help="the gateway's id")
    deactivate.add_argument("--json", action="store_true", help="print it as JSON")
    gateway.set_defaults(run=cmd_gateway)


def shown(row: dict[str, Any], *, with_token: bool = False) -> dict[str, Any]:
    """A gateway as the API shows it; its callback token only where the command prints it."""
    from api.gateway_reads import public

    gateway = public(row)
    if not with_token:
        del gateway["callback_token"]
    return gateway


def read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("Gateway password (empty for none): ")
    text = sys.stdin.read()
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


class Refused(Exception):
    """Exit 2 with the API's errors, by option."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("invalid values")
        self.errors = errors


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the command line gave, as a form body would (the schema reads numbers and
    booleans from their text); --meta parsed as JSON, the password read from stdin."""
    from api.gateways import SCHEMA

    data: dict[str, Any] = {}
    for name, spec in SCHEMA.items():
        value = getattr(args, name, None)
        if name in NOT_OPTIONS or value is None:
            continue
        if spec.kind == "object" and value.strip():
            try:  # read as the API reads a body: no NaN or Infinity, nothing nested past reason
                value = jsonsafe.loads(value)
            except (ValueError, RecursionError):
                raise Refused({name: [f"The {name} must be a JSON object."]}) from None
        data[name] = value
    if getattr(args, "password_stdin", False):
        data["password"] = read_password()
    return data


def checked(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    from api.gateways import READ_ONLY, SCHEMA

    try:
        return validate(data, SCHEMA, partial=partial, from_form=True, ignored=READ_ONLY)
    except ValidationFailed as exc:
        raise Refused(exc.errors) from None


def refusal(errors: dict[str, list[str]]) -> str:
    lines = ["smsgw: nothing was changed: the given data was invalid."]
    lines += [f"  {option_of(name)}: {problem}" for name, problems in errors.items() for problem in problems]
    return "\n".join(lines)


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(settings, args))
    except Refused as exc:
        print(refusal(exc.errors), file=sys.stderr)
        return 2
    except ValidationFailed as exc:  # a rule over several fields (the password rule), as the API answers it
        print(refusal(exc.errors), file=sys.stderr)
        return 2
    except ApiError as exc:  # not found (1), or a rotation refused (1): as the API says it
        detail = "".join(f"\n  {option_of(name)}: {' '.join(problems)}" for name, problems in (exc.errors or {}).items())
        print(f"smsgw: {exc.message}{detail}", file=sys.stderr)
        return 1


def not_found(gateway_id: int) -> ApiError:
    return ApiError(404, f"no SMS gateway has id {gateway_id}")


async def current(database, gateway_id: int) -> dict[str, Any]:
    from api.resources import fetch_gateway

    row = await fetch_gateway(database, gateway_id) if db.is_row_id(gateway_id) else None
    if row is None:
        raise not_found(gateway_id)
    return row


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from api import gateways, gateway_reads

    action = args.action
    values: dict[str, Any] = {}
    if action == "create":
        values = checked(given(args), partial=False)
    elif action == "update":
        values = checked(given(args), partial=True)
        if not values:
            print("smsgw: nothing to change: give at least one field's option (smsgw gateway update --help)",
                  file=sys.stderr)
            return 2
    elif action == "rotate-token":
        grace = settings.callback_token_grace
        if args.grace_seconds is not None:
            try:
                grace = validate({"grace_seconds": args.grace_seconds}, gateways.ROTATE_SCHEMA,
                                 from_form=True)["grace_seconds"]
            except ValidationFailed as exc:
                raise Refused(exc.errors) from None
    if values.get("password") and settings.keyring.current is None:
        print("smsgw: warning: SMSGW_SECRET_KEY is not set: the gateway's password is stored in plaintext "
              "(see smsgw secrets --help)", file=sys.stderr)
    async with db.connected(settings.database_url) as (database, dialect):
        if action == "list":
            try:  # the API's rule for ?search= too
                search = validate({"search": args.search}, gateway_reads.FILTERS, from_form=True).get("search")
            except ValidationFailed as exc:
                raise Refused(exc.errors) from None
            rows = await database.fetch_all(gateway_reads.listing(search))
            found = [shown(db.as_dict(row)) for row in rows]
            print(cli_output.as_json(found) if args.json else cli_output.table(found, LIST_COLUMNS))
            return 0
        if action == "show":
            gateway = shown(await current(database, args.id))
            print(cli_output.as_json(gateway) if args.json else cli_output.fields(gateway))
            return 0
        if action == "create":
            gateway = await gateways.create(database, dialect, audit.CLI, values, settings.keyring)
            return report(args, f"SMS gateway {gateway['id']} created.", gateway, token=True)
        if action == "update":
            gateway = await gateways.update(database, dialect, audit.CLI, await current(database, args.id), values,
                                            settings.keyring)
            return report(args, f"SMS gateway {gateway['id']} updated ({', '.join(sorted(values))}).", gateway)
        if action == "deactivate":
            gateway = await gateways.update(database, dialect, audit.CLI, await current(database, args.id),
                                            {"is_active": False}, settings.keyring)
            return report(args, f"SMS gateway {gateway['id']} deactivated: smsgw sends nothing more through it.",
                          gateway)
        if action == "rotate-token":
            if db.is_row_id(args.id):
                try:
                    gateway = await gateways.rotate_token(database, dialect, audit.CLI, args.id, grace)
                except ApiError as exc:
                    raise not_found(args.id) if exc.status == 404 else exc
            else:
                raise not_found(args.id)
            until = shown(gateway)["callback_token_previous_expires_at"]
            kept = f" The previous one is accepted until {until}." if until else " No previous token is accepted."
            return report(args, f"SMS gateway {gateway['id']} has a new callback token.{kept}", gateway, token=True)
    raise AssertionError(action)


def report(args: argparse.Namespace, headline: str, row: dict[str, Any], *, token: bool = False) -> int:
    gateway = shown(row, with_token=token)
    if args.json:
        print(cli_output.as_json(gateway))
        return 0
    secret = gateway.pop("callback_token", None)
    print(headline)
    print(cli_output.fields(gateway))
    if secret is not None:
        print("\nIts callback token (the gateway sends it with every receipt, ?token= in its dlr-url);"
              "\nsmsgw gateway show never prints it:")
        print(secret)
    return 0


LIST_COLUMNS = [
    cli_output.column("id"), cli_output.column("name"), cli_output.column("type", "provider_type"),
    cli_output.column("host", "server_host"), cli_output.column("port", "server_port"),
    ("tls", lambda g: g["use_ssl"]), cli_output.column("active", "is_active"),
    cli_output.column("messages", "messages_count"), cli_output.column("created", "created_at"),
]
