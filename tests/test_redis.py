"""lib.redis: outages become RedisUnavailable (callers fail open); bugs stay bugs."""

import pytest

from lib import config, redis


@pytest.mark.parametrize("bug", [AttributeError, TypeError, KeyError])
def test_a_bug_in_a_call_is_raised_not_mistaken_for_an_outage(bug):
    def buggy():
        raise bug("a programming error")

    with pytest.raises(bug):
        redis.call(buggy)


def test_a_wrong_token_fails_a_pipeline_as_unavailable(monkeypatch):
    # The proxy answers the whole pipeline with one JSON error object and a 401, the shape
    # that used to surface as an AttributeError inside the client's reply parser.
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", "wrong-token")
    config.reload()
    batch = redis.Batch()
    batch.add("get", "k")
    with pytest.raises(redis.RedisUnavailable, match="UpstashError"):
        batch.run()
    with pytest.raises(redis.RedisUnavailable):
        redis.ping()


def test_a_command_error_inside_a_pipeline_is_unavailable(redis_direct):
    redis_direct.set("text", "not a number")
    batch = redis.Batch()
    batch.add("incr", "text")
    with pytest.raises(redis.RedisUnavailable):
        batch.run()


def test_a_healthy_pipeline_answers_every_command():
    batch = redis.Batch()
    first, second = batch.add("incr", "n"), batch.add("get", "n")
    batch.run()
    assert (first(), second()) == (1, "1")
