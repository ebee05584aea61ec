"""POST /api/generate through real HTTP into the real handler, with real Postgres, real Redis
behind the Upstash proxy, real RS256 tokens and the real OpenAI/Anthropic SDKs talking to
local servers that speak their APIs."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from lib import ip_blocks
from tests.support.tokens import OTHER_PRIVATE_PEM, PUBLIC_PEM, claims, mint_token, unsigned_token


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


# --- happy path and accounting ------------------------------------------------------------

def test_happy_path_answers_text_usage_cost_and_quota(stack, sql):
    response = stack.post({"prompt": "Write a haiku", "system": "Be brief", "max_tokens": 64,
                           "temperature": 0.2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "Hello from the fake provider."
    assert body["provider"] == "openai" and body["model"] == "gpt-4o-mini" and body["fallback"] is False
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 8, "total_tokens": 20}
    assert body["cost_usd"] == pytest.approx(12 * 0.15e-6 + 8 * 0.6e-6)
    assert body["quota"]["limit"] == 50 and body["quota"]["used"] == 1
    assert body["quota"]["remaining"] == 49
    now = datetime.now(timezone.utc)
    first_of_next = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=timezone.utc)
    assert body["quota"]["resets_at"] == first_of_next.isoformat().replace("+00:00", "Z")
    sent = stack.openai.requests[0]
    assert sent["json"]["model"] == "gpt-4o-mini" and sent["json"]["max_tokens"] == 64
    assert sent["json"]["temperature"] == 0.2
    assert sent["json"]["messages"] == [{"role": "system", "content": "Be brief"},
                                        {"role": "user", "content": "Write a haiku"}]
    assert sent["headers"]["authorization"] == "Bearer sk-test-openai"
    assert stack.anthropic.calls == 0
    [row] = sql("SELECT id::text, status, provider, model, input_tokens, output_tokens, cost_usd,"
                " price_version, latency_ms, fallback, fallback_reason, error_class,"
                " primary_outcome, attempts, completed_at IS NOT NULL FROM generations")
    assert row[0] == body["id"]
    assert row[1:8] == ("succeeded", "openai", "gpt-4o-mini", 12, 8, Decimal("0.00000660"),
                        "2026-12-02")
    assert row[8] >= 0 and row[9:13] == (False, None, None, "succeeded") and row[14]
    assert [a["outcome"] for a in row[13]] == ["succeeded"]


def test_first_call_provisions_a_trial_org_and_the_user_with_role_and_email(stack, sql):
    token = mint_token("user_new", org_id="org_new", role="ADMIN", email="new@example.com")
    assert stack.post(token=token).status_code == 200
    [(plan, trial_ends_at, personal)] = sql(
        "SELECT plan, trial_ends_at, is_personal FROM organizations WHERE external_id = 'org_new'")
    assert plan == "TRIAL" and not personal
    assert abs(trial_ends_at - datetime.now(timezone.utc) - timedelta(days=14)) < timedelta(minutes=1)
    assert sql("SELECT u.email, u.role, o.external_id FROM users u JOIN organizations o "
               "ON o.id = u.organization_id WHERE u.id = 'user_new'") == \
        [("new@example.com", "ADMIN", "org_new")]
    # The role is a mirror of the token: a later token with another role updates it.
    stack.post(token=mint_token("user_new", org_id="org_new", role="OWNER"))
    assert sql("SELECT role, email FROM users WHERE id = 'user_new'") == [("OWNER", "new@example.com")]


def test_user_without_an_org_gets_a_personal_one(stack, sql):
    assert stack.post(token=mint_token("user_solo")).status_code == 200
    assert sql("SELECT external_id, is_personal FROM organizations") == [("user_solo", True)]


def test_v1_token_org_claim_is_used(stack, sql):
    assert stack.post(token=mint_token("user_v1", org_id="org_v1", version=1)).status_code == 200
    assert sql("SELECT external_id FROM organizations") == [("org_v1",)]


def test_trial_days_setting_sets_trial_end(stack, sql):
    stack.configure(TRIAL_DAYS="3")
    stack.post()
    [(ends,)] = sql("SELECT trial_ends_at FROM organizations")
    assert abs(ends - datetime.now(timezone.utc) - timedelta(days=3)) < timedelta(minutes=1)


def test_costs_come_from_the_price_table_for_each_provider(stack, sql):
    stack.openai.input_tokens, stack.openai.output_tokens = 1000, 500
    stack.anthropic.input_tokens, stack.anthropic.output_tokens = 2000, 100
    assert stack.post().json()["cost_usd"] == pytest.approx(0.00045)
    stack.openai.status = 500
    fallback = stack.post().json()
    assert fallback["provider"] == "anthropic"
    assert fallback["cost_usd"] == pytest.approx(2000 * 0.8e-6 + 100 * 4e-6)
    rows = sql("SELECT provider, cost_usd, price_version FROM generations ORDER BY created_at")
    assert rows == [("openai", Decimal("0.00045000"), "2026-12-02"),
                    ("anthropic", Decimal("0.00200000"), "2026-12-02")]


def test_unknown_model_is_recorded_as_unpriced_not_guessed(stack, sql):
    stack.configure(OPENAI_MODEL="gpt-9-experimental")
    assert stack.post().json()["cost_usd"] == 0
    assert sql("SELECT price_version FROM generations") == [("2026-12-02:unpriced",)]


# --- input validation ---------------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({}, "prompt"), ({"prompt": ""}, "prompt"), ({"prompt": "   "}, "prompt"),
    ({"prompt": 42}, "prompt"), ({"prompt": ["a"]}, "prompt"), ({"prompt": "x" * 20001}, "prompt"),
    ({"prompt": "hi", "system": 5}, "system"), ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 4097}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "10"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "hi", "temperature": 2.5}, "temperature"),
    ({"prompt": "hi", "temperature": -0.1}, "temperature"),
    ({"prompt": "hi", "temperature": "warm"}, "temperature"),
    ({"prompt": "hi", "model": "gpt-4o"}, "model"),
])
def test_invalid_input_is_400_naming_the_field(stack, sql, body, field):
    error = _error(stack.post(body), 400, "invalid_request")
    assert error["field"] == field
    assert stack.openai.calls == 0
    assert sql("SELECT count(*) FROM generations") == [(0,)]


@pytest.mark.parametrize("content,field", [
    (b'{"prompt": "hi \\ud800 there"}', "prompt"), (b'{"prompt": "hi\\u0000"}', "prompt"),
    (b'{"prompt": "\\udfff"}', "prompt"), (b'{"prompt": "hi", "system": "a\\ud83d"}', "system"),
    (b'{"prompt": "hi", "system": "\\u0000"}', "system"),
    (b'{"prompt": "hi", "temperature": 1' + b"0" * 400 + b"}", "temperature"),
    (b'{"prompt": "hi", "temperature": 1e400}', "temperature"),
])
def test_text_no_provider_can_take_and_overflowing_numbers_are_400(stack, sql, content, field):
    # Six of them: five provider-side failures used to open the OpenAI circuit for everyone.
    for _ in range(6):
        error = _error(stack.post(content=content, headers={"content-type": "application/json"}),
                       400, "invalid_request")
        assert error["field"] == field
    assert stack.openai.calls == 0 and stack.anthropic.calls == 0
    assert sql("SELECT count(*) FROM generations") == [(0,)]
    assert stack.post({"prompt": "a real pair \U0001F600 is fine"}).status_code == 200


@pytest.mark.parametrize("content", [b"[1]", b"{bad", b"", b'{"prompt": "hi", "temperature": NaN}'])
def test_malformed_json_is_400(stack, content):
    assert stack.post(content=content, headers={"content-type": "application/json"}).status_code == 400


def test_prompt_of_exactly_20000_chars_is_accepted(stack):
    assert stack.post({"prompt": "x" * 20000}).status_code == 200


def test_body_over_the_cap_is_413(stack):
    _error(stack.post(content=b"x" * (1024 * 1024 + 10)), 413, "payload_too_large")


def test_other_methods_are_405(stack):
    response = stack.client.get(stack.url)
    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


# --- authentication -----------------------------------------------------------------------

FORGED = {
    "missing": lambda: "",
    "alg_none": lambda: unsigned_token(claims("user_1")),
    "wrong_key": lambda: mint_token("user_1", key=OTHER_PRIVATE_PEM),
    "expired": lambda: mint_token("user_1", exp=int(time.time()) - 120),
    "garbage": lambda: "abc.def.ghi",
}


@pytest.mark.parametrize("name", FORGED)
def test_missing_or_forged_tokens_are_401(stack, sql, name):
    _error(stack.post(token=FORGED[name]()), 401, "unauthorized")
    assert sql("SELECT count(*) FROM organizations") == [(0,)]


def test_hs256_token_signed_with_the_public_key_is_401(stack):
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}." \
           f"{b64(json.dumps(claims('user_1')).encode())}"
    sig = b64(hmac.new(PUBLIC_PEM.encode(), head.encode(), hashlib.sha256).digest())
    _error(stack.post(token=f"{head}.{sig}"), 401, "unauthorized")


def test_wrong_azp_is_401(stack):
    stack.configure(CLERK_AUTHORIZED_PARTIES="https://app.example.com")
    _error(stack.post(token=mint_token("user_1", azp="https://evil.example.com")), 401, "unauthorized")
    assert stack.post(token=mint_token("user_1", azp="https://app.example.com")).status_code == 200


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer " + "a" * 9000,
                                    "Bearer \x7f\x01"])
def test_hostile_authorization_headers_are_401(stack, header):
    response = stack.client.post(stack.url, json={"prompt": "hi"}, headers={"authorization": header})
    _error(response, 401, "unauthorized")


# --- blocked IPs and rate limits ----------------------------------------------------------

def test_blocked_ip_is_403_before_anything_else(stack, sql, redis_direct):
    ip_blocks.block_ip("203.0.113.50", reason="test")
    _error(stack.post(ip="203.0.113.50"), 403, "ip_blocked")
    _error(stack.post(ip="203.0.113.50", token=""), 403, "ip_blocked")  # even without a token
    # The runbook's curl sets only the key: that blocks too.
    redis_direct.setex("blocked:ip:2001:db8::7", 86400, "true")
    _error(stack.post(ip="2001:db8:0::7"), 403, "ip_blocked")
    assert stack.openai.calls == 0 and sql("SELECT count(*) FROM organizations") == [(0,)]


def _concurrently(count: int, call):
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def _wait_clear_of_window_edge(window_s: int) -> None:
    # A sliding window weighs the previous window's count: a burst straddling the boundary
    # would legitimately let a few more through. Start well inside a window.
    if time.time() % window_s > window_s - 20:
        time.sleep(window_s - time.time() % window_s + 0.1)


def _failed_open(capfd) -> bool:
    return '"part": "rate_limits"' in capfd.readouterr().out


def test_user_rate_limit_is_exact_under_30_concurrent_requests(stack, capfd):
    stack.configure(RATE_LIMIT_USER="10/60s")
    _wait_clear_of_window_edge(60)
    responses = _concurrently(30, lambda i: stack.post(ip=f"198.51.100.{i + 1}"))
    assert not _failed_open(capfd)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 20
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.json()["error"]["scope"] == "user"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-limit"] == "10"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) > time.time()


def test_ip_rate_limit_is_exact_under_30_concurrent_requests(stack, capfd):
    stack.configure(RATE_LIMIT_IP="20/60s")
    _wait_clear_of_window_edge(60)
    responses = _concurrently(30, lambda i: stack.post(token="", ip="192.0.2.99"))
    assert not _failed_open(capfd)
    assert sorted(r.status_code for r in responses) == [401] * 20 + [429] * 10
    assert {r.json()["error"]["scope"] for r in responses if r.status_code == 429} == {"IP address"}


def test_success_carries_the_user_rate_limit_headers(stack):
    stack.configure(RATE_LIMIT_USER="10/60s")
    response = stack.post()
    assert response.headers["x-ratelimit-limit"] == "10"
    assert response.headers["x-ratelimit-remaining"] == "9"


def test_ip_rate_limited_past_the_threshold_is_blocked_for_24h(stack, sql, redis_direct):
    stack.configure(RATE_LIMIT_IP="1/60s", AUTO_BLOCK_THRESHOLD="3")
    _wait_clear_of_window_edge(60)
    ip = "203.0.113.77"
    assert stack.post(ip=ip, token="").status_code == 401
    assert [stack.post(ip=ip, token="").status_code for _ in range(4)] == [429] * 4  # strike 4 > 3
    _error(stack.post(ip=ip), 403, "ip_blocked")  # a block refuses valid tokens too
    assert 86390 <= redis_direct.ttl(f"blocked:ip:{ip}") <= 86400
    assert redis_direct.get(f"blocked:ip:{ip}") == "true"
    rows = sql("SELECT host(ip), source, reason, expires_at - created_at FROM ip_blocks")
    assert len(rows) == 1 and rows[0][:2] == (ip, "auto") and "3" in rows[0][2]
    assert rows[0][3] == timedelta(hours=24)
    assert stack.post(ip="203.0.113.78").status_code == 200  # other IPs unaffected


# --- quota, trial and subscription --------------------------------------------------------

def test_quota_exhausted_is_402_with_the_quota(stack, sql):
    stack.configure(QUOTA_TRIAL="2")
    assert [stack.post().status_code for _ in range(2)] == [200, 200]
    error = _error(stack.post(), 402, "quota_exceeded")
    assert error["quota"]["limit"] == 2 and error["quota"]["used"] == 2
    assert error["quota"]["remaining"] == 0
    assert stack.openai.calls == 2
    assert sql("SELECT status, count(*) FROM generations GROUP BY status") == [("succeeded", 2)]


def test_quota_is_exact_under_concurrency(stack, sql):
    stack.configure(QUOTA_TRIAL="5")
    responses = _concurrently(20, lambda i: stack.post(user=f"user_{i}", ip=f"198.51.100.{i + 1}"))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [402] * 15
    assert sql("SELECT count(*) FROM generations WHERE status = 'succeeded'") == [(5,)]
    assert sql("SELECT used, quota_limit FROM generation_usage") == [(5, 5)]
    assert sorted(r.json()["quota"]["used"] for r in responses if r.status_code == 200) == [1, 2, 3, 4, 5]


def test_plan_quota_follows_the_plan(stack, sql):
    stack.configure(QUOTA_TEAM="3")
    stack.post()
    sql("UPDATE organizations SET plan = 'TEAM', subscription_status = 'active'")
    body = stack.post().json()
    assert body["quota"] == {**body["quota"], "limit": 3, "used": 2, "remaining": 1}


def test_expired_trial_is_402(stack, sql):
    stack.post()
    sql("UPDATE organizations SET trial_ends_at = now() - interval '1 minute'")
    _error(stack.post(), 402, "trial_expired")
    assert stack.openai.calls == 1


@pytest.mark.parametrize("status", ["canceled", "unpaid"])
def test_inactive_subscription_is_402(stack, sql, status):
    stack.post()
    sql("UPDATE organizations SET plan = 'TEAM', subscription_status = %s", status)
    _error(stack.post(), 402, "subscription_inactive")


def test_past_due_keeps_working_until_the_period_end(stack, sql):
    stack.post()
    sql("UPDATE organizations SET plan = 'TEAM', subscription_status = 'past_due', "
        "current_period_end = now() + interval '2 days'")
    assert stack.post().status_code == 200
    sql("UPDATE organizations SET current_period_end = now() - interval '1 second'")
    _error(stack.post(), 402, "subscription_inactive")


def test_quota_resets_with_the_utc_month(stack, sql):
    stack.configure(QUOTA_TRIAL="1")
    stack.post()
    _error(stack.post(), 402, "quota_exceeded")
    sql("UPDATE generation_usage SET month = month - interval '1 month'")
    assert stack.post().status_code == 200


# --- providers: fallback, failures, circuit breaker ---------------------------------------

@pytest.mark.parametrize("status,reason,outcome", [
    (500, "server_error", "failed"), (503, "server_error", "failed"),
    (429, "rate_limited", "failed"), (408, "timeout", "failed"),
    (401, "auth_error", "misconfigured"), (403, "auth_error", "misconfigured"),
    (404, "model_not_found", "misconfigured")])
def test_openai_outage_errors_fall_back_to_anthropic(stack, sql, status, reason, outcome):
    stack.openai.status = status
    response = stack.post({"prompt": "hi", "system": "sys", "max_tokens": 50})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["provider"] == "anthropic" and body["fallback"] is True
    assert body["model"] == "claude-3-5-haiku-latest"
    assert stack.openai.calls == 1 and stack.anthropic.calls == 1  # no SDK retries
    sent = stack.anthropic.requests[0]
    assert sent["json"]["system"] == "sys" and sent["json"]["max_tokens"] == 50
    assert sent["json"]["messages"] == [{"role": "user", "content": "hi"}]
    assert "sk-ant-test" in (sent["headers"].get("x-api-key") or sent["headers"]["authorization"])
    [row] = sql("SELECT status, provider, fallback, fallback_reason, primary_outcome, attempts "
                "FROM generations")
    assert row[:5] == ("succeeded", "anthropic", True, reason, outcome)
    assert [(a["provider"], a["outcome"], a.get("http_status")) for a in row[5]] == \
        [("openai", outcome, status), ("anthropic", "succeeded", None)]


def test_openai_timeout_falls_back_within_the_deadline(stack, sql):
    stack.configure(LLM_TIMEOUT_S="2")
    stack.openai.delay_s = 5
    response = stack.post()
    assert response.status_code == 200 and response.json()["provider"] == "anthropic"
    [(reason, attempts)] = sql("SELECT fallback_reason, attempts FROM generations")
    assert reason == "timeout" and attempts[0]["error_class"] == "APITimeoutError"


def test_openai_connection_refused_falls_back(stack, sql):
    stack.configure(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert stack.post().json()["provider"] == "anthropic"
    assert sql("SELECT fallback_reason FROM generations") == [("connection_error",)]


def test_request_caused_400_is_the_callers_not_retried_elsewhere_and_frees_the_quota(stack, sql):
    stack.openai.status = 400
    stack.openai.error_body = {"error": {
        "message": "This model's maximum context length is 128000 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    error = _error(stack.post(), 400, "provider_rejected")
    assert stack.anthropic.calls == 0
    assert error["quota"]["used"] == 0
    assert sql("SELECT status, primary_outcome, error_class FROM generations") == \
        [("failed", "rejected", "BadRequestError")]


def test_both_providers_down_is_502_and_consumes_no_quota(stack, sql):
    stack.configure(QUOTA_TRIAL="1")
    stack.openai.status, stack.anthropic.status = 500, 529
    error = _error(stack.post(), 502, "provider_unavailable")
    assert error["request_id"] and error["quota"]["used"] == 0
    assert sql("SELECT status, provider, fallback, fallback_reason, error_class, primary_outcome "
               "FROM generations") == \
        [("failed", "anthropic", True, "server_error", "OverloadedError", "failed")]
    assert sql("SELECT used FROM generation_usage") == [(0,)]
    stack.openai.status, stack.anthropic.status = 200, 200
    assert stack.post().status_code == 200  # the one-generation quota is still there


def test_openai_alone_failing_is_502(stack, sql):
    stack.configure(ANTHROPIC_API_KEY="")
    stack.openai.status = 500
    _error(stack.post(), 502, "provider_unavailable")
    assert sql("SELECT provider, fallback, primary_outcome FROM generations") == \
        [("openai", False, "failed")]


def test_anthropic_alone_serves_when_openai_is_not_configured(stack, sql):
    stack.configure(OPENAI_API_KEY="")
    body = stack.post().json()
    assert body["provider"] == "anthropic" and stack.openai.calls == 0
    assert sql("SELECT fallback_reason, primary_outcome FROM generations") == \
        [("not_configured", "skipped")]


def test_no_provider_configured_is_503_and_reserves_nothing(stack, sql):
    stack.configure(OPENAI_API_KEY="", ANTHROPIC_API_KEY="")
    _error(stack.post(), 503, "no_provider_configured")
    assert sql("SELECT count(*) FROM generations") == [(0,)]


def test_circuit_opens_after_consecutive_failures_and_skips_openai(stack, sql, redis_direct):
    stack.configure(CIRCUIT_BREAKER_THRESHOLD="2", CIRCUIT_BREAKER_COOLDOWN_S="30")
    stack.openai.status = 500
    assert [stack.post().json()["provider"] for _ in range(2)] == ["anthropic", "anthropic"]
    assert stack.openai.calls == 2
    assert 25 <= redis_direct.ttl("circuit:openai:open") <= 30
    body = stack.post().json()
    assert body["provider"] == "anthropic" and body["fallback"] is True
    assert stack.openai.calls == 2  # skipped while open
    [row] = sql("SELECT fallback_reason, primary_outcome FROM generations "
                "ORDER BY created_at DESC LIMIT 1")
    assert row == ("circuit_open", "skipped")
    # Cooldown over (the key expired): the next request tries OpenAI, which recovered.
    redis_direct.delete("circuit:openai:open")
    stack.openai.status = 200
    assert stack.post().json()["provider"] == "openai"
    assert not redis_direct.exists("circuit:openai:failures")


def test_half_open_failure_reopens_the_circuit_at_once(stack, redis_direct):
    stack.configure(CIRCUIT_BREAKER_THRESHOLD="2")
    stack.openai.status = 500
    stack.post(), stack.post()
    redis_direct.delete("circuit:openai:open")
    stack.post()
    assert stack.openai.calls == 3 and redis_direct.exists("circuit:openai:open")


def test_a_success_resets_the_consecutive_count(stack, redis_direct):
    stack.configure(CIRCUIT_BREAKER_THRESHOLD="2")
    stack.openai.script(500)
    stack.post(), stack.post()
    stack.openai.script(500)
    stack.post()
    assert not redis_direct.exists("circuit:openai:open")
    assert redis_direct.get("circuit:openai:failures") == "1"


# --- dependencies down --------------------------------------------------------------------

def test_redis_down_still_serves_and_the_postgres_quota_still_holds(stack, sql, capfd):
    stack.configure(UPSTASH_REDIS_REST_URL="http://127.0.0.1:9", QUOTA_TRIAL="2",
                    RATE_LIMIT_USER="1/60s")
    assert [stack.post().status_code for _ in range(3)] == [200, 200, 402]
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["event"] == "error" and line.get("component") == "redis"
               and line.get("part") == "rate_limits" for line in logged)


def test_redis_rejecting_the_token_also_fails_open(stack):
    stack.configure(UPSTASH_REDIS_REST_TOKEN="wrong-token")
    assert stack.post().status_code == 200


def test_database_down_is_503_and_nothing_is_written(stack, sql):
    stack.configure(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    _error(stack.post(), 503, "database_unavailable")
    assert stack.openai.calls == 0
    assert sql("SELECT count(*) FROM organizations") == [(0,)]


def test_both_providers_hung_is_502_with_two_timeouts_inside_one_deadline(stack, sql):
    stack.configure(LLM_TIMEOUT_S="2")
    stack.openai.delay_s = stack.anthropic.delay_s = 4
    _error(stack.post(), 502, "provider_unavailable")
    [(attempts,)] = sql("SELECT attempts FROM generations")
    assert [(a["provider"], a["reason"]) for a in attempts] == \
        [("openai", "timeout"), ("anthropic", "timeout")]
    # the primary got its share of the deadline, the fallback the rest
    assert attempts[0]["latency_ms"] < 2000 * 0.6 + 500
    assert attempts[0]["latency_ms"] + attempts[1]["latency_ms"] < 2000 + 500


# --- cold start and the Vercel runtime ----------------------------------------------------

_LAZY_PROBE = """
import sys, httpx
from devtools.serve import serve_in_process
from devtools.fake_llm import FakeOpenAI, FakeAnthropic
from tests.support.tokens import PUBLIC_PEM, mint_token
import os
openai, anthropic = FakeOpenAI(), FakeAnthropic()
os.environ.update(OPENAI_BASE_URL=openai.base_url, ANTHROPIC_BASE_URL=anthropic.base_url,
                  CLERK_JWT_KEY=PUBLIC_PEM)  # this process made its own test key pair
seen = {}
with serve_in_process("api/generate.py") as url:
    seen["import"] = sorted(m for m in ("openai", "anthropic") if m in sys.modules)
    headers = {"authorization": "Bearer " + mint_token("user_lazy", org_id="org_lazy")}
    first = httpx.post(url + "/api/generate", json={"prompt": "hi"}, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    seen["primary"] = sorted(m for m in ("openai", "anthropic") if m in sys.modules)
    openai.status = 500
    assert httpx.post(url + "/api/generate", json={"prompt": "hi"}, headers=headers,
                      timeout=60).json()["provider"] == "anthropic"
    seen["fallback"] = sorted(m for m in ("openai", "anthropic") if m in sys.modules)
print(seen)
"""


def test_sdks_are_imported_lazily_anthropic_only_on_fallback(app_env, stack):
    import os
    import subprocess
    import sys

    from tests.support.generate_stack import stack_env
    from devtools.services import ROOT

    env = {**os.environ, **app_env, **stack_env(stack.openai, stack.anthropic)}
    result = subprocess.run([sys.executable, "-c", _LAZY_PROBE], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own probe's dict
    assert seen == {"import": [], "primary": ["openai"], "fallback": ["anthropic", "openai"]}


@pytest.mark.slow
def test_generate_through_the_vercel_runtime(app_env, stack, sql):
    import os

    from tests.support.generate_stack import stack_env
    from devtools.serve import serve_through_vercel_runtime

    env = {**app_env, **stack_env(stack.openai, stack.anthropic)}
    with serve_through_vercel_runtime("api/generate.py", env) as url:
        token = mint_token("user_vc", org_id="org_vc")
        response = stack.client.post(url + "/api/generate", json={"prompt": "hi"},
                                     headers={"authorization": f"Bearer {token}",
                                              "x-vercel-forwarded-for": "203.0.113.200"})
        assert response.status_code == 200, response.text
        assert response.json()["provider"] == "openai"
        _error(stack.client.post(url + "/api/generate", json={"prompt": "hi"}), 401, "unauthorized")
        _error(stack.client.post(url + "/api/generate", json={"nope": 1},
                                 headers={"authorization": f"Bearer {token}"}), 400, "invalid_request")
    assert sql("SELECT status FROM generations") == [("succeeded",)]
    assert os.environ.get("CLERK_JWT_KEY")
