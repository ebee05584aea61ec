"""Redis (Upstash in production) through the upstash-redis REST client.

One client per process, reused across warm invocations. Retries are off and every request
has a short timeout (REDIS_TIMEOUT_S), so a dead Redis costs at most that long; callers that
must fail open catch RedisUnavailable.
"""

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from lib.config import settings
from lib.errors import ConfigError

_client: tuple[tuple, Redis] | None = None


class RedisUnavailable(Exception):
    """Redis could not be reached or answered with an error."""


def client() -> Redis:
    global _client
    cfg = settings()
    if not cfg.upstash_url:
        raise ConfigError("UPSTASH_REDIS_REST_URL is not set")
    key = (cfg.upstash_url, cfg.upstash_token, cfg.redis_timeout_s)
    if _client is None or _client[0] != key:
        redis = Redis(cfg.upstash_url, cfg.upstash_token, rest_retries=0,
                      allow_telemetry=False, read_your_writes=False)
        # upstash-redis builds its httpx client with no timeout at all; a hung Redis would
        # hang the function until maxDuration. Bound every request instead.
        redis._http._client.timeout = httpx.Timeout(cfg.redis_timeout_s)
        _client = (key, redis)
    return _client[1]


def call(fn, *args, **kwargs):
    """Run one client call, turning transport and server errors into RedisUnavailable."""
    try:
        return fn(*args, **kwargs)
    except (httpx.HTTPError, UpstashError, ValueError, OSError) as exc:
        raise RedisUnavailable(f"{type(exc).__name__}") from exc


def ping() -> None:
    """`PING`. Raises RedisUnavailable (or ConfigError when Redis isn't configured)."""
    if call(client().ping) != "PONG":
        raise RedisUnavailable("unexpected PING reply")
