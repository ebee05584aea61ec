"""A circuit breaker for an LLM provider, shared by every function instance through Redis.

After `CIRCUIT_BREAKER_THRESHOLD` consecutive outage-class failures the provider is skipped
for `CIRCUIT_BREAKER_COOLDOWN_S`, so fresh instances don't each rediscover an outage by
waiting on it first. When the cooldown ends the next request tries again (half-open): one
more failure re-opens it at once (the count is still at the threshold), a success closes it.

Keys: `circuit:<provider>:failures` (consecutive failures; expires after a quiet spell) and
`circuit:<provider>:open` (set with the cooldown as TTL). Everything here fails open: with
Redis unreachable the breaker reads as closed and updates are dropped (and reported).
"""

from dataclasses import dataclass

from lib import redis
from lib.config import settings
from lib.observability import log, report_degraded

_FAILURES_TTL_S = 600  # failures further apart than this are not one outage


@dataclass(frozen=True)
class BreakerState:
    provider: str
    open: bool = False
    failures: int = 0


def _keys(provider: str) -> tuple[str, str]:
    return f"circuit:{provider}:failures", f"circuit:{provider}:open"


def queue_read(batch: redis.Batch, provider: str):
    """Queue the breaker's state into `batch`; returns a getter for the BreakerState."""
    failures_key, open_key = _keys(provider)
    failures, is_open = batch.add("get", failures_key), batch.add("exists", open_key)

    def state() -> BreakerState:
        return BreakerState(provider, bool(is_open()), int(failures() or 0))

    return state


def record_failure(state: BreakerState) -> bool:
    """Count one more consecutive failure; open the circuit at the threshold. Returns
    whether it is open now. Fails open (returns False) when Redis is unreachable."""
    failures_key, open_key = _keys(state.provider)
    cfg = settings()
    try:
        batch = redis.Batch()
        count = batch.add("incr", failures_key)
        batch.add("expire", failures_key, _FAILURES_TTL_S)
        batch.run()
        if int(count()) >= cfg.circuit_breaker_threshold:
            redis.call(redis.client().setex, open_key, cfg.circuit_breaker_cooldown_s, "1")
            if not state.open:
                log("circuit_opened", level="warning", provider=state.provider,
                    failures=int(count()), cooldown_s=cfg.circuit_breaker_cooldown_s)
            return True
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="circuit_breaker")
    return False


def record_success(state: BreakerState) -> None:
    """Reset the consecutive-failure count (only written when it was non-zero, so a healthy
    provider costs no Redis write). Fails open."""
    if not state.failures:
        return
    failures_key, open_key = _keys(state.provider)
    try:
        redis.call(redis.client().delete, failures_key, open_key)
        log("circuit_closed", provider=state.provider)
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="circuit_breaker")
