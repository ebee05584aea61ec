"""Redis (Upstash in production) through the upstash-redis REST client.

One client per process, reused across warm invocations. Retries are off and every request
has a short timeout (REDIS_TIMEOUT_S), so a dead Redis costs at most that long; callers that
must fail open catch RedisUnavailable.
"""

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from lib import compat
from lib.config import per_settings, settings
from lib.errors import ConfigError


class RedisUnavailable(Exception):
    """Redis could not be reached or answered with an error."""


def _build(cfg) -> Redis:
    redis = Redis(cfg.upstash_url, cfg.upstash_token, rest_retries=0,
                  allow_telemetry=False, read_your_writes=False)
    # upstash-redis builds its httpx client with no timeout at all; a hung Redis would
    # hang the function until maxDuration. Bound every request, and refuse error statuses.
    compat.bound_redis_client(redis, cfg.redis_timeout_s)
    return redis


_client = per_settings(_build, close=Redis.close)


def client() -> Redis:
    """The process's client for the current settings. Raises ConfigError when Redis isn't
    configured."""
    if not settings().upstash_url:
        raise ConfigError("UPSTASH_REDIS_REST_URL is not set")
    return _client()


def call(fn, *args, **kwargs):
    """Run one client call, turning transport and server errors into RedisUnavailable."""
    try:
        return fn(*args, **kwargs)
    # Not AttributeError/TypeError/KeyError: those are bugs, and must not pass for a Redis
    # outage (fail open). Error replies are refused before parsing (lib.compat).
    except (httpx.HTTPError, UpstashError, ValueError, OSError) as exc:
        raise RedisUnavailable(f"{type(exc).__name__}") from exc


def ping() -> None:
    """`PING`. Raises RedisUnavailable (or ConfigError when Redis isn't configured)."""
    if call(client().ping) != "PONG":
        raise RedisUnavailable("unexpected PING reply")


class Batch:
    """Commands queued by several modules and sent as one pipeline request (one round trip).

    `add()` returns a getter for that command's reply, valid after `run()`. `run()` raises
    RedisUnavailable when the request fails or any command errors.
    """

    def __init__(self):
        self._commands: list[tuple[str, tuple]] = []
        self._results: list | None = None

    def add(self, command: str, *args):
        index = len(self._commands)
        self._commands.append((command, args))
        return lambda: self._results[index]

    def run(self) -> None:
        if not self._commands:
            self._results = []
            return
        pipeline = client().pipeline()
        for command, args in self._commands:
            getattr(pipeline, command)(*args)
        self._results = call(pipeline.exec)
