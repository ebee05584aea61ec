"""The purge cron: retention per plan to the exact boundary, the usage rollup, dry runs, the
other tables, batches and the time budget."""

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from lib import config
from lib.jobs import cron, purge
from tests.support import crons as rows
from tests.support.crons import SECRET, fire

PATH = "/api/cron/purge"
RETENTION = {"TRIAL": 30, "TEAM": 180, "AGENCY": 365}
NOTHING = dict.fromkeys(purge.TABLES, 0)


@pytest.fixture
def url(serve, cron_secret):
    return serve("api/cron/purge.py")


def _count(sql, table: str) -> int:
    return sql.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def _usage(sql) -> list[dict]:
    return sql.execute("SELECT day, organization_id::text AS org, provider, model, requests, failed, "
                       "input_tokens, output_tokens, cost_usd FROM usage_daily "
                       "ORDER BY day, org, provider, model").fetchall()


@pytest.mark.parametrize("plan", list(RETENTION))
def test_nothing_inside_the_retention_window_is_deleted_at_the_exact_boundary(sql, plan):
    now = rows.now()
    organization = rows.org(sql, plan)
    cutoff = now - timedelta(days=RETENTION[plan])
    rows.generation(sql, organization, created_at=cutoff, input_tokens=1)  # exactly at the cutoff: kept
    rows.generation(sql, organization, created_at=cutoff + timedelta(microseconds=1), input_tokens=2)
    rows.generation(sql, organization, created_at=cutoff - timedelta(microseconds=1), input_tokens=4)
    result = purge.purge(cron.Budget(60), now=now)
    assert result["deleted"]["generations"] == 1 and result["complete"] is True
    kept = sorted(r["input_tokens"] for r in sql.execute("SELECT input_tokens FROM generations"))
    assert kept == [1, 2]


def test_retention_follows_each_organizations_plan_and_settings(url, sql, monkeypatch):
    monkeypatch.setenv("RETENTION_DAYS_TEAM", "10")
    config.reload()
    now = rows.now()
    trial, team, agency = rows.org(sql, "TRIAL"), rows.org(sql, "TEAM"), rows.org(sql, "AGENCY")
    for organization in (trial, team, agency):
        for age in (5, 20, 100, 300, 400):
            rows.generation(sql, organization, created_at=now - timedelta(days=age))
    body = fire(url, PATH).json()
    assert body["deleted"]["generations"] == 3 + 4 + 1 and body["complete"] is True
    left = {r["org"]: r["n"] for r in sql.execute(
        "SELECT organization_id::text AS org, count(*) AS n FROM generations GROUP BY 1")}
    assert left == {trial: 2, team: 1, agency: 4}


def test_rollup_equals_the_sums_of_the_deleted_rows(url, sql, monkeypatch):
    monkeypatch.setenv("PURGE_BATCH_SIZE", "3")  # many batches, several touching one usage row
    config.reload()
    now = rows.now()
    old = now - timedelta(days=40)
    trial, other = rows.org(sql, "TRIAL"), rows.org(sql, "TRIAL")
    for i in range(7):
        rows.generation(sql, trial, created_at=old.replace(hour=1) + timedelta(minutes=i),
                        status=["succeeded", "failed", "pending"][i % 3],
                        input_tokens=i, output_tokens=10 * i, cost_usd=f"0.0000000{i + 1}")
    rows.generation(sql, trial, created_at=old.replace(hour=1), provider=None, model=None, input_tokens=5)
    rows.generation(sql, other, created_at=old - timedelta(days=1), status="failed", output_tokens=3)
    rows.generation(sql, trial, created_at=now - timedelta(days=1), input_tokens=1000)  # kept
    expected = sql.execute("""
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, organization_id::text AS org,
               coalesce(provider, '') AS provider, coalesce(model, '') AS model,
               count(*) FILTER (WHERE status <> 'pending') AS requests,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cost_usd) AS cost_usd
        FROM generations WHERE created_at < now() - interval '30 days'
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""").fetchall()
    body = fire(url, PATH).json()
    assert body["deleted"]["generations"] == 9
    assert _usage(sql) == expected
    assert sum(r["requests"] for r in expected) == 7 and sum(r["failed"] for r in expected) == 3
    assert _count(sql, "generations") == 1


def test_rollup_adds_to_existing_usage_rows_instead_of_replacing_them(sql):
    now = rows.now()
    organization = rows.org(sql, "TRIAL")
    old = (now - timedelta(days=50)).replace(hour=12)
    rows.generation(sql, organization, created_at=old, cost_usd="0.5")
    purge.purge(cron.Budget(60), now=now)
    rows.generation(sql, organization, created_at=old + timedelta(minutes=1), cost_usd="0.25")
    purge.purge(cron.Budget(60), now=now)
    [usage] = _usage(sql)
    assert (usage["requests"], usage["cost_usd"], usage["input_tokens"]) == (2, Decimal("0.75"), 20)


def test_dry_run_answers_the_counts_and_deletes_nothing(url, sql):
    now = rows.now()
    organization = rows.org(sql, "TRIAL")
    for age in (31, 32, 5):
        rows.generation(sql, organization, created_at=now - timedelta(days=age))
    sql.execute("INSERT INTO stripe_events (id, type, created, outcome, processed_at) VALUES "
                "('evt_old', 'x', now(), 'applied', now() - interval '91 days')")
    before = _count(sql, "generations")
    for response in (fire(url, PATH + "?dry_run=1"),
                     httpx.post(f"{url}{PATH}?secret={SECRET}", json={"dry_run": True}, timeout=30),
                     httpx.post(f"{url}{PATH}?secret={SECRET}&dry_run=true", timeout=30)):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dry_run"] is True and body["complete"] is True
        assert body["deleted"] == {**NOTHING, "generations": 2, "stripe_events": 1}
    assert _count(sql, "generations") == before and _count(sql, "stripe_events") == 1
    assert _usage(sql) == []
    real = fire(url, PATH).json()
    assert real["dry_run"] is False and real["deleted"] == {**NOTHING, "generations": 2, "stripe_events": 1}


@pytest.mark.parametrize("query,body", [
    ("?dry_run=maybe", None), ("?dry_run=2", None),
    ("", b'{"dry_run": "yes"}'), ("", b'{"dry_run": 1}'), ("", b'{"dry_run": null}'),
    ("", b'{"drop_table": true}'), ("", b"[true]"), ("", b"{bad json"),
])
def test_bad_dry_run_input_is_400_and_deletes_nothing(url, sql, query, body):
    organization = rows.org(sql, "TRIAL")
    rows.generation(sql, organization, created_at=rows.now() - timedelta(days=90))
    response = httpx.post(f"{url}{PATH}{query}", content=body,
                          headers={"authorization": f"Bearer {SECRET}"}, timeout=30)
    assert response.status_code == 400, response.text
    assert _count(sql, "generations") == 1


def test_other_tables_keep_what_is_inside_their_windows(url, sql):
    organization = rows.org(sql, "TEAM")
    user_id = rows.user(sql, organization)
    sql.execute("""
        INSERT INTO stripe_events (id, type, created, outcome, processed_at) VALUES
            ('evt_old', 't', now(), 'applied', now() - interval '90 days 1 minute'),
            ('evt_new', 't', now(), 'applied', now() - interval '89 days 23 hours');
        INSERT INTO reminder_deliveries (user_id, iso_week, status, created_at) VALUES
            (%(u)s, '2025-W01', 'sent', now() - interval '401 days'),
            (%(u)s, '2025-W10', 'sent', now() - interval '399 days');
        INSERT INTO ip_blocks (ip, reason, source, created_at, expires_at) VALUES
            ('192.0.2.1', 'r', 'auto', now() - interval '9 days', now() - interval '8 days'),
            ('192.0.2.2', 'r', 'auto', now() - interval '6 days', now() - interval '5 days'),
            ('192.0.2.3', 'r', 'manual', now() - interval '900 days', now() + interval '1 day');
        INSERT INTO cron_runs (job, status, started_at) VALUES
            ('purge', 'succeeded', now() - interval '91 days'),
            ('purge', 'succeeded', now() - interval '89 days');
    """.replace("%(u)s", "'" + user_id + "'"))
    body = fire(url, PATH).json()
    assert body["deleted"] == {**NOTHING, "stripe_events": 1, "reminder_deliveries": 1,
                               "ip_blocks": 1, "cron_runs": 1}
    assert [r["id"] for r in sql.execute("SELECT id FROM stripe_events")] == ["evt_new"]
    assert [r["iso_week"] for r in sql.execute("SELECT iso_week FROM reminder_deliveries")] == ["2025-W10"]
    assert sorted(str(r["ip"]) for r in sql.execute("SELECT ip FROM ip_blocks")) == ["192.0.2.2", "192.0.2.3"]
    assert _count(sql, "cron_runs") == 2  # the recent one and this run's own


def test_time_budget_makes_a_run_incomplete_and_the_next_one_finishes(url, sql, monkeypatch):
    monkeypatch.setenv("PURGE_BATCH_SIZE", "10")
    monkeypatch.setenv("CRON_TIME_BUDGET_S", "0.000001")
    config.reload()
    organization = rows.org(sql, "TRIAL")
    old = rows.now() - timedelta(days=31)
    for i in range(25):
        rows.generation(sql, organization, created_at=old - timedelta(minutes=i), cost_usd="0.01")
    partial = fire(url, PATH).json()
    assert partial["complete"] is False and partial["deleted"]["generations"] == 10
    assert _count(sql, "generations") == 15

    monkeypatch.setenv("CRON_TIME_BUDGET_S", "45")
    config.reload()
    rest = fire(url, PATH).json()
    assert rest["complete"] is True and rest["deleted"]["generations"] == 15
    assert _count(sql, "generations") == 0
    [usage] = _usage(sql)
    assert (usage["requests"], usage["cost_usd"]) == (25, Decimal("0.25"))
    runs = [r["complete"] for r in sql.execute("SELECT complete FROM cron_runs ORDER BY id")]
    assert runs == [False, True]

