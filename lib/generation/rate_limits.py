"""Per-IP and per-user sliding-window rate limits (upstash-ratelimit), the blocked-IP check,
and the automatic 24 h block of an IP that keeps getting rate limited.

`queue_checks` puts the blocked-IP lookup and both limiters into a caller's `redis.Batch`,
so all of it costs one Redis round trip. The limiters run upstash-ratelimit's own
SlidingWindow (its Lua script and key layout); the batching drives the library's command
generator (`SlidingWindow._limit`, through lib.compat, which checks the pinned version)
instead of letting it send one request per limit.

Fail-open: when Redis is unreachable the caller skips these checks (the Postgres quota
still holds); see lib.generation.generation. The Retry-After and X-RateLimit-* headers
are the HTTP edge's (lib.routes.generate).
"""

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from upstash_ratelimit import SlidingWindow
from upstash_ratelimit.limiter import Response as LimitResponse

from lib import compat, ip_blocks, redis
from lib.config import Rate, settings
from lib.errors import RateLimited
from lib.observability import log, report_degraded

PREFIX = "ratelimit"
_STRIKES_PREFIX = "ratelimit:strikes:ip:"
_STRIKE_WINDOW_S = 3600
AUTO_BLOCK_HOURS = 24


@dataclass(frozen=True)
class Checks:
    """The outcome of the batched checks for one request."""

    blocked: bool
    ip: LimitResponse
    user: LimitResponse | None


@lru_cache(maxsize=8)
def _limiter(rate: Rate) -> SlidingWindow:
    return SlidingWindow(max_requests=rate.limit, window=rate.window_s, unit="s")


def _queue_limit(batch: redis.Batch, rate: Rate, identifier: str):
    generator = compat.limit_commands(_limiter(rate), f"{PREFIX}:{identifier}")
    command, args = next(generator)
    reply = batch.add(command, *args)
    return lambda: generator.send(reply())


def queue_checks(batch: redis.Batch, ip: str, user_id: str | None):
    """Queue the blocked-IP check and the IP (and, when known, user) limiters; returns a
    getter for the Checks. Counting happens in Redis when the batch runs: every request
    counts against its IP's limit, authenticated ones against their user's too."""
    cfg = settings()
    blocked = batch.add("exists", ip_blocks.key(ip))
    ip_limit = _queue_limit(batch, cfg.rate_limit_ip, f"ip:{ip}")
    user_limit = _queue_limit(batch, cfg.rate_limit_user, f"user:{user_id}") if user_id else None
    return lambda: Checks(bool(blocked()), ip_limit(), user_limit() if user_limit else None)


class RateLimitExceeded(RateLimited):
    """An exhausted limit (429): `scope` ("IP address" or "user"), `retry_after` in whole
    seconds (at least 1) and `limit`, the limiter's state (limit, remaining, reset)."""

    def __init__(self, scope: str, limit: LimitResponse):
        self.scope, self.limit = scope, limit
        self.retry_after = max(1, math.ceil(limit.reset - time.time()))
        super().__init__(f"Too many requests for this {scope}; retry in {self.retry_after} s",
                         details={"scope": scope, "retry_after": self.retry_after})


def rejection(limit: LimitResponse, scope: str) -> RateLimitExceeded:
    """The 429 for an exhausted limit."""
    return RateLimitExceeded(scope, limit)


def record_ip_strike(ip: str) -> bool:
    """Count one rate-limit rejection of `ip` in the current clock hour; the strike that
    goes past AUTO_BLOCK_THRESHOLD blocks the IP for 24 h (Redis key + `ip_blocks` row,
    source `auto`). Returns whether this call blocked it. Fails open: Redis or Postgres
    trouble is reported and the request just gets its 429."""
    key = f"{_STRIKES_PREFIX}{ip}:{int(time.time()) // _STRIKE_WINDOW_S}"
    threshold = settings().auto_block_threshold
    try:
        batch = redis.Batch()
        strikes = batch.add("incr", key)
        batch.add("expire", key, _STRIKE_WINDOW_S)
        batch.run()
        if int(strikes()) != threshold + 1:  # exactly once, on the strike that crosses it
            return False
        ip_blocks.block_ip(ip, hours=AUTO_BLOCK_HOURS, source="auto",
                           reason=f"rate limited more than {threshold} times in an hour")
        log("ip_auto_blocked", level="warning", ip=ip, strikes=int(strikes()))
        return True
    except Exception as exc:  # noqa: BLE001 - fail open, whatever broke
        report_degraded("auto_block", exc)
        return False
