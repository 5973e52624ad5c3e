"""The guard's Prometheus metrics, and its listener (``SMSGW_GUARD_METRICS_HOST``/``_PORT``,
127.0.0.1:9181 by default, 0 turns it off): a port of its own, never behind nginx.

The guard is one process: its metrics live in its own registry, whatever
``PROMETHEUS_MULTIPROC_DIR`` says (that is the API's). What is counted is each
verdict (admitted, or refused and why), and how the token cache answered.
"""

from __future__ import annotations

import os

# The API's variable (api.metrics_server), read by prometheus_client when first imported:
# not in the guard, whose values stay in its own memory and never in the API's files.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from prometheus_client import (  # noqa: E402
    GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, disable_created_metrics,
)

from api.metrics_server import listen  # noqa: E402
from guard import decision  # noqa: E402

disable_created_metrics()  # no *_created series beside each counter: twice the series, read by no one
REGISTRY = CollectorRegistry(auto_describe=True)
for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # its memory, CPU, open files ...
    REGISTRY.register(collector)

ADMITTED = Counter(
    "smsgw_guard_admitted_total", "Receipts admitted: their callback token matched (forwarded to the API, or "
    "allowed to nginx's auth_request).", registry=REGISTRY)
REFUSED = Counter(
    "smsgw_guard_refused_total", "Requests refused, by reason: not_found (not a receipt route), malformed, "
    "missing_token, conflicting_tokens, forbidden (a wrong token or no such gateway), retry (the ration of "
    "database reads spent: 503 with Retry-After), unavailable (the database did not answer).",
    ["reason"], registry=REGISTRY)
CACHE = Counter(
    "smsgw_guard_cache_lookups_total", "Look-ups of a gateway's tokens: hit (answered from the cache), miss "
    "(the cache was stale or did not know the gateway).", ["result"], registry=REGISTRY)
DATABASE_READS = Counter(
    "smsgw_guard_database_reads_total", "Reads of the database: reload (every gateway's tokens, once the "
    "cache is SMSGW_GUARD_CACHE_TTL old), recheck (one gateway, before a refusal).", ["kind"], registry=REGISTRY)

# Each refusal's reason, a word: the verdicts are ``guard.decision``'s constants.
REASONS = {
    decision.NOT_FOUND: "not_found",
    decision.MALFORMED: "malformed",
    decision.MISSING_TOKEN: "missing_token",
    decision.CONFLICTING_TOKEN: "conflicting_tokens",
    decision.FORBIDDEN: "forbidden",
    decision.RETRY: "retry",
    decision.UNAVAILABLE: "unavailable",
}
for reason in REASONS.values():  # every reason shows 0 from the start, not only once it happened
    REFUSED.labels(reason)
CACHE_HIT, CACHE_MISS = CACHE.labels("hit"), CACHE.labels("miss")  # bound once: one of them per receipt
for kind in ("reload", "recheck"):
    DATABASE_READS.labels(kind)


def decided(verdict: decision.Verdict) -> None:
    if verdict.allowed:
        ADMITTED.inc()
    else:
        REFUSED.labels(REASONS.get(verdict, "other")).inc()


def start(settings):
    """Listen; the server, or None when SMSGW_GUARD_METRICS_PORT is 0. Raises
    ``api.metrics_server.ListenerFailed`` naming the port and the variable."""
    if settings.guard_metrics_port == 0:
        return None
    return listen(REGISTRY, settings.guard_metrics_host, settings.guard_metrics_port, "SMSGW_GUARD_METRICS_PORT")
