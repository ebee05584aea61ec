"""lib.generation.circuit_breaker: shared through Redis, failing open."""

from lib import config, redis
from lib.generation import circuit_breaker
from lib.generation.circuit_breaker import BreakerState


def _read():
    batch = redis.Batch()
    state = circuit_breaker.queue_read(batch, "openai")
    batch.run()
    return state()


def test_opens_at_the_threshold_and_closes_on_success(monkeypatch):
    monkeypatch.setenv("CIRCUIT_BREAKER_THRESHOLD", "3")
    config.reload()
    assert [circuit_breaker.record_failure(_read()) for _ in range(3)] == [False, False, True]
    assert _read() == BreakerState("openai", open=True, failures=3)
    circuit_breaker.record_success(_read())
    assert _read() == BreakerState("openai")


def test_everything_fails_open_when_redis_is_down(monkeypatch):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    config.reload()
    assert circuit_breaker.record_failure(BreakerState("openai", failures=10)) is False
    circuit_breaker.record_success(BreakerState("openai", failures=1))  # no exception
