"""Settings, read once from the environment.

Every knob is an ``SMSGW_*`` variable; the README's configuration table lists
them. Defaults make ``make run`` work on a fresh machine with nothing set.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass, field

from api import secrets
from api.db import dialect_of

DEFAULT_DATABASE_URL = "sqlite:///var/smsgw.db"
# Standard Webhooks' example schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


# Every SMSGW_* variable some part of smsgw reads, its tests and the interop harness included
# (tests/test_config_names.py keeps this list true). One set in the environment and not here
# is a typo: every command says so at start (``unknown_variables``), since it is ignored.
KNOWN_VARIABLES = frozenset({
    "SMSGW_ADMIN_KEY", "SMSGW_API_HOST", "SMSGW_API_KEY", "SMSGW_API_PORT", "SMSGW_API_URL", "SMSGW_API_WORKERS",
    "SMSGW_CALLBACK_TOKEN_GRACE", "SMSGW_DATABASE_URL", "SMSGW_DISPATCH_INTERVAL", "SMSGW_GATEWAY_TIMEOUT",
    "SMSGW_GUARD_BODY_LIMIT", "SMSGW_GUARD_CACHE_TTL", "SMSGW_GUARD_CONFDIR", "SMSGW_GUARD_HEADER_TIMEOUT",
    "SMSGW_GUARD_HOST", "SMSGW_GUARD_IDLE_TIMEOUT", "SMSGW_GUARD_MAX_CONNECTIONS",
    "SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT", "SMSGW_GUARD_PORT", "SMSGW_GUARD_TRUSTED_PROXIES",
    "SMSGW_GUARD_METRICS_HOST", "SMSGW_GUARD_METRICS_PORT", "SMSGW_LOG_FORMAT", "SMSGW_LOG_LEVEL",
    "SMSGW_METRICS_HOST", "SMSGW_METRICS_PORT",
    "SMSGW_HOUSEKEEPING_INTERVAL", "SMSGW_MAX_BATCH", "SMSGW_MAX_BODY_BYTES", "SMSGW_PUBLIC_URL",
    "SMSGW_PYTHON311", "SMSGW_QUEUED_GRACE", "SMSGW_REQUIRE_SERVICES", "SMSGW_SECRET_KEY",
    "SMSGW_SECRET_KEY_PREVIOUS", "SMSGW_SIMULATOR_DELAY", "SMSGW_SIMULATOR_HOST", "SMSGW_SIMULATOR_PASSWORD",
    "SMSGW_SIMULATOR_PORT", "SMSGW_SIMULATOR_RETRY_DELAY", "SMSGW_SIMULATOR_USERNAME", "SMSGW_SQLITE_SYNCHRONOUS",
    "SMSGW_TEST_POSTGRES_URL", "SMSGW_UNMATCHED_TTL", "SMSGW_WEBHOOK_ALLOW_HTTP", "SMSGW_WEBHOOK_ALLOW_PRIVATE",
    "SMSGW_WEBHOOK_CONCURRENCY", "SMSGW_WEBHOOK_DISABLE_AFTER", "SMSGW_WEBHOOK_INTERVAL", "SMSGW_WEBHOOK_MAX_LAG",
    "SMSGW_WEBHOOK_RETENTION", "SMSGW_WEBHOOK_RETRY_SCHEDULE", "SMSGW_WEBHOOK_SECRET", "SMSGW_WEBHOOK_SECRET_GRACE",
    "SMSGW_WEBHOOK_TIMEOUT",
})


def unknown_variables(env: dict[str, str]) -> list[str]:
    """A line for each SMSGW_* variable set in ``env`` that nothing reads, naming the one it
    most likely meant: a typo is never silent."""
    lines = []
    for name in sorted(n for n in env if n.startswith("SMSGW_") and n not in KNOWN_VARIABLES):
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.8)
        meant = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{name} is not a variable smsgw knows{meant}: it is ignored")
    return lines


class ConfigError(ValueError):
    """A variable is set to something we cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1  # processes serving the API (each with its own pipeline)
    public_url: str = "http://127.0.0.1:8080"
    admin_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log
    gateway_timeout: float = 10.0
    callback_token_grace: int = 24 * 3600
    max_body_bytes: int = 64 * 1024
    unmatched_ttl: int = 48 * 3600
    housekeeping_interval: float = 60.0
    queued_grace: float = 60.0
    max_batch: int = 1000               # messages in one batch send
    dispatch_interval: float = 1.0      # seconds between the dispatcher's looks for work other processes queued
    api_url: str = "http://127.0.0.1:8000"
    guard_host: str = "127.0.0.1"
    guard_port: int = 8080
    guard_confdir: str = "var/guard"
    guard_cache_ttl: float = 5.0
    guard_body_limit: int = 64 * 1024
    guard_idle_timeout: int = 30        # seconds a client connection may sit idle
    guard_header_timeout: float = 10.0  # seconds to read one request head (from its first byte), and again its body
    guard_max_connections: int = 0      # 0: derived from the open-files limit
    guard_max_connections_per_client: int = 0  # 0: derived from the cap; trusted proxies are exempt
    guard_trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For (one address) is kept
    simulator_host: str = "127.0.0.1"
    simulator_port: int = 8025
    simulator_username: str = "demo"
    simulator_password: str = "demo-password"
    simulator_delay: float = 1.0
    simulator_retry_delay: float = 30.0
    keyring: secrets.Keyring = secrets.Keyring()  # SMSGW_SECRET_KEY(_PREVIOUS); repr shows ids only
    # Status webhooks (api.webhook_worker, api.ssrf)
    webhook_timeout: float = 15.0       # seconds an endpoint has to answer 2xx
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE  # seconds before each attempt
    webhook_allow_http: bool = False    # plain http:// endpoints (https only otherwise)
    webhook_allow_private: bool = False  # loopback, private, link-local ... addresses (refused otherwise)
    webhook_disable_after: float = 5 * 24 * 3600  # seconds an endpoint may fail in a row before it is disabled
    webhook_secret_grace: int = 24 * 3600  # seconds a rotated secret keeps signing beside the new one
    webhook_concurrency: int = 64       # deliveries under way at once, per process
    webhook_interval: float = 1.0       # seconds between the worker's looks for work other processes queued
    webhook_retention: int = 30 * 24 * 3600  # seconds webhook events and ended deliveries are kept
    webhook_max_lag: float = 10.0       # seconds receipts may hold deliveries back (api.webhook_worker)
    # Operability: Prometheus listeners of their own (never behind nginx), and one log format
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9180            # the API's /metrics; 0 turns it off
    guard_metrics_host: str = "127.0.0.1"
    guard_metrics_port: int = 9181      # the guard's /metrics; 0 turns it off
    log_format: str = "text"            # "text" or "json", for every process's every line
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        host = env.get("SMSGW_API_HOST", cls.api_host)
        port = _int(env, "SMSGW_API_PORT", cls.api_port, low=1, high=65535)
        guard_host = env.get("SMSGW_GUARD_HOST", cls.guard_host)
        guard_port = _int(env, "SMSGW_GUARD_PORT", cls.guard_port, low=1, high=65535)
        # Gateways reach the DLR routes through the guard, never the API directly.
        public = _url(env, "SMSGW_PUBLIC_URL", f"http://{guard_host}:{guard_port}")
        database_url = env.get("SMSGW_DATABASE_URL") or DEFAULT_DATABASE_URL
        try:
            dialect_of(database_url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            database_url=database_url,
            api_host=host,
            api_port=port,
            api_workers=_int(env, "SMSGW_API_WORKERS", cls.api_workers, low=1, high=64),
            public_url=public,
            admin_key=env.get("SMSGW_ADMIN_KEY") or None,
            gateway_timeout=_float(env, "SMSGW_GATEWAY_TIMEOUT", cls.gateway_timeout),
            callback_token_grace=_int(
                env, "SMSGW_CALLBACK_TOKEN_GRACE", cls.callback_token_grace, low=0
            ),
            max_body_bytes=_int(env, "SMSGW_MAX_BODY_BYTES", cls.max_body_bytes, low=1024),
            unmatched_ttl=_int(env, "SMSGW_UNMATCHED_TTL", cls.unmatched_ttl, low=0),
            housekeeping_interval=_float(env, "SMSGW_HOUSEKEEPING_INTERVAL", cls.housekeeping_interval, low=0.05),
            queued_grace=_float(env, "SMSGW_QUEUED_GRACE", cls.queued_grace, low=0),
            max_batch=_int(env, "SMSGW_MAX_BATCH", cls.max_batch, low=1, high=10_000),
            dispatch_interval=_float(env, "SMSGW_DISPATCH_INTERVAL", cls.dispatch_interval, low=0.01),
            api_url=_url(env, "SMSGW_API_URL", f"http://{host}:{port}"),
            guard_host=guard_host,
            guard_port=guard_port,
            guard_confdir=env.get("SMSGW_GUARD_CONFDIR") or cls.guard_confdir,
            guard_cache_ttl=_float(env, "SMSGW_GUARD_CACHE_TTL", cls.guard_cache_ttl, low=0),
            guard_body_limit=_int(env, "SMSGW_GUARD_BODY_LIMIT", cls.guard_body_limit, low=1024),
            guard_idle_timeout=_int(env, "SMSGW_GUARD_IDLE_TIMEOUT", cls.guard_idle_timeout, low=1, high=3600),
            guard_header_timeout=_float(env, "SMSGW_GUARD_HEADER_TIMEOUT", cls.guard_header_timeout, low=0.1),
            guard_max_connections=_int(env, "SMSGW_GUARD_MAX_CONNECTIONS", cls.guard_max_connections, low=0),
            guard_max_connections_per_client=_int(env, "SMSGW_GUARD_MAX_CONNECTIONS_PER_CLIENT",
                                                  cls.guard_max_connections_per_client, low=0),
            guard_trusted_proxies=_addresses(env, "SMSGW_GUARD_TRUSTED_PROXIES"),
            simulator_host=env.get("SMSGW_SIMULATOR_HOST", cls.simulator_host),
            simulator_port=_int(env, "SMSGW_SIMULATOR_PORT", cls.simulator_port, low=1, high=65535),
            simulator_username=env.get("SMSGW_SIMULATOR_USERNAME") or cls.simulator_username,
            simulator_password=env.get("SMSGW_SIMULATOR_PASSWORD") or cls.simulator_password,
            simulator_delay=_float(env, "SMSGW_SIMULATOR_DELAY", cls.simulator_delay, low=0),
            simulator_retry_delay=_float(env, "SMSGW_SIMULATOR_RETRY_DELAY", cls.simulator_retry_delay, low=0),
            keyring=_keyring(env),
            webhook_timeout=_float(env, "SMSGW_WEBHOOK_TIMEOUT", cls.webhook_timeout, low=0.1),
            webhook_retry_schedule=_schedule(env, "SMSGW_WEBHOOK_RETRY_SCHEDULE", cls.webhook_retry_schedule),
            webhook_allow_http=_flag(env, "SMSGW_WEBHOOK_ALLOW_HTTP"),
            webhook_allow_private=_flag(env, "SMSGW_WEBHOOK_ALLOW_PRIVATE"),
            webhook_disable_after=_int(env, "SMSGW_WEBHOOK_DISABLE_AFTER", int(cls.webhook_disable_after), low=1),
            webhook_secret_grace=_int(env, "SMSGW_WEBHOOK_SECRET_GRACE", cls.webhook_secret_grace, low=0,
                                      high=30 * 24 * 3600),
            webhook_concurrency=_int(env, "SMSGW_WEBHOOK_CONCURRENCY", cls.webhook_concurrency, low=1, high=1024),
            webhook_interval=_float(env, "SMSGW_WEBHOOK_INTERVAL", cls.webhook_interval, low=0.01),
            webhook_retention=_int(env, "SMSGW_WEBHOOK_RETENTION", cls.webhook_retention, low=60),
            webhook_max_lag=_float(env, "SMSGW_WEBHOOK_MAX_LAG", cls.webhook_max_lag, low=0),
            metrics_host=env.get("SMSGW_METRICS_HOST") or cls.metrics_host,
            metrics_port=_int(env, "SMSGW_METRICS_PORT", cls.metrics_port, low=0, high=65535),
            guard_metrics_host=env.get("SMSGW_GUARD_METRICS_HOST") or cls.guard_metrics_host,
            guard_metrics_port=_int(env, "SMSGW_GUARD_METRICS_PORT", cls.guard_metrics_port, low=0, high=65535),
            log_format=_choice(env, "SMSGW_LOG_FORMAT", cls.log_format, ("text", "json")),
            log_level=_choice(env, "SMSGW_LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
        )


def _keyring(env: dict[str, str]) -> secrets.Keyring:
    try:
        return secrets.keyring_from(env.get("SMSGW_SECRET_KEY"), env.get("SMSGW_SECRET_KEY_PREVIOUS"))
    except secrets.BadKey as exc:
        raise ConfigError(str(exc)) from None


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")


def _flag(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")


def _schedule(env: dict[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated seconds to wait before each attempt, as Standard Webhooks writes its
    schedule: the first is 0 (at once), each next one counts from the failure before it."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        waits = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, e.g. 0,5,300; not {raw!r}") from None
    if not 1 <= len(waits) <= 50 or not all(0 <= wait <= 7 * 24 * 3600 for wait in waits):
        raise ConfigError(f"{name} must list 1 to 50 waits, each between 0 and 604800 seconds")
    if waits[0] != 0:
        raise ConfigError(f"{name} must start with 0: the first attempt goes at once")
    return waits


def _addresses(env: dict[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses, written as ``ipaddress`` writes them."""
    found = []
    for raw in (env.get(name) or "").split(","):
        if raw.strip():
            try:
                found.append(str(ipaddress.ip_address(raw.strip())))
            except ValueError:
                raise ConfigError(f"{name} must list IP addresses, not {raw.strip()!r}") from None
    return tuple(found)


def _int(env: dict[str, str], name: str, default: int, low: int = 0, high: int | None = None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be between {low} and {high if high is not None else 'any'}")
    return value


def _float(env: dict[str, str], name: str, default: float, low: float = 0.001) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not low <= value <= 300:
        raise ConfigError(f"{name} must be between {low:g} and 300 seconds")
    return value


def _url(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must start with http:// or https://")
    return value.rstrip("/")
