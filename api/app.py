"""The Starlette application: routes, and what lives as long as the process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import (
    audit, batch_sends, db, events, gateway_call, gateway_reads, gateways, housekeeping, keys, messages, migrate,
    receipts, sending, unmatched, webhook_deliveries, webhook_endpoints,
)
from api import openapi_docs
from api.dispatcher import Dispatcher
from api.webhook_worker import WebhookWorker
from api.accesslog import AccessLog
from api.auth import require_api_key as private
from api.config import Settings
from api.pipeline import Pipeline, open_batches
from api.responses import EXCEPTION_HANDLERS

log = logging.getLogger("smsgw.api")
# The collector's first generation runs after 10,000 new objects instead of 700: a
# request makes hundreds and a batch send hundreds of thousands, nearly all freed
# by reference counting at once. Measured in make bench: a synchronous send 755 -> 1,071/s,
# a batch send 12,980 -> 15,160 messages/s.
GC_THRESHOLDS = (10_000, 10, 10)


async def schema_version(state) -> str | None:
    """The database's schema revision, read from the migration table, not ``SELECT 1``: on
    SQLite that would answer even with the database file gone. Raises when the database does
    not answer (``db.is_missing_schema`` tells one without a schema); None: an empty table."""
    if db.sqlite_file_gone(state.settings.database_url):
        raise LookupError("the database file is gone")
    return await state.database.fetch_val("SELECT version_num FROM alembic_version")


async def healthz(request: Request) -> JSONResponse:
    """200 while the database answers with its schema in place, 503 otherwise.

    A database without the migration table gets the reason (``smsgw migrate``
    fixes it); nothing else is said.
    """
    try:
        if await schema_version(request.app.state) is None:
            raise LookupError("no schema version")
    except Exception as exc:
        if db.is_missing_schema(exc):
            log.warning("health check: %s", db.NO_SCHEMA)
            return JSONResponse({"status": "unavailable", "reason": db.NO_SCHEMA}, status_code=503)
        log.warning("health check: the database did not answer")
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def running(worker) -> bool:
    """A background worker (the pipeline, the dispatcher, the webhook worker) started and neither
    stopping nor ended (crashed)."""
    return (worker is not None and worker.task is not None and not worker.task.done()
            and not getattr(worker, "stopping", False) and not getattr(worker, "stopped", False))


def not_ready(version: str | None, head: str, known: tuple[str, ...], workers: dict[str, bool],
              stopping: bool) -> str | None:
    """Why this process should get no traffic now (None: it should). ``version`` is the
    database's schema revision, ``head`` and ``known`` this code's (api.migrate.revisions),
    ``workers`` whether each background worker is running."""
    if stopping:
        return "the process is shutting down"
    if version is None:
        return db.NO_SCHEMA
    if version != head:
        if version in known:
            return f"the database schema is at revision {version}, this smsgw needs {head}: run `smsgw migrate`"
        return f"the database schema is at revision {version}, newer than this smsgw knows ({head}): upgrade smsgw"
    for name, up in workers.items():
        if not up:
            return f"the {name} is not running"
    return None


async def readyz(request: Request) -> JSONResponse:
    """200 while this process is fit for traffic: what /healthz checks, and the schema is the
    one this code needs, and the state-change pipeline, the dispatcher and the webhook worker
    are running, and the process is not shutting down; 503 with a ``reason`` otherwise."""
    state = request.app.state
    try:
        version = await schema_version(state)
    except Exception as exc:
        if not db.is_missing_schema(exc):
            log.warning("readiness check: the database did not answer")
            return JSONResponse({"status": "unavailable", "reason": "the database did not answer"}, status_code=503)
        version = None
    head, known = migrate.revisions()
    reason = not_ready(version, head, known, {
        "state-change pipeline": running(state.pipeline), "dispatcher": running(state.dispatcher),
        "webhook worker": running(state.webhooks)}, getattr(state, "stopping", False))
    if reason is not None:
        log.warning("readiness check: %s", reason)
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ok"})


def routes() -> list[Route]:
    # Every /api/ route is private (API key, with the scope api.scopes.ROUTES
    # names for it) except the receipts, which the guard admits by callback
    # token before they reach the API, and api.scopes.PUBLIC_ROUTES (the docs).
    return [
        # The receipt routes first: they carry nearly all the traffic, and Starlette
        # tries routes in order (each one tried costs a regex match).
        Route("/webhooks/jasmin/{id:int}/dlr", receipts.receive, methods=["POST", "GET"]),
        Route("/api/sms-gateways/{id:int}/dlr", receipts.receive, methods=["POST", "GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        # Public: the API's description names no secret, and its reader has no key yet.
        Route("/api/openapi.json", openapi_docs.openapi_json, methods=["GET"]),
        Route("/api/docs", openapi_docs.docs_page, methods=["GET"]),
        Route("/api/docs/{asset}", openapi_docs.docs_asset, methods=["GET"]),
        Route("/api/sms-gateways", private(gateway_reads.list_gateways), methods=["GET"]),
        Route("/api/sms-gateways", private(gateways.create_gateway), methods=["POST"]),
        Route("/api/sms-gateways/{id:int}", private(gateway_reads.show_gateway), methods=["GET"]),
        Route("/api/sms-gateways/{id:int}", private(gateways.update_gateway), methods=["PATCH", "PUT"]),
        Route("/api/sms-gateways/{id:int}", private(gateways.delete_gateway), methods=["DELETE"]),
        Route("/api/sms-gateways/{id:int}/callback-token/rotate",
              private(gateways.rotate_callback_token), methods=["POST"]),
        Route("/api/sms-gateways/{id:int}/send", private(sending.send_message), methods=["POST"]),
        Route("/api/sms-gateways/{id:int}/messages",
              private(messages.list_gateway_messages), methods=["GET"]),
        Route("/api/sms-gateways/{id:int}/messages", private(batch_sends.send_batch), methods=["POST"]),
        Route("/api/sms-batches/{id:int}", private(batch_sends.show_batch), methods=["GET"]),
        Route("/api/sms-messages/{id:int}", private(messages.show_message), methods=["GET"]),
        Route("/api/sms-messages/{id:int}/cancel", private(sending.cancel_message), methods=["POST"]),
        Route("/api/sms-messages/{id:int}/events", private(events.list_message_events), methods=["GET"]),
        Route("/api/sms-gateways/{id:int}/unmatched-dlrs", private(unmatched.list_unmatched), methods=["GET"]),
        Route("/api/api-keys", private(keys.create_key), methods=["POST"]),
        Route("/api/api-keys", private(keys.list_keys), methods=["GET"]),
        Route("/api/api-keys/{id:int}", private(keys.revoke_key), methods=["DELETE"]),
        Route("/api/audit-events", private(audit.list_audit_events), methods=["GET"]),
        Route("/api/webhook-endpoints", private(webhook_endpoints.create_endpoint), methods=["POST"]),
        Route("/api/webhook-endpoints", private(webhook_endpoints.list_endpoints), methods=["GET"]),
        Route("/api/webhook-endpoints/{id:int}", private(webhook_endpoints.show_endpoint), methods=["GET"]),
        Route("/api/webhook-endpoints/{id:int}", private(webhook_endpoints.update_endpoint_route),
              methods=["PATCH"]),
        Route("/api/webhook-endpoints/{id:int}", private(webhook_endpoints.delete_endpoint_route),
              methods=["DELETE"]),
        Route("/api/webhook-endpoints/{id:int}/secret/rotate", private(webhook_endpoints.rotate_secret_route),
              methods=["POST"]),
        Route("/api/webhook-endpoints/{id:int}/deliveries", private(webhook_deliveries.list_deliveries),
              methods=["GET"]),
        Route("/api/webhook-endpoints/{id:int}/replay", private(webhook_deliveries.replay_route),
              methods=["POST"]),
        Route("/api/webhook-deliveries/{id:int}/retry", private(webhook_deliveries.retry), methods=["POST"]),
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.settings = settings
        if settings.keyring.current is None:  # said once per process, at start
            log.warning("SMSGW_SECRET_KEY is not set: gateway passwords and webhook signing secrets are stored "
                        "in plaintext in the database. Set it (`smsgw secrets generate-key`), then run "
                        "`smsgw secrets rotate-key`.")
        else:
            log.info("gateway passwords and webhook secrets are encrypted at rest with key %s",
                     settings.keyring.current_id)
        app.state.dialect = db.dialect_of(settings.database_url)
        # Each resource is closed in reverse order, also when a later one fails to start.
        async with contextlib.AsyncExitStack() as started:
            app.state.database = db.make_database(settings.database_url)
            await app.state.database.connect()
            started.push_async_callback(app.state.database.disconnect)
            app.state.http = gateway_call.open_client()
            started.push_async_callback(app.state.http.close)
            storage = open_batches(settings.database_url, settings.unmatched_ttl)
            started.push_async_callback(storage.close)
            app.state.pipeline = Pipeline(storage.commit)
            app.state.pipeline.start()
            started.push_async_callback(app.state.pipeline.stop)
            # Everything made so far (modules, tables, compiled statements) lives as long as
            # the process: moved out of the collector's sight, a full collection no longer
            # walks it. Measured in make bench: p99 at half load 23 ms -> 8 ms.
            if not gc.get_freeze_count():  # once a process: a test run starts many apps in one
                gc.collect()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
            app.state.dispatcher = Dispatcher(app.state.database, app.state.pipeline, app.state.http, settings)
            app.state.dispatcher.start()
            started.push_async_callback(app.state.dispatcher.stop)  # before the pipeline stops: answers recorded
            # Status webhooks: the outbox's deliveries, woken by each batch that may have made some.
            app.state.webhooks = WebhookWorker(app.state.pipeline, settings, app.state.database)
            app.state.webhooks.start()
            app.state.pipeline.listeners.append(app.state.webhooks.committed)
            started.push_async_callback(app.state.webhooks.stop)  # before the pipeline stops: answers recorded
            chores = asyncio.get_running_loop().create_task(
                housekeeping.loop(app.state.database, app.state.pipeline, settings))
            started.push_async_callback(housekeeping.stop, chores)
            app.state.stopping = False
            yield
            app.state.stopping = True  # /readyz: no more traffic, while the rest stops

    return Starlette(
        routes=routes(),
        middleware=[Middleware(AccessLog)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
