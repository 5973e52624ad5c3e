"""What each command's --help says about the SMSGW_* variables it reads: one list per
command, one short line per variable (the README's configuration table says the rest)."""

from __future__ import annotations

VARIABLES = {
    "SMSGW_DATABASE_URL": "the database (default sqlite:///var/smsgw.db; postgresql://... for PostgreSQL)",
    "SMSGW_API_HOST": "where the API listens (default 127.0.0.1)",
    "SMSGW_API_PORT": "the API's port (default 8000)",
    "SMSGW_API_WORKERS": "processes serving the API (default 1)",
    "SMSGW_API_URL": "the API's address (default http://SMSGW_API_HOST:SMSGW_API_PORT)",
    "SMSGW_API_KEY": "the API key to use (falls back to SMSGW_ADMIN_KEY)",
    "SMSGW_ADMIN_KEY": "a bootstrap key with every scope (unset by default)",
    "SMSGW_PUBLIC_URL": "the base URL gateways send receipts to (default the guard's)",
    "SMSGW_SECRET_KEY": "the key gateway passwords and webhook secrets are encrypted with",
    "SMSGW_SECRET_KEY_PREVIOUS": "older keys, comma-separated, to read what they encrypted",
    "SMSGW_GATEWAY_TIMEOUT": "seconds for a whole gateway call (default 10)",
    "SMSGW_CALLBACK_TOKEN_GRACE": "seconds a rotated callback token is still accepted (default 86400)",
    "SMSGW_MAX_BODY_BYTES": "the largest request body (default 65536)",
    "SMSGW_UNMATCHED_TTL": "seconds a receipt waits for its message (default 172800)",
    "SMSGW_QUEUED_GRACE": "seconds before an interrupted gateway call fails its message (default 60)",
    "SMSGW_MAX_BATCH": "the most messages in one batch send (default 1000)",
    "SMSGW_DISPATCH_INTERVAL": "seconds between the dispatcher's looks for work (default 1)",
    "SMSGW_HOUSEKEEPING_INTERVAL": "seconds between housekeeping rounds (default 60)",
    "SMSGW_SQLITE_SYNCHRONOUS": "NORMAL or FULL: when a SQLite commit returns (default NORMAL)",
    "SMSGW_METRICS_HOST": "where the API's Prometheus metrics listen (default 127.0.0.1)",
    "SMSGW_METRICS_PORT": "the API's metrics port (default 9180; 0: off)",
    "SMSGW_GUARD_METRICS_HOST": "where the guard's Prometheus metrics listen (default 127.0.0.1)",
    "SMSGW_GUARD_METRICS_PORT": "the guard's metrics port (default 9181; 0: off)",
    "SMSGW_LOG_FORMAT": "text or json (default text)",
    "SMSGW_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "SMSGW_WEBHOOK_TIMEOUT": "seconds an endpoint has to answer a webhook (default 15)",
    "SMSGW_WEBHOOK_RETRY_SCHEDULE": "seconds before each webhook attempt",
    "SMSGW_WEBHOOK_ALLOW_HTTP": "1: endpoints may use http:// (default 0)",
    "SMSGW_WEBHOOK_ALLOW_PRIVATE": "1: endpoints may be local or private addresses (default 0)",
    "SMSGW_WEBHOOK_DISABLE_AFTER": "seconds an endpoint may fail before it is disabled (default 432000)",
    "SMSGW_WEBHOOK_SECRET_GRACE": "seconds a rotated webhook secret keeps signing (default 86400)",
    "SMSGW_WEBHOOK_CONCURRENCY": "webhook requests under way at once, per process (default 64)",
    "SMSGW_WEBHOOK_INTERVAL": "seconds between the webhook worker's looks for work (default 1)",
    "SMSGW_WEBHOOK_RETENTION": "seconds webhook events are kept (default 2592000)",
    "SMSGW_WEBHOOK_MAX_LAG": "seconds receipts may hold webhooks back (default 10)",
    "SMSGW_WEBHOOK_SECRET": "secrets to verify webhooks with, comma-separated (kept out of ps)",
    "SMSGW_GUARD_HOST": "where the guard listens (default 127.0.0.1)",
    "SMSGW_GUARD_PORT": "the guard's port (default 8080)",
    "SMSGW_GUARD_CONFDIR": "mitmproxy's writable folder (default var/guard)",
    "SMSGW_GUARD_CACHE_TTL": "seconds the guard caches tokens (default 5)",
    "SMSGW_GUARD_BODY_LIMIT": "the largest receipt body (default 65536)",
    "SMSGW_GUARD_HEADER_TIMEOUT": "seconds to send a request head, and its body (default 10)",
    "SMSGW_GUARD_IDLE_TIMEOUT": "seconds a connection may sit idle (default 30)",
    "SMSGW_GUARD_MAX_CONNECTIONS": "client connections at once (default 0: from the open-files limit)",
    "SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT": "connections from one address (default 0: derived)",
    "SMSGW_GUARD_TRUSTED_PROXIES": "proxies (nginx) whose X-Forwarded-For is kept, comma-separated",
    "SMSGW_SIMULATOR_HOST": "where the simulator listens (default 127.0.0.1)",
    "SMSGW_SIMULATOR_PORT": "the simulator's port (default 8025)",
    "SMSGW_SIMULATOR_USERNAME": "the user the simulator accepts (default demo)",
    "SMSGW_SIMULATOR_PASSWORD": "the password the simulator accepts (default demo-password)",
    "SMSGW_SIMULATOR_DELAY": "seconds before the simulator's level-2 receipt (default 1)",
    "SMSGW_SIMULATOR_RETRY_DELAY": "seconds between the simulator's receipt attempts (default 30)",
}

DATABASE = ("SMSGW_DATABASE_URL",)
SEALING = ("SMSGW_SECRET_KEY", "SMSGW_SECRET_KEY_PREVIOUS")
LOGS = ("SMSGW_LOG_FORMAT", "SMSGW_LOG_LEVEL")
WEBHOOKS = ("SMSGW_WEBHOOK_TIMEOUT", "SMSGW_WEBHOOK_RETRY_SCHEDULE", "SMSGW_WEBHOOK_ALLOW_HTTP",
            "SMSGW_WEBHOOK_ALLOW_PRIVATE", "SMSGW_WEBHOOK_DISABLE_AFTER", "SMSGW_WEBHOOK_SECRET_GRACE",
            "SMSGW_WEBHOOK_CONCURRENCY", "SMSGW_WEBHOOK_INTERVAL", "SMSGW_WEBHOOK_RETENTION", "SMSGW_WEBHOOK_MAX_LAG")
SIMULATOR = ("SMSGW_SIMULATOR_HOST", "SMSGW_SIMULATOR_PORT", "SMSGW_SIMULATOR_USERNAME", "SMSGW_SIMULATOR_PASSWORD")

# The variables each command reads.
READS: dict[str, tuple[str, ...]] = {
    "api": (*DATABASE, "SMSGW_API_HOST", "SMSGW_API_PORT", "SMSGW_API_WORKERS", "SMSGW_PUBLIC_URL",
            "SMSGW_ADMIN_KEY", *SEALING, "SMSGW_GATEWAY_TIMEOUT", "SMSGW_CALLBACK_TOKEN_GRACE",
            "SMSGW_MAX_BODY_BYTES", "SMSGW_UNMATCHED_TTL", "SMSGW_QUEUED_GRACE", "SMSGW_MAX_BATCH",
            "SMSGW_DISPATCH_INTERVAL", "SMSGW_HOUSEKEEPING_INTERVAL", "SMSGW_SQLITE_SYNCHRONOUS", *WEBHOOKS,
            "SMSGW_METRICS_HOST", "SMSGW_METRICS_PORT", *LOGS),
    "guard": (*DATABASE, "SMSGW_API_URL", "SMSGW_GUARD_HOST", "SMSGW_GUARD_PORT", "SMSGW_GUARD_CONFDIR",
              "SMSGW_GUARD_CACHE_TTL", "SMSGW_GUARD_BODY_LIMIT", "SMSGW_GUARD_HEADER_TIMEOUT",
              "SMSGW_GUARD_IDLE_TIMEOUT", "SMSGW_GUARD_MAX_CONNECTIONS", "SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT",
              "SMSGW_GUARD_TRUSTED_PROXIES", "SMSGW_GUARD_METRICS_HOST", "SMSGW_GUARD_METRICS_PORT", *LOGS),
    "migrate": (*DATABASE, "SMSGW_SQLITE_SYNCHRONOUS"),
    "simulator": (*SIMULATOR, "SMSGW_SIMULATOR_DELAY", "SMSGW_SIMULATOR_RETRY_DELAY", *LOGS),
    "webhook-receiver": ("SMSGW_WEBHOOK_SECRET", *DATABASE, *SEALING),
    "demo": (*DATABASE, *SIMULATOR, *SEALING),
    "apikey": DATABASE,
    "audit": DATABASE,
    "secrets": (*SEALING, *DATABASE),
    "send": ("SMSGW_API_URL", "SMSGW_API_KEY", "SMSGW_ADMIN_KEY"),
    "gateway": (*DATABASE, "SMSGW_SECRET_KEY", "SMSGW_CALLBACK_TOKEN_GRACE"),
    "message": DATABASE,
}


def epilog(command: str, before: str = "") -> str:
    """The end of ``smsgw COMMAND --help``: ``before`` (if any), then the variables it reads."""
    width = max(len(name) for name in READS[command])
    lines = [f"  {name:<{width}}  {VARIABLES[name]}" for name in READS[command]]
    text = "Variables it reads:\n" + "\n".join(lines)
    return f"{before}\n\n{text}" if before else text
