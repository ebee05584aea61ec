"""Issue 11 §5: a generation keeps the retention of the plan in force when it was created.
Plan changes go through the real webhook (signed events), rows are plain SQL inserts."""

import time
from datetime import timedelta

import pytest

from lib.jobs import cron, purge
from ops.stripe_events import MONTH_S, sample_event
from tests.support import crons as rows
from tests.support.stripe_signing import PRICE_AGENCY, PRICE_TEAM, deliver

RETENTION = {"TRIAL": 30, "TEAM": 180, "AGENCY": 365}
AGES = (5, 29, 100, 200, 300, 360)


@pytest.fixture
def url(webhook_url):
    return webhook_url


def _agency(sql, url, external_id: str) -> str:
    org_id = str(sql.execute("INSERT INTO organizations (external_id, trial_ends_at) "
                             "VALUES (%s, now() + interval '14 days') RETURNING id",
                             (external_id,)).fetchone()["id"])
    t = int(time.time()) - 1000
    for event in (sample_event("checkout.session.completed", org=external_id, customer=f"cus_{external_id}",
                               subscription=f"sub_{external_id}", created=t),
                  sample_event("customer.subscription.created", customer=f"cus_{external_id}",
                               subscription=f"sub_{external_id}", price=PRICE_AGENCY, created=t + 1)):
        assert deliver(url, event).json()["outcome"] == "applied"
    assert _plan(sql, org_id) == "AGENCY"
    return org_id


def _change(url, external_id: str, step: int, event_type: str = "customer.subscription.updated",
            **fields) -> None:
    event = sample_event(event_type, customer=f"cus_{external_id}", subscription=f"sub_{external_id}",
                         created=int(time.time()) - 900 + step, **fields)
    assert deliver(url, event).json()["outcome"] == "applied"


def _plan(sql, org_id: str) -> str:
    return sql.execute("SELECT plan FROM organizations WHERE id = %s", (org_id,)).fetchone()["plan"]


def _ages(sql, org_id: str, now) -> list[int]:
    found = sql.execute("SELECT created_at FROM generations WHERE organization_id = %s", (org_id,))
    return sorted(round((now - r["created_at"]) / timedelta(days=1)) for r in found)


def test_downgrade_to_team_keeps_rows_created_on_agency(url, sql):
    org = _agency(sql, url, "org_downgrade")
    now = rows.now()
    for age in AGES:
        rows.generation(sql, org, created_at=now - timedelta(days=age))
    _change(url, "org_downgrade", 1, price=PRICE_TEAM, status="active")
    assert _plan(sql, org) == "TEAM"
    rows.generation(sql, org, created_at=now - timedelta(days=1))  # a TEAM row
    result = purge.purge(cron.Budget(60), now=now)
    assert result["deleted"]["generations"] == 0
    assert _ages(sql, org, now) == [1, *AGES]
    # 180 days on: the TEAM row (181 days old) and the AGENCY rows past 365 days go.
    later = now + timedelta(days=180)
    assert purge.purge(cron.Budget(60), now=later)["deleted"]["generations"] == 1 + 3
    assert _ages(sql, org, now) == [5, 29, 100]


def test_one_unpaid_night_and_recovery_never_shorten_existing_rows(url, sql):
    org = _agency(sql, url, "org_unpaid")
    now = rows.now()
    for age in AGES:
        rows.generation(sql, org, created_at=now - timedelta(days=age))
    _change(url, "org_unpaid", 1, status="unpaid", price=PRICE_AGENCY)
    assert _plan(sql, org) == "TRIAL"
    rows.generation(sql, org, created_at=now - timedelta(hours=2))  # created while unpaid
    assert purge.purge(cron.Budget(60), now=now)["deleted"]["generations"] == 0  # the nightly run
    _change(url, "org_unpaid", 2, event_type="invoice.paid", price=PRICE_AGENCY,
            period_end=int(time.time()) + MONTH_S)
    assert _plan(sql, org) == "AGENCY"
    assert purge.purge(cron.Budget(60), now=now)["deleted"]["generations"] == 0
    assert _ages(sql, org, now) == [0, *AGES]
    plans = sql.execute("SELECT plan, count(*) AS n FROM generations WHERE organization_id = %s "
                        "GROUP BY plan ORDER BY plan", (org,)).fetchall()
    assert plans == [{"plan": "AGENCY", "n": len(AGES)}, {"plan": "TRIAL", "n": 1}]


@pytest.mark.parametrize("created_on,now_on", [("AGENCY", "TRIAL"), ("TRIAL", "AGENCY"),
                                               ("TEAM", "TRIAL")])
def test_a_row_exactly_at_its_own_plans_boundary_is_kept(sql, created_on, now_on):
    org = rows.org(sql, created_on)
    now = rows.now()
    cutoff = now - timedelta(days=RETENTION[created_on])
    rows.generation(sql, org, created_at=cutoff, input_tokens=1)
    rows.generation(sql, org, created_at=cutoff - timedelta(microseconds=1), input_tokens=2)
    sql.execute("UPDATE organizations SET plan = %s WHERE id = %s", (now_on, org))
    assert purge.purge(cron.Budget(60), now=now)["deleted"]["generations"] == 1
    kept = [r["input_tokens"] for r in sql.execute("SELECT input_tokens FROM generations")]
    assert kept == [1]


def test_dry_run_counts_by_the_rows_own_plan(sql):
    org = rows.org(sql, "AGENCY")
    now = rows.now()
    rows.generation(sql, org, created_at=now - timedelta(days=200))
    sql.execute("UPDATE organizations SET plan = 'TRIAL' WHERE id = %s", (org,))
    assert purge.purge(cron.Budget(60), dry_run=True, now=now)["deleted"]["generations"] == 0
