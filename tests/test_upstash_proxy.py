"""The local Upstash proxy speaks what the real upstash-redis and upstash-ratelimit clients use."""

import httpx
import pytest
from upstash_ratelimit import Ratelimit, SlidingWindow
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

from tests.conftest import UPSTASH_TOKEN


@pytest.fixture
def client(upstash) -> Redis:
    return Redis(upstash, UPSTASH_TOKEN, rest_retries=0, allow_telemetry=False)


def test_strings_numbers_and_nil_round_trip(client):
    assert client.set("k", "välue ✓") is True
    assert client.get("k") == "välue ✓"
    assert client.incrby("n", 5) == 5
    assert client.get("missing") is None
    assert client.ping() == "PONG"


def test_setex_and_ttl(client):
    client.setex("blocked:ip:1.2.3.4", 86400, "true")
    assert 86390 < client.ttl("blocked:ip:1.2.3.4") <= 86400


def test_pipeline_and_multi_exec(client):
    pipe = client.pipeline()
    pipe.set("a", "1")
    pipe.incr("a")
    pipe.get("a")
    assert pipe.exec() == [True, 2, "2"]
    tx = client.multi()
    tx.incr("b")
    tx.incr("b")
    assert tx.exec() == [1, 2]


def test_server_errors_surface_as_upstash_errors(client):
    client.set("s", "text")
    with pytest.raises(UpstashError):
        client.incr("s")


def test_wrong_token_is_rejected(upstash):
    with pytest.raises(UpstashError):
        Redis(upstash, "wrong", rest_retries=0, allow_telemetry=False).ping()


def test_runbook_path_style_commands(upstash):
    auth = {"Authorization": f"Bearer {UPSTASH_TOKEN}"}
    assert httpx.post(f"{upstash}/ping", headers=auth).json() == {"result": "PONG"}
    assert httpx.post(f"{upstash}/setex/blocked:ip:9.9.9.9/86400/true", headers=auth).json() == {"result": "OK"}
    assert httpx.get(f"{upstash}/get/blocked:ip:9.9.9.9", headers=auth).json() == {"result": "true"}


def test_ratelimit_lua_scripts_run_on_real_redis(client):
    limiter = Ratelimit(redis=client, limiter=SlidingWindow(max_requests=3, window=60), prefix="t")
    outcomes = [limiter.limit("user-1").allowed for _ in range(5)]
    assert outcomes == [True, True, True, False, False]
