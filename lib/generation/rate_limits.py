"""Per-user and per-IP sliding-window rate limits (upstash-ratelimit), the blocked-IP check,
and the automatic 24 h block of an IP that keeps getting rate limited.

Who is counted where: a request with a valid token counts against its user's limit only
(RATE_LIMIT_USER), so colleagues behind one office NAT never exhaust each other's budget;
a request without one counts against its IP's (RATE_LIMIT_IP, per IPv4 address or IPv6
/64, lib.ip_blocks.subject), and only those rejections are strikes towards the auto-block.
Every request, with a token or not, is refused while its IP is blocked.

`queue_checks` puts the blocked-IP lookup and the one limiter that applies into a caller's
`redis.Batch`, so all of it costs one Redis round trip; an anonymous rejection's strike is
counted inside the same script as the limit (so a limited client costs one round trip too;
only the request that crosses the threshold pays for writing the block). The limiters run
upstash-ratelimit's own SlidingWindow (its Lua script and key layout); the batching drives
the library's command generator (`SlidingWindow._limit`, through lib.compat, which checks
the pinned version) instead of letting it send one request per limit.

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

# The library's sliding-window script, unchanged, run as a function; a rejection (-1) also
# counts a strike in KEYS[3] (this clock hour's counter). Returns {remaining, strikes}.
_SHEBANG = "#!lua flags=allow-key-locking"
_WITH_STRIKE = _SHEBANG + """
local function sliding_window()
""" + SlidingWindow.SCRIPT.strip().removeprefix(_SHEBANG) + """
end
local remaining = sliding_window()
local strikes = 0
if remaining == -1 then
    strikes = redis.call("INCR", KEYS[3])
    if strikes == 1 then
        redis.call("EXPIRE", KEYS[3], ARGV[5])
    end
end
return {remaining, strikes}
"""


@dataclass(frozen=True)
class Checks:
    """The outcome of the batched checks for one request: `user` for a request with a valid
    token, else `ip` and `strikes` (this hour's rejections of the IP, counting this one)."""

    blocked: bool
    ip: LimitResponse | None
    user: LimitResponse | None
    strikes: int = 0


@lru_cache(maxsize=8)
def _limiter(rate: Rate) -> SlidingWindow:
    return SlidingWindow(max_requests=rate.limit, window=rate.window_s, unit="s")


def _queue_limit(batch: redis.Batch, rate: Rate, identifier: str):
    generator = compat.limit_commands(_limiter(rate), f"{PREFIX}:{identifier}")
    command, args = next(generator)
    reply = batch.add(command, *args)
    return lambda: generator.send(reply())


def _queue_ip_limit(batch: redis.Batch, rate: Rate, subject: str):
    generator = compat.limit_commands(_limiter(rate), f"{PREFIX}:ip:{subject}")
    command, (script, keys, args) = next(generator)
    if command != "eval" or script != SlidingWindow.SCRIPT:
        raise compat.VendorVersionMismatch("upstash-ratelimit's sliding window changed shape")
    strikes_key = f"{_STRIKES_PREFIX}{subject}:{int(time.time()) // _STRIKE_WINDOW_S}"
    reply = batch.add("eval", _WITH_STRIKE, [*keys, strikes_key], [*args, _STRIKE_WINDOW_S])

    def result() -> tuple[LimitResponse, int]:
        remaining, strikes = reply()
        return generator.send(remaining), int(strikes)
    return result


def queue_checks(batch: redis.Batch, ip: str, user_id: str | None, *, limit_ip: bool = True):
    """Queue the blocked-IP check and the limiter that applies: the user's when the request
    carries a valid token (`user_id`), else the IP's with its strike (unless not `limit_ip`:
    the token could not be checked through no fault of the client). Returns a getter for
    the Checks. Counting happens in Redis when the batch runs."""
    cfg = settings()
    blocked = batch.add("exists", *ip_blocks.keys(ip))
    if user_id:
        user_limit = _queue_limit(batch, cfg.rate_limit_user, f"user:{user_id}")
        return lambda: Checks(bool(blocked()), None, user_limit())
    if not limit_ip:
        return lambda: Checks(bool(blocked()), None, None)
    ip_limit = _queue_ip_limit(batch, cfg.rate_limit_ip, ip_blocks.subject(ip))

    def checks() -> Checks:
        limit, strikes = ip_limit()
        return Checks(bool(blocked()), limit, None, strikes)
    return checks


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


def block_if_struck_out(ip: str, strikes: int) -> bool:
    """Block `ip` (its subject) for 24 h when `strikes`, this hour's rate-limit rejections
    counted by the check, just went past AUTO_BLOCK_THRESHOLD: exactly once, on the strike
    that crosses it (Redis key + `ip_blocks` row, source `auto`). Returns whether it blocked.
    Fails open: Redis or Postgres trouble is reported and the request just gets its 429."""
    threshold = settings().auto_block_threshold
    if strikes != threshold + 1:
        return False
    try:
        ip_blocks.block_ip(ip, hours=AUTO_BLOCK_HOURS, source="auto",
                           reason=f"rate limited more than {threshold} times in an hour")
    except Exception as exc:  # noqa: BLE001 - fail open, whatever broke
        report_degraded("auto_block", exc)
        return False
    log("ip_auto_blocked", level="warning", ip=ip_blocks.subject(ip), strikes=strikes)
    return True
