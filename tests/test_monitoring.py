"""lib.monitoring: exact numbers on seeded data, at a fixed `now` (a Wednesday in ISO week
2027-W01, so the weekly series crosses the year boundary and 2026's week 53)."""

from datetime import datetime, timedelta, timezone

import pytest

from lib import monitoring
from lib.errors import BadRequest
from lib.routes.monitoring import parse_days
from tests.support import monitoring_data as data

NOW = datetime(2027, 1, 6, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()


def _day(offset: int) -> datetime:
    """Noon UTC `offset` days before NOW."""
    return NOW - timedelta(days=offset)


def test_organizations_are_counted_by_plan_subscription_and_trial_end(conn):
    data.organization(conn, "TRIAL", trial_ends_at=NOW + timedelta(days=3))
    data.organization(conn, "TRIAL", trial_ends_at=NOW + timedelta(days=7))
    data.organization(conn, "TRIAL", trial_ends_at=NOW + timedelta(days=7, seconds=1))
    data.organization(conn, "TRIAL", trial_ends_at=NOW - timedelta(days=1))
    data.organization(conn, "TEAM", "active")
    data.organization(conn, "TEAM", "active")
    data.organization(conn, "TEAM", "past_due")
    data.organization(conn, "AGENCY", "canceled")
    orgs = monitoring.dashboard(now=NOW)["organizations"]
    assert orgs["by_plan"] == {"TRIAL": 4, "TEAM": 3, "AGENCY": 1}
    assert orgs["total"] == 8
    assert orgs["trials_ending_7d"] == 2  # within (now, now + 7 d]; the expired one is not "ending"
    subs = orgs["subscriptions"]
    assert (subs["active"], subs["past_due"], subs["canceled"], subs["none"]) == (2, 1, 1, 4)
    assert subs["unpaid"] == subs["trialing"] == 0


def test_daily_series_is_the_last_14_utc_days_zero_filled(conn, org):
    midnight = datetime.combine(TODAY, datetime.min.time(), timezone.utc)
    data.generations(conn, org, midnight, 3)                                   # today
    data.generations(conn, org, midnight - timedelta(seconds=1), 2)            # yesterday
    data.generations(conn, org, midnight - timedelta(seconds=1), 1, status="failed")
    data.generations(conn, org, _day(13), 4)                                   # first day shown
    data.generations(conn, org, _day(14), 100)                                 # one day too old
    data.generations(conn, org, NOW - timedelta(minutes=1), 7, status="pending")  # not a request
    data.generations(conn, org, NOW + timedelta(minutes=1), 9)                 # after `now`
    daily = monitoring.dashboard(now=NOW)["generations"]["daily"]
    assert [d["date"] for d in daily] == [(TODAY - timedelta(days=13 - i)).isoformat()
                                          for i in range(14)]
    counts = {d["date"]: (d["count"], d["failed"]) for d in daily if d["count"]}
    assert counts == {"2026-12-24": (4, 0), "2027-01-05": (3, 1), "2027-01-06": (3, 0)}


def test_weekly_series_is_8_iso_weeks_across_the_year_boundary(conn, org):
    data.generations(conn, org, datetime(2026, 11, 15, 23, 59, tzinfo=timezone.utc), 50)  # W46
    data.generations(conn, org, datetime(2026, 11, 16, 0, 0, tzinfo=timezone.utc), 1)    # W47
    data.generations(conn, org, datetime(2026, 12, 28, 8, tzinfo=timezone.utc), 2)       # W53
    data.generations(conn, org, datetime(2027, 1, 3, 23, 59, tzinfo=timezone.utc), 3)    # W53
    data.generations(conn, org, datetime(2027, 1, 4, 0, 0, tzinfo=timezone.utc), 4)      # W01
    weekly = monitoring.dashboard(now=NOW)["generations"]["weekly"]
    assert weekly == [{"week": "2026-W47", "count": 1}, {"week": "2026-W48", "count": 0},
                      {"week": "2026-W49", "count": 0}, {"week": "2026-W50", "count": 0},
                      {"week": "2026-W51", "count": 0}, {"week": "2026-W52", "count": 0},
                      {"week": "2026-W53", "count": 5}, {"week": "2027-W01", "count": 4}]


def test_purged_days_are_counted_from_the_rollup(conn, org):
    trial = data.organization(conn, "TRIAL")
    day = TODAY - timedelta(days=40)  # 2026-11-27, ISO 2026-W48; trial rows already purged
    data.rollup(conn, day, trial, 30, 3, model="gpt-4o", input_tokens=300, output_tokens=600,
                cost_usd=1.5)
    data.generations(conn, org, datetime.combine(day, datetime.min.time(), timezone.utc), 5)
    data.rollup(conn, TODAY - timedelta(days=20), trial, 8, 1, input_tokens=80,
                output_tokens=160, cost_usd=0.25)
    payload = monitoring.dashboard(days=45, now=NOW)
    daily = {d["date"]: (d["count"], d["failed"]) for d in payload["generations"]["daily"]}
    assert daily["2026-11-27"] == (35, 3)
    assert daily["2026-12-17"] == (8, 1)
    weekly = {w["week"]: w["count"] for w in payload["generations"]["weekly"]}
    assert weekly["2026-W48"] == 35 and weekly["2026-W51"] == 8
    assert payload["tokens"]["30d"]["requests"] == 8  # 40 days ago is outside the 30 days
    assert payload["tokens"]["30d"]["total_tokens"] == 240


def test_history_is_unchanged_when_the_purge_moves_rows_into_the_rollup(conn, org):
    other = data.organization(conn, "TRIAL")
    for offset in (3, 10, 35):
        data.generations(conn, org, _day(offset), 4, input_tokens=5)
        data.generations(conn, other, _day(offset), 2, status="failed", cost_usd=0.5)
    before = monitoring.dashboard(days=40, now=NOW)  # settles those days from the raw rows
    for offset in (3, 10, 35):
        data.purge_day(conn, other, (NOW - timedelta(days=offset)).date())
    after_settled = monitoring.dashboard(days=40, now=NOW)
    monitoring.forget_rollup()
    recomputed = monitoring.dashboard(days=40, now=NOW)  # from usage_daily + remaining rows
    for payload in (after_settled, recomputed):
        assert payload["generations"] == before["generations"]
        assert payload["tokens"]["30d"] == before["tokens"]["30d"]
        assert payload["tokens"]["by_model"] == before["tokens"]["by_model"]
    assert sum(d["count"] for d in before["generations"]["daily"]) == 18


def test_recent_days_are_read_live_and_settled_days_once(conn, org):
    data.generations(conn, org, _day(1), 1)
    data.generations(conn, org, _day(5), 1)
    monitoring.dashboard(now=NOW)
    settled = conn.execute("SELECT count(*) FROM monitoring_days").fetchone()[0]
    window = monitoring.Window(NOW, 14)
    assert settled == (window.settled - window.history_start).days + 1
    data.generations(conn, org, _day(1), 2)  # yesterday is still live
    daily = {d["date"]: d["count"] for d in monitoring.dashboard(now=NOW)["generations"]["daily"]}
    assert daily["2027-01-05"] == 3 and daily["2027-01-01"] == 1
    assert monitoring.settle(window) == 0  # nothing left to settle: idempotent


def test_token_windows_and_the_by_model_breakdown(conn, org):
    def add(at, model, tokens, cost, provider="openai"):
        data.generations(conn, org, at, 1, provider=provider, model=model, input_tokens=tokens,
                         output_tokens=2 * tokens, cost_usd=cost)

    add(NOW - timedelta(hours=23), "gpt-4o-mini", 10, 0.01)
    add(NOW - timedelta(hours=25), "gpt-4o", 100, 1.0)        # not in 24h, in 7d
    add(_day(6), "claude-3-5-haiku-latest", 1000, 0.5, "anthropic")  # 7d starts 6 days back
    add(_day(7), "gpt-4o-mini", 10000, 0.02)                  # 30d only
    add(_day(29), "gpt-4o", 100000, 3.0)                      # 30d starts 29 days back
    add(_day(30), "gpt-4o", 1000000, 99.0)                    # outside every window
    tokens = monitoring.dashboard(now=NOW)["tokens"]
    assert tokens["24h"] == {"requests": 1, "input_tokens": 10, "output_tokens": 20,
                             "total_tokens": 30, "cost_usd": 0.01}
    assert tokens["7d"] == {"since": "2026-12-31", "requests": 3, "input_tokens": 1110,
                            "output_tokens": 2220, "total_tokens": 3330, "cost_usd": 1.51}
    assert tokens["30d"]["requests"] == 5 and tokens["30d"]["input_tokens"] == 111110
    assert tokens["30d"]["since"] == "2026-12-08"
    assert [(m["provider"], m["model"], m["requests"], m["total_tokens"], m["cost_usd"])
            for m in tokens["by_model"]] == [
        ("openai", "gpt-4o", 2, 300300, 4.0),
        ("anthropic", "claude-3-5-haiku-latest", 1, 3000, 0.5),
        ("openai", "gpt-4o-mini", 2, 30030, 0.03)]


def test_llm_rates_and_p95_over_the_last_hour_and_day(conn, org):
    for minute in range(20):  # latencies 100, 200, ..., 2000 ms in the last hour
        data.generations(conn, org, NOW - timedelta(minutes=minute + 1), latency_ms=100 * (minute + 1))
    conn.execute("UPDATE generations SET fallback = true, provider = 'anthropic',"
                 " fallback_reason = 'rate_limited' WHERE latency_ms IN (100, 200)")
    # OpenAI refused the request itself (a 400): a failed request, not an OpenAI error.
    conn.execute("UPDATE generations SET status = 'failed' WHERE latency_ms = 300")
    data.generations(conn, org, NOW - timedelta(hours=2), 20, latency_ms=10000, fallback=True)
    llm = monitoring.dashboard(now=NOW)["llm"]
    assert llm["1h"] == {"requests": 20, "failed": 1, "error_rate": 0.05,
                         "openai_error_rate": 0.1, "fallback_rate": 0.1, "p95_latency_ms": 1905.0,
                         "provider_misconfigured": 0}
    assert llm["24h"]["requests"] == 40
    assert llm["24h"]["openai_error_rate"] == pytest.approx(22 / 40)
    assert llm["24h"]["fallback_rate"] == pytest.approx(22 / 40)
    assert llm["24h"]["p95_latency_ms"] == 10000


def test_openai_error_rate_counts_only_requests_where_openai_was_tried(conn, org):
    recent = NOW - timedelta(minutes=5)
    data.generations(conn, org, recent, 6)                                        # OpenAI answered
    data.generations(conn, org, recent, 2, provider="anthropic", fallback=True,
                     fallback_reason="timeout")                                   # OpenAI failed
    data.generations(conn, org, recent, 1, status="failed", provider="anthropic", fallback=True,
                     fallback_reason="auth_error")                                # both failed
    data.generations(conn, org, recent, 1, status="failed")                       # rejected (4xx)
    data.generations(conn, org, recent, 5, provider="anthropic", fallback=True,
                     fallback_reason="circuit_open")                              # not tried
    data.generations(conn, org, recent, 3, provider="anthropic", fallback=True,
                     fallback_reason="not_configured")                            # not tried
    hour = monitoring.dashboard(now=NOW)["llm"]["1h"]
    assert hour["requests"] == 18
    assert hour["openai_error_rate"] == 0.3      # 3 failed of the 10 where OpenAI was tried
    assert hour["fallback_rate"] == pytest.approx(11 / 18)
    assert hour["error_rate"] == pytest.approx(2 / 18)


def test_openai_error_rate_is_null_when_openai_was_never_tried(conn, org):
    data.generations(conn, org, NOW - timedelta(minutes=5), 4, provider="anthropic",
                     fallback=True, fallback_reason="not_configured")
    payload = monitoring.dashboard(now=NOW)
    assert payload["llm"]["1h"]["openai_error_rate"] is None
    assert not [a for a in payload["alerts"] if a["metric"] == "openai_error_rate"]


def test_crons_show_the_last_run_of_each_job_and_jobs_that_never_ran(conn):
    data.cron_run(conn, "purge", NOW - timedelta(days=2))
    data.cron_run(conn, "purge", NOW - timedelta(days=1), "failed", error="DatabaseUnavailable")
    crons = monitoring.dashboard(now=NOW)["crons"]
    assert [c["job"] for c in crons] == ["purge", "weekly-reminders", "reconcile-billing", "alerts"]
    assert crons[0]["status"] == "failed" and crons[0]["error"] == "DatabaseUnavailable"
    assert crons[0]["started_at"].startswith("2027-01-05T12:00:00")
    assert crons[1]["started_at"] is None and crons[1]["status"] is None


def test_blocked_ips_count_from_redis_with_reasons_from_the_table(conn, redis_direct):
    data.ip_block(conn, "203.0.113.5", NOW - timedelta(minutes=10), reason="scraper", source="auto")
    redis_direct.setex("blocked:ip:203.0.113.5", 3600, "true")
    redis_direct.setex("blocked:ip:2001:db8::1", 7200, "true")  # set by hand: no record
    redis_direct.set("ratelimit:other", "1")
    blocked = monitoring.dashboard(now=NOW)["blocked_ips"]
    assert blocked["count"] == 2 and blocked["last_hour"] == 1
    assert [(b["ip"], b["reason"], b["source"]) for b in blocked["ips"]] == [
        ("2001:db8::1", None, "manual"), ("203.0.113.5", "scraper", "auto")]
    assert 7100 < blocked["ips"][0]["ttl_seconds"] <= 7200


def test_more_than_100_blocked_ips_are_counted_but_100_listed(redis_direct):
    for index in range(130):
        redis_direct.setex(f"blocked:ip:198.51.100.{index}", 600, "true")
    blocked = monitoring.dashboard(now=NOW)["blocked_ips"]
    assert blocked["count"] == 130 and len(blocked["ips"]) == 100


@pytest.mark.parametrize("query,days", [({}, 14), ({"days": "1"}, 1), ({"days": "90"}, 90),
                                        ({"days": "007"}, 7)])
def test_days_parameter_within_bounds(query, days):
    assert parse_days(query) == days


@pytest.mark.parametrize("query", [{"days": "0"}, {"days": "91"}, {"days": "-1"}, {"days": "1e2"},
                                   {"days": " 7"}, {"days": "x" * 5000}, {"days": ""},
                                   {"day": "7"}, {"days": "7", "extra": "1"}])
def test_days_parameter_out_of_bounds_or_unknown_is_rejected(query):
    with pytest.raises(BadRequest):
        parse_days(query)


def test_days_parameter_sets_the_length_of_the_daily_series(conn, org):
    data.generations(conn, org, _day(60), 2)
    daily = monitoring.dashboard(days=61, now=NOW)["generations"]["daily"]
    assert len(daily) == 61 and daily[0] == {"date": "2026-11-07", "count": 2, "failed": 0}
