"""Issue 12 §3: Idempotency-Key on POST /api/generate, through the real route, real Redis
(behind the Upstash proxy) and Postgres, and the real SDKs against local providers."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lib.generation import idempotency

BODY = {"prompt": "Write a haiku", "max_tokens": 32}


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def _keys(redis_direct) -> list[str]:
    return sorted(redis_direct.scan_iter(match="idem:*"))


def test_sequential_retry_replays_the_stored_response(stack, sql):
    first = stack.post(BODY, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    # Same body in another key order and spacing: the same request.
    again = stack.post(content=b'{ "max_tokens": 32, "prompt": "Write a haiku" }',
                       headers={"Idempotency-Key": "retry-1", "content-type": "application/json"})
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert stack.openai.calls == 1  # the provider was not called again
    assert sql("SELECT used FROM generation_usage") == [(1,)]  # nor a second unit spent
    assert sql("SELECT count(*) FROM generations") == [(1,)]


def test_keys_are_scoped_to_the_organization(stack, sql):
    assert stack.post(BODY, org="org_a", headers={"Idempotency-Key": "k"}).status_code == 200
    other = stack.post(BODY, org="org_b", headers={"Idempotency-Key": "k"})
    assert other.status_code == 200 and "idempotent-replayed" not in other.headers
    assert stack.openai.calls == 2
    # Another user of the same organization retrying gets the organization's response.
    same_org = stack.post(BODY, user="user_2", org="org_a", headers={"Idempotency-Key": "k"})
    assert same_org.headers.get("idempotent-replayed") == "true"


def test_concurrent_duplicates_run_once_and_the_others_get_409(stack, sql):
    stack.openai.delay_s = 1.0
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(
            lambda _: stack.post(BODY, headers={"Idempotency-Key": "dup"}), range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            _error(response, 409, "idempotency_in_progress")
    assert stack.openai.calls == 1
    assert sql("SELECT used FROM generation_usage") == [(1,)]
    stack.openai.delay_s = 0
    replay = stack.post(BODY, headers={"Idempotency-Key": "dup"})
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == next(r.json() for r in responses if r.status_code == 200)


def test_same_key_with_another_body_is_422_running_or_done(stack, sql):
    assert stack.post(BODY, headers={"Idempotency-Key": "m"}).status_code == 200
    _error(stack.post({"prompt": "Something else"}, headers={"Idempotency-Key": "m"}),
           422, "idempotency_mismatch")
    assert stack.openai.calls == 1
    stack.openai.delay_s = 1.0
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(stack.post, BODY, headers={"Idempotency-Key": "m2"})
        time.sleep(0.4)
        mismatch = stack.post({"prompt": "Other"}, headers={"Idempotency-Key": "m2"})
        assert running.result().status_code == 200
    _error(mismatch, 422, "idempotency_mismatch")


def test_the_key_expires_after_24_hours(stack, sql, redis_direct):
    assert stack.post(BODY, headers={"Idempotency-Key": "exp"}).status_code == 200
    [key] = _keys(redis_direct)
    assert idempotency.TTL_S - 60 <= redis_direct.ttl(key) <= idempotency.TTL_S
    redis_direct.pexpire(key, 1)  # let Redis expire it as it would after 24 h
    time.sleep(0.05)
    again = stack.post(BODY, headers={"Idempotency-Key": "exp"})
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert stack.openai.calls == 2 and sql("SELECT used FROM generation_usage") == [(2,)]


def test_nothing_is_stored_when_the_request_fails_before_the_provider(stack, sql, redis_direct):
    stack.configure(QUOTA_TRIAL="0")
    _error(stack.post(BODY, headers={"Idempotency-Key": "q"}), 402, "quota_exceeded")
    _error(stack.post({"prompt": ""}, headers={"Idempotency-Key": "q"}), 400, "invalid_request")
    assert _keys(redis_direct) == []
    stack.configure(QUOTA_TRIAL="5")
    retry = stack.post(BODY, headers={"Idempotency-Key": "q"})
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers


def test_a_provider_outage_is_not_stored_so_the_retry_runs(stack, sql, redis_direct):
    stack.configure(ANTHROPIC_API_KEY="")
    stack.openai.status = 500
    _error(stack.post(BODY, headers={"Idempotency-Key": "o"}), 502, "provider_unavailable")
    assert _keys(redis_direct) == []
    stack.openai.status = 200
    assert stack.post(BODY, headers={"Idempotency-Key": "o"}).status_code == 200


def _set_calls(redis_direct) -> int:
    return redis_direct.info("commandstats").get("cmdstat_set", {}).get("calls", 0)


def test_a_request_without_a_key_sends_no_idempotency_command(stack, sql, redis_direct):
    stack.post(BODY)  # warm: whatever a first request does once
    before = _set_calls(redis_direct)
    assert stack.post(BODY).status_code == 200
    assert _set_calls(redis_direct) == before and _keys(redis_direct) == []
    assert stack.post(BODY, headers={"Idempotency-Key": "n"}).status_code == 200
    assert _set_calls(redis_direct) == before + 2  # claim, then store


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_invalid_keys_are_400(stack, sql, key):
    response = stack.post(BODY, headers={"Idempotency-Key": key.encode("latin-1")})
    _error(response, 400, "invalid_idempotency_key")
    assert sql("SELECT count(*) FROM generations") == [(0,)]


def test_a_255_character_key_is_accepted(stack):
    key = "k" * 255
    assert stack.post(BODY, headers={"Idempotency-Key": key}).status_code == 200
    assert stack.post(BODY, headers={"Idempotency-Key": key}).headers["idempotent-replayed"] == "true"
