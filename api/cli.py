"""smsgw, an SMS gateway service: run its API, guard and simulator, and manage its
database (schema, gateways, messages, API keys, audit trail, secrets) from the host."""

from __future__ import annotations

import argparse
import asyncio
import sys

from api.config import ConfigError, Settings


def configure_logging(settings: Settings | None = None) -> None:
    """Every line of this process through api.logs (SMSGW_LOG_FORMAT, SMSGW_LOG_LEVEL); with
    settings that do not parse, the defaults (the command then says what is wrong)."""
    from api import logs

    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError:
            pass
    logs.configure(settings)


def worker_app():
    """The app of one of several API workers: a process of its own, started by
    uvicorn, so smsgw's logging is set up here as well as in the parent."""
    from api.app import create_app

    configure_logging()  # uvicorn applied api.logs.dict_config already; this makes sure of it
    return create_app()


def workers_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be from 1 to 64")
    return value


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import atexit

    import uvicorn

    from api import db, logs, metrics_server

    if not asyncio.run(db.has_schema(settings.database_url)):
        print(f"smsgw: {db.NO_SCHEMA}", file=sys.stderr)
        return 2
    workers = args.workers or settings.api_workers
    metrics = metrics_server.Listener(settings, workers)  # before the app's modules: see api.metrics_server
    try:
        metrics.start()
    except metrics_server.ListenerFailed as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    atexit.register(metrics.stop)
    from api.app import create_app

    # Several workers: each process makes its own app (and pipeline) from the environment.
    app = "api.cli:worker_app" if workers > 1 else create_app(settings)
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers,
        host=settings.api_host,
        port=settings.api_port,
        # uvicorn's access log prints query strings, where callback tokens
        # travel; smsgw's AccessLog writes a line without them instead.
        access_log=False,
        # uvicorn's lines through api.logs, in this process and in each worker it spawns
        log_config=logs.dict_config(settings.log_format, settings.log_level),
        log_level=settings.log_level.lower(),
        proxy_headers=False,
        server_header=False,
    )
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from api import migrate

    migrate.upgrade(settings.database_url)
    print("database schema is up to date")
    return 0


def cmd_apikey(settings: Settings, args: argparse.Namespace) -> int:
    """Keys from the command line; each create and revoke is audited with actor "cli"."""
    from api import audit, db, keys, scopes

    if args.action == "create":
        if not args.name.strip():
            print("smsgw: --name must not be empty", file=sys.stderr)
            return 2
        try:
            # No --scope: every scope, as keys had before scopes existed (and the README's walk-through).
            chosen = scopes.parse_scopes(args.scope) if args.scope else scopes.ALL
            countries = scopes.parse_countries(args.country) if args.country else None
        except ValueError as exc:
            print(f"smsgw: {exc}", file=sys.stderr)
            return 2
        gateway_ids = frozenset(args.gateway) if args.gateway else None

    async def run() -> int:
        async with db.connected(settings.database_url) as (database, dialect):
            if args.action == "create":
                if gateway_ids is not None and (missing := await keys.unknown_gateways(database, gateway_ids)):
                    print(f"smsgw: no SMS gateway has id {', '.join(map(str, missing))}", file=sys.stderr)
                    return 2
                name = args.name.strip()
                key_id, key = await keys.store_key(database, dialect, audit.CLI, name, chosen, gateway_ids,
                                                   countries)
                print(f"API key {key_id} ({name}) created with {describe(chosen, gateway_ids, countries)}.")
                print("It is shown only this once:")
                print(key)
            elif args.action == "list":
                from api import cli_output

                found = await keys.stored_keys(database)
                print(cli_output.as_json(found) if args.json else cli_output.table(found, key_columns()))
            elif args.action == "revoke":
                if not await keys.revoke_stored_key(database, dialect, audit.CLI, args.id):
                    print(f"no active API key with id {args.id}", file=sys.stderr)
                    return 1
                print(f"API key {args.id} revoked")
            return 0

    return asyncio.run(run())


def key_columns() -> list:
    """``smsgw apikey list``'s table: never a key or its hash, the prefix names it."""
    from api import scopes

    return [
        ("id", lambda k: k["id"]), ("name", lambda k: k["name"]), ("prefix", lambda k: k["key_prefix"] + "..."),
        ("scopes", lambda k: "all" if set(k["scopes"]) == scopes.ALL else k["scopes"]),
        ("gateways", lambda k: "all" if k["gateway_ids"] is None else k["gateway_ids"]),
        ("countries", lambda k: "any" if k["allowed_countries"] is None else k["allowed_countries"]),
        ("created", lambda k: k["created_at"]), ("revoked", lambda k: k["revoked_at"]),
    ]


def describe(chosen, gateway_ids, countries) -> str:
    """A key's limits in one line: "scopes messages:send,messages:read; gateways 3,5; countries GB"."""
    from api import scopes

    held = scopes.ordered(chosen)
    text = "every scope" if set(held) == scopes.ALL else "scopes " + ",".join(held)
    text += "; every gateway" if gateway_ids is None else "; gateways " + ",".join(map(str, sorted(gateway_ids)))
    text += "; any country" if countries is None else "; countries " + ",".join(sorted(countries))
    return text


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    """``smsgw audit verify [--anchor ID:HASH ...]``: check the audit trail's hash chain, and that
    each anchored row still has the hash noted earlier; exit 1 naming the first bad row.

    The chain alone cannot catch someone who re-links it after an edit (its hash has no
    secret); an anchor kept outside the database can."""
    from api import audit, db

    anchors = dict(args.anchor or ())

    async def run() -> int:
        async with db.connected(settings.database_url) as (database, _):
            verdict = await audit.verify(database, anchors=anchors)
        if verdict.ok:
            checked = f", {len(anchors)} anchors hold" if anchors else ""
            print(f"OK: {verdict.count} audit events, chain intact{checked}; last hash {verdict.last_hash}")
            if verdict.last_id is not None:
                print(f"Keep this anchor outside the database to detect a rewrite later: "
                      f"--anchor {verdict.last_id}:{verdict.last_hash}")
            return 0
        print(f"BROKEN at audit event {verdict.bad_id}: {verdict.problem} "
              f"({verdict.count - 1} events before it chain correctly)", file=sys.stderr)
        return 1

    return asyncio.run(run())


def cmd_guard(settings: Settings, args: argparse.Namespace) -> int:
    from guard import server

    server.run(settings)
    return 0


def cmd_simulator(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api import logs
    from simulator.app import Credentials, Knobs, create_app

    knobs = Knobs(delay=settings.simulator_delay, retry_delay=settings.simulator_retry_delay)
    app = create_app(Credentials(settings.simulator_username, settings.simulator_password), knobs)
    uvicorn.run(app, host=settings.simulator_host, port=settings.simulator_port, access_log=False,
                log_config=logs.dict_config(settings.log_format, settings.log_level), log_level="warning",
                server_header=False)
    return 0


def cmd_webhook_receiver(settings: Settings, args: argparse.Namespace) -> int:
    """``smsgw webhook-receiver``: simulator.receiver on a port, printing each event it gets.

    Secrets come from --secret and from SMSGW_WEBHOOK_SECRET (comma-separated), the variable
    being the way to keep them out of ``ps``; a malformed one stops it, without being echoed."""
    import os

    import uvicorn

    from api import logs
    from simulator.receiver import create_app

    env_secrets = [s.strip() for s in os.environ.get("SMSGW_WEBHOOK_SECRET", "").split(",") if s.strip()]
    secrets = [*(args.secret or ()), *env_secrets]
    if args.subscribe:
        endpoint_id, own = asyncio.run(subscribe_receiver(settings, f"http://{args.host}:{args.port}/smsgw"))
        secrets += own
        print(f"subscribed as webhook endpoint {endpoint_id}: every event of every gateway", flush=True)
    try:
        app = create_app(secrets, json_output=args.json, controls=args.test_controls)
    except ValueError as exc:
        print(f"smsgw: --secret / SMSGW_WEBHOOK_SECRET: {exc}", file=sys.stderr)
        return 2
    check = (f"verifying signatures with {len(secrets)} secret{'s' if len(secrets) > 1 else ''}" if secrets else
             "NOT verifying signatures (no --secret or SMSGW_WEBHOOK_SECRET): every event is recorded unverified")
    print(f"webhook receiver listening on http://{args.host}:{args.port}/ (POST to any path); {check}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, server_header=False,
                log_config=logs.dict_config(settings.log_format, settings.log_level), log_level="warning")
    return 0


async def subscribe_receiver(settings: Settings, url: str) -> tuple[int, list[str]]:
    """The endpoint at ``url`` (made, subscribed to every event, if there is none; enabled
    if it was off) and the secrets it is signed with, read from the database, as the
    API reads them (sealed ones opened with SMSGW_SECRET_KEY): ``--subscribe``."""
    import sqlalchemy as sa

    from api import audit, clock, db, notices, webhook_endpoints as hooks

    async with db.connected(settings.database_url) as (database, dialect):
        table = hooks.webhook_endpoints
        found = await database.fetch_val(sa.select(table.c.id).where(table.c.url == url).order_by(table.c.id))
        if found is None:
            found, _ = await hooks.insert_endpoint(database, dialect, audit.CLI, {
                "url": url, "events": list(notices.EVENT_TYPES),
                "description": "smsgw webhook-receiver --subscribe"}, settings.keyring)
        else:
            await hooks.update_endpoint(database, dialect, audit.CLI, found, {"is_active": True})
        row = await hooks.fetch_endpoint(database, found)
        return found, hooks.signing_secrets(row, settings.keyring, clock.now_iso())


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 1 to 65535")
    return value


DEMO_GATEWAY = "demo (Jasmin simulator)"


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Make sure a gateway pointing at the simulator exists; print its id."""
    import sqlalchemy as sa

    from api import db, gateways, passwords

    async def run() -> int:
        async with db.connected(settings.database_url) as (database, _):
            table = gateways.gateways
            values = {
                "provider_type": "jasmin", "api_path": "secure/send",
                "server_host": settings.simulator_host, "server_port": settings.simulator_port,
                "username": settings.simulator_username, "password": settings.simulator_password,
            }
            found = await database.fetch_val(sa.select(table.c.id).where(table.c.name == DEMO_GATEWAY))
            if found is None:
                gateway = await gateways.insert_gateway(database, {
                    "name": DEMO_GATEWAY, "default_sender_id": "smsgw", **values,
                    "notes": "Created by `smsgw demo` for the README walk-through.",
                }, settings.keyring)
                found = gateway["id"]
            else:  # follow the simulator if its address or credentials changed
                await database.execute(table.update().where(table.c.id == found)
                                       .values(**passwords.sealed_values(settings.keyring, values)))
            print(found)
            return 0

    return asyncio.run(run())


def cmd_secrets(settings: Settings, args: argparse.Namespace) -> int:
    """``generate-key`` prints a new SMSGW_SECRET_KEY; ``rotate-key`` seals every gateway
    password and webhook signing secret under SMSGW_SECRET_KEY, opening older ones with
    SMSGW_SECRET_KEY_PREVIOUS."""
    from api import db, passwords, secrets

    if args.action == "generate-key":
        print(secrets.generate_key())
        return 0
    if settings.keyring.current is None:
        print("smsgw: SMSGW_SECRET_KEY is not set: there is no key to encrypt secrets with", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            async with db.connected(settings.database_url) as (database, dialect):
                changed, total = await passwords.rotate(database, dialect, settings.keyring)
        except passwords.RotationFailed as exc:
            print(f"smsgw: nothing was changed. {exc}. Add the key that sealed them to "
                  "SMSGW_SECRET_KEY_PREVIOUS, or set those passwords again (or rotate those webhook secrets).",
                  file=sys.stderr)
            return 1
        print(f"{changed} of {total} stored secrets (gateway passwords, webhook signing secrets) re-encrypted "
              f"under key {settings.keyring.current_id}")
        return 0

    return asyncio.run(run())


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    """``smsgw send --gateway ID --csv FILE``: see api.bulk_send."""
    import os

    from api import bulk_send

    return bulk_send.run(settings, args, dict(os.environ))


def batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be from 1 to 10000 (and at most the server's SMSGW_MAX_BATCH)")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


SEND_EPILOG = """\
The CSV's header names its columns: to_number (required), message (required unless
--message), client_reference (optional); any other column stops the command before
anything is sent. Rows the API rejects are reported by line number (the header is
line 1) and the others are stored. Each chunk carries an Idempotency-Key derived from
the file's content (and --gateway, --message, --batch-size): running the same command
again within 24 hours, e.g. after a crash, stores nothing twice.

Exit status: 0 every row stored; 1 a row rejected, the API refused to go on, or
--wait timed out; 2 a usage error (nothing sent)."""


def anchor(text: str) -> tuple[int, str]:
    from api import audit_chain

    try:
        return audit_chain.parse_anchor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TOP_EPILOG = """\
Every command reads SMSGW_LOG_FORMAT and SMSGW_LOG_LEVEL for its log lines, and warns
about any SMSGW_* variable it does not know (a typo). smsgw COMMAND --help lists the
variables each command reads; the README's configuration table says the rest.

Exit status: 0 done; 1 the command ran and failed (e.g. no such id); 2 a usage error,
a bad variable, or a database smsgw migrate never ran on."""


def parser() -> argparse.ArgumentParser:
    from api import cli_gateways, cli_help, cli_messages

    raw = argparse.RawDescriptionHelpFormatter

    def command(name: str, help: str, description: str, before: str = "", **kw) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description, formatter_class=raw,
                                   epilog=cli_help.epilog(name, before), **kw)

    top = argparse.ArgumentParser(prog="smsgw", description=__doc__, epilog=TOP_EPILOG, formatter_class=raw)
    top.add_argument("--version", action="version", version=f"smsgw {version()}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = command("api", "serve the HTTP API", "Serve the HTTP API (and its dispatcher, pipeline and webhook "
                  "worker), on SMSGW_API_HOST:SMSGW_API_PORT.")
    api.add_argument("--workers", type=workers_count, metavar="N",
                     help="processes serving the API (default: SMSGW_API_WORKERS, 1)")
    api.set_defaults(run=cmd_api)
    command("migrate", "create or upgrade the database schema",
            "Create or upgrade the database schema. Running it twice is harmless.").set_defaults(run=cmd_migrate)
    command("guard", "serve the callback-token guard in front of the API",
            "Serve the callback-token guard: it admits a receipt to the API only with its gateway's "
            "callback token.").set_defaults(run=cmd_guard)
    command("simulator", "serve the Jasmin simulator",
            "Serve a Jasmin stand-in: its send APIs and receipts, for the demo and the tests."
            ).set_defaults(run=cmd_simulator)
    receiver = command("webhook-receiver", "receive status webhooks, verify their signatures, print one line "
                                           "per event",
                       "Receive status webhooks, verify each signature and print one line per event; "
                       "401 for a bad signature.")
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receiver.add_argument("--port", type=port_number, default=8090, help="port to listen on (default 8090)")
    receiver.add_argument("--secret", action="append", metavar="WHSEC",
                          help="an endpoint's secret (whsec_...) to verify with, repeatable; also read from "
                               "SMSGW_WEBHOOK_SECRET (comma-separated), which other users cannot see in ps")
    receiver.add_argument("--json", action="store_true",
                          help="print each verified event's body as one line of JSON instead (refused ones go "
                               "to stderr)")
    receiver.add_argument("--test-controls", action="store_true",
                          help="serve /_receiver/ (what it got, scripted answers, new secrets) for tests; "
                               "anyone who can reach the port can use them")
    receiver.add_argument("--subscribe", action="store_true",
                          help="subscribe this receiver (http://HOST:PORT/smsgw) to every event, straight in the "
                               "database (SMSGW_DATABASE_URL), and verify with its secret; the API must allow "
                               "http:// and local addresses (SMSGW_WEBHOOK_ALLOW_HTTP/_PRIVATE=1, as make run does)")
    receiver.set_defaults(run=cmd_webhook_receiver)
    command("demo", "ensure the demo gateway (pointing at the simulator) exists; print its id",
            "Make sure the demo gateway, which sends to the simulator, exists and print its id "
            "(make run calls it).").set_defaults(run=cmd_demo)
    cli_gateways.register(commands)
    cli_messages.register(commands)
    apikey = command("apikey", "create, list and revoke API keys (straight in the database)",
                     "API keys, straight in the database; each create and revoke is in the audit trail "
                     "with the actor \"cli\".")
    actions = apikey.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a new key and print it once", formatter_class=raw,
                                description="Make a new API key and print it, this once: only its hash is kept.",
                                epilog=cli_help.epilog("apikey"))
    create.add_argument("--name", required=True, help="who or what the key is for (required, not empty)")
    create.add_argument("--scope", action="append", metavar="SCOPE",
                        help="what the key may do, repeatable: messages:send, messages:read, gateways:read, "
                             "gateways:admin, keys:admin, webhooks:admin, or all (the default when no --scope "
                             "is given)")
    create.add_argument("--gateway", action="append", type=int, metavar="ID",
                        help="limit the key to this gateway, repeatable (default: every gateway)")
    create.add_argument("--country", action="append", metavar="CC",
                        help="allow sending only to this ISO 3166 country, e.g. GB; repeatable (default: any)")
    listed = actions.add_parser("list", help="a table of every key (never the keys themselves)", formatter_class=raw,
                                description="Every API key with its limits, named by its prefix: never the key.",
                                epilog=cli_help.epilog("apikey"))
    listed.add_argument("--json", action="store_true", help="print them as JSON, as the API lists them")
    revoke = actions.add_parser("revoke", help="revoke a key by id", formatter_class=raw,
                                description="Revoke an active API key: it is refused from now on.",
                                epilog=cli_help.epilog("apikey", "Exit status 1: no active key has that id."))
    revoke.add_argument("id", type=int, help="the key's id (apikey list shows it)")
    apikey.set_defaults(run=cmd_apikey)
    audit = command("audit", "the audit trail", "The audit trail of keys, gateways and webhook endpoints.")
    audit_actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = audit_actions.add_parser("verify", help="check the audit trail's hash chain (exit 1 if broken)",
                                      description="Check the audit trail's hash chain; exit 1 naming the first "
                                                  "row changed or removed.", formatter_class=raw,
                                      epilog=cli_help.epilog("audit"))
    verify.add_argument("--anchor", action="append", type=anchor, metavar="ID:HASH",
                        help="row ID must still have HASH, as an earlier verify printed; repeatable. "
                             "Catches an edit hidden by re-linking the chain, and removed newest rows")
    audit.set_defaults(run=cmd_audit)
    secrets = command("secrets", "encryption of gateway passwords and webhook secrets at rest",
                      "Encryption of gateway passwords and webhook signing secrets at rest.")
    secrets_actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    secrets_actions.add_parser("generate-key", help="print a new key for SMSGW_SECRET_KEY",
                               description="Print a new random key for SMSGW_SECRET_KEY.")
    secrets_actions.add_parser("rotate-key", help="re-encrypt every gateway password and webhook secret under "
                                                  "SMSGW_SECRET_KEY, reading old ones with SMSGW_SECRET_KEY_PREVIOUS",
                               description="Re-encrypt every gateway password and webhook secret under "
                                           "SMSGW_SECRET_KEY, reading older ones with SMSGW_SECRET_KEY_PREVIOUS.",
                               formatter_class=raw, epilog=cli_help.epilog("secrets"))
    secrets.set_defaults(run=cmd_secrets)
    send = command("send", "send the messages of a CSV file through the API, in batches",
                   "Send the messages of a CSV file through the API's batch route, in batches.", SEND_EPILOG)
    send.add_argument("--gateway", required=True, type=int, metavar="ID", help="the SMS gateway to send through")
    send.add_argument("--csv", required=True, metavar="FILE", help="UTF-8 CSV: to_number,message,client_reference")
    send.add_argument("--message", metavar="TEXT", help="the text of every row whose message cell is empty "
                                                        "(or of every row, when the file has no message column)")
    send.add_argument("--batch-size", type=batch_size, default=500, metavar="N",
                      help="messages per request (default 500; at most the server's SMSGW_MAX_BATCH, 1000)")
    send.add_argument("--wait", action="store_true",
                      help="then show counts by state until every message is delivered, failed or canceled")
    send.add_argument("--timeout", type=seconds, metavar="SECONDS",
                      help="with --wait: stop waiting after this long, exit 1 (default: wait until all are final)")
    send.add_argument("--json", action="store_true", help="print the summary as JSON")
    send.add_argument("--api-url", metavar="URL", help="the API (default: SMSGW_API_URL, http://127.0.0.1:8000)")
    send.add_argument("--api-key", metavar="KEY", help="an API key with messages:send (and messages:read for "
                                                      "--wait); default: SMSGW_API_KEY, else SMSGW_ADMIN_KEY. "
                                                      "A key on the command line is visible to other users "
                                                      "of the machine: prefer the variable")
    send.set_defaults(run=cmd_send)
    return top


def main(argv: list[str] | None = None) -> int:
    import os

    from api.config import unknown_variables

    args = parser().parse_args(argv)
    configure_logging()
    for line in unknown_variables(dict(os.environ)):
        print(f"smsgw: warning: {line}", file=sys.stderr)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return 2
    try:
        return args.run(settings, args)
    except BrokenPipeError:  # `smsgw ... | head` stopped reading: no traceback over it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a process ended by SIGPIPE
    except Exception as exc:
        from api import db

        if db.is_missing_schema(exc):  # said as such, not as a driver's traceback
            print(f"smsgw: {db.NO_SCHEMA}", file=sys.stderr)
            return 2
        raise


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("smsgw")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
