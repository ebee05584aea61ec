"""Maintenance mode (the runbook's "Maintenance Windows"): a flag that makes every route but
health and the Stripe webhook answer 503 with Retry-After.

The flag lives in Redis (key `maintenance`) and in Postgres (`app_flags`, name `maintenance`).
Routes read Redis, and Postgres only while Redis is unreachable. The state is cached per
process for CACHE_S seconds: a warm function pays no round trip for it on most requests, and a
switch reaches every instance within CACHE_S. The cache is kept per settings value
(`config.per_settings`), so a `config.reload()` (tests, the CLI) starts from a fresh read.
"""

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from lib import db, redis
from lib.config import per_settings
from lib.errors import AppError, ConfigError
from lib.observability import log

KEY = "maintenance"
CACHE_S = 5.0
DEFAULT_RETRY_AFTER_S = 600


class _Cache:
    """The last state read and until when it holds (one per settings value). The lock guards
    only these fields, never a read of the stores: one request refreshes an expired entry
    while concurrent ones keep answering the previous state (no lock across network I/O)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entry: tuple[float, State] | None = None  # (expires at, state)
        self.refreshing = False


_cache = per_settings(lambda cfg: _Cache())


@dataclass(frozen=True)
class State:
    on: bool
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    message: str | None = None
    since: str | None = None
    source: str = "redis"  # where the state was read: redis, database, or none (both unreachable)

    @classmethod
    def from_value(cls, value: dict | None, source: str) -> "State":
        """None = no flag (off); any stored value, even an unreadable one, means on."""
        if value is None:
            return cls(False, source=source)
        value = value if isinstance(value, dict) else {}
        retry = value.get("retry_after_s")
        return cls(True, retry if isinstance(retry, int) and retry > 0 else DEFAULT_RETRY_AFTER_S,
                   value.get("message"), value.get("since"), source)


def _read_redis() -> dict | None:
    raw = redis.call(redis.client().get, KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _read_database() -> dict | None:
    row = db.fetchone("SELECT value FROM app_flags WHERE name = %s", (KEY,))
    return row["value"] if row else None


def read() -> State:
    """The flag from its stores, uncached: Redis, else Postgres, else off (fails open, so an
    outage of both stores never turns into a self-inflicted 503 for every route)."""
    try:
        return State.from_value(_read_redis(), "redis")
    except Exception as exc:  # noqa: BLE001 - on every request's path: any failure means "ask the database"
        log("maintenance_redis_unavailable", level="warning", error_class=type(exc).__name__)
    try:
        return State.from_value(_read_database(), "database")
    except Exception as exc:  # noqa: BLE001 - e.g. unreachable, or migration 0005 not applied yet
        log("maintenance_database_unavailable", level="warning", error_class=type(exc).__name__)
    return State(False, source="none")


def current() -> State:
    """The flag as routes see it: cached for CACHE_S per process. Never raises."""
    cache = _cache()
    entry = cache.entry
    if entry is not None and time.monotonic() < entry[0]:
        return entry[1]
    with cache.lock:
        entry = cache.entry
        if entry is not None and time.monotonic() < entry[0]:
            return entry[1]
        if entry is not None and cache.refreshing:
            return entry[1]  # another request is reading the stores: the last state meanwhile
        cache.refreshing = True
    try:
        state = read()  # outside the lock: Redis, then maybe Postgres
    finally:
        with cache.lock:
            cache.refreshing = False
    with cache.lock:
        if cache.entry is entry:  # not replaced meanwhile (e.g. by enable/disable)
            cache.entry = (time.monotonic() + CACHE_S, state)
    return state


def _remember(state: State) -> None:
    cache = _cache()
    with cache.lock:
        cache.entry = (time.monotonic() + CACHE_S, state)


def enable(retry_after_s: int = DEFAULT_RETRY_AFTER_S, message: str | None = None) -> list[str]:
    """Turn maintenance on in both stores (Postgres first: it is the fallback that must hold).
    Idempotent. Returns the stores that could not be written (empty = fully on)."""
    value = {"retry_after_s": retry_after_s, "message": message,
             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    failed = []
    try:
        db.execute("INSERT INTO app_flags (name, value) VALUES (%s, %s::jsonb) "
                   "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                   (KEY, json.dumps(value)))
    except (AppError, ConfigError):
        failed.append("database")
    try:
        redis.call(redis.client().set, KEY, json.dumps(value))
    except (redis.RedisUnavailable, ConfigError):
        failed.append("redis")
    _remember(State.from_value(value, "redis"))
    return failed


def disable() -> list[str]:
    """Turn maintenance off in both stores. Idempotent. Returns the stores that could not be
    written (empty = fully off)."""
    failed = []
    try:
        redis.call(redis.client().delete, KEY)
    except (redis.RedisUnavailable, ConfigError):
        failed.append("redis")
    try:
        db.execute("DELETE FROM app_flags WHERE name = %s", (KEY,))
    except (AppError, ConfigError):
        failed.append("database")
    _remember(State(False))
    return failed
