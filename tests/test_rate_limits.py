"""lib.generation.rate_limits: the batched limiter is upstash-ratelimit's own sliding window."""

from upstash_ratelimit import Ratelimit, SlidingWindow

from lib import config, redis
from lib.config import Rate
from lib.generation import rate_limits
from lib.routes.generate import rate_limited


def _run(ip, user):
    batch = redis.Batch()
    checks = rate_limits.queue_checks(batch, ip, user)
    batch.run()
    return checks()


def test_batched_checks_count_in_the_librarys_own_keys(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_USER", "5/60s")
    config.reload()
    for _ in range(3):
        checks = _run("192.0.2.1", "user_1")
    assert checks.user.remaining == 2 and checks.user.limit == 5
    # The library's normal (unbatched) API sees the same state.
    library = Ratelimit(redis.client(), SlidingWindow(max_requests=5, window=60), prefix="ratelimit")
    assert library.get_remaining("user:user_1") == 2


def test_anonymous_requests_count_only_against_the_ip():
    checks = _run("192.0.2.2", None)
    assert checks.user is None and checks.ip.allowed and not checks.blocked


def test_authenticated_requests_count_only_against_the_user(monkeypatch, redis_direct):
    monkeypatch.setenv("RATE_LIMIT_IP", "1/60s")
    config.reload()
    for i in range(5):
        checks = _run("192.0.2.4", f"user_{i}")
        assert checks.ip is None and checks.user.allowed
    assert not [k for k in redis_direct.keys("ratelimit:ip:*")]
    assert _run("192.0.2.4", None).ip.allowed  # the IP's budget is untouched


def test_ip_limit_is_per_ipv6_64_and_mapped_ipv4_is_the_ipv4(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_IP", "2/60s")
    config.reload()
    assert [_run(ip, None).ip.allowed for ip in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9",
                                                  "2001:db8:1:2::abcd%eth0")] == [True, True, False]
    assert _run("2001:db8:1:3::1", None).ip.allowed  # the next /64 is someone else
    assert [_run(ip, None).ip.allowed for ip in ("192.0.2.8", "::ffff:192.0.2.8",
                                                  "::ffff:c000:208")] == [True, True, False]


def test_rejections_count_strikes_in_the_same_script(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_IP", "1/60s")
    config.reload()
    assert [_run("192.0.2.6", None).strikes for _ in range(4)] == [0, 1, 2, 3]


def test_strike_past_the_threshold_blocks_once(monkeypatch, database_url, redis_direct):
    import psycopg

    monkeypatch.setenv("AUTO_BLOCK_THRESHOLD", "2")
    config.reload()
    assert [rate_limits.block_if_struck_out("192.0.2.3", n) for n in range(1, 6)] == \
        [False, False, True, False, False]
    assert redis_direct.get("blocked:ip:192.0.2.3") == "true"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM ip_blocks WHERE source = 'auto'").fetchone()[0] == 1


def test_rejection_is_a_429_with_retry_after():
    limit = rate_limits.LimitResponse(allowed=False, limit=10, remaining=0, reset=2e9)
    error = rate_limited(rate_limits.rejection(limit, "user"))
    assert error.status == 429 and int(error.headers["Retry-After"]) >= 1
    assert error.headers["X-RateLimit-Reset"] == "2000000000"


def test_rate_parsing_gives_hashable_rates_for_the_limiter_cache():
    assert rate_limits._limiter(Rate(3, 10)) is rate_limits._limiter(Rate(3, 10))
