"""The weekly-reminders cron: who gets one, what it says, and never twice in an ISO week."""

import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from lib import config
from lib.jobs import cron, reminders
from lib.jobs.unsubscribe import verify_unsubscribe_token
from tests.support import crons as rows
from tests.support.crons import SECRET, fire

PATH = "/api/cron/weekly-reminders"


@pytest.fixture
def url(serve, cron_secret):
    return serve("api/cron/weekly-reminders.py")


def _delivery(sql, user_id):
    return sql.execute("SELECT * FROM reminder_deliveries WHERE user_id = %s", (user_id,)).fetchall()


def test_targets_only_reachable_inactive_users_of_organizations_that_can_generate(url, smtp, sql):
    now = rows.now()
    team, agency = rows.org(sql, "TEAM"), rows.org(sql, "AGENCY", status="past_due")
    trial = rows.org(sql, "TRIAL", trial_ends_at=now + timedelta(days=3))
    team_no_status = rows.org(sql, "TEAM", status=None)
    expected = {rows.user(sql, team), rows.user(sql, agency), rows.user(sql, trial),
                rows.user(sql, team_no_status)}
    old_activity = rows.user(sql, team)
    rows.generation(sql, team, user_id=old_activity, created_at=now - timedelta(days=8))
    expected.add(old_activity)

    active = rows.user(sql, team)
    rows.generation(sql, team, user_id=active, created_at=now - timedelta(days=6), status="failed")
    rows.user(sql, team, opted_out=True)
    rows.user(sql, team, email=None)
    rows.user(sql, team, email="")
    for status in ("canceled", "unpaid", "incomplete_expired"):
        rows.user(sql, rows.org(sql, "AGENCY", status=status))
    rows.user(sql, rows.org(sql, "TRIAL", trial_ends_at=now - timedelta(minutes=1)))

    response = fire(url, PATH)
    assert response.status_code == 200, response.text
    assert response.json() == {"job": "weekly-reminders", "sent": len(expected), "skipped": 0,
                               "failed": 0, "complete": True}
    emails = {f"{user_id}@example.test" for user_id in expected}
    assert {m.recipients[0] for m in smtp.messages} == emails
    assert len(smtp.messages) == len(expected)
    states = sql.execute("SELECT user_id, iso_week, status, sent_at FROM reminder_deliveries").fetchall()
    assert {s["user_id"] for s in states} == expected
    assert all(s["status"] == "sent" and s["sent_at"] and s["iso_week"] == reminders.iso_week(now)
               for s in states)


def test_email_shows_usage_this_month_trial_end_and_a_signed_unsubscribe_link(url, smtp, sql, monkeypatch):
    monkeypatch.setenv("QUOTA_TRIAL", "50")
    config.reload()
    now = rows.now()
    ends = now + timedelta(days=2)
    trial = rows.org(sql, "TRIAL", trial_ends_at=ends)
    user_id = rows.user(sql, trial)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # The quota counter the generate route maintains (lib.generation.quota): 3 this month, 9 last month.
    last_month = (month_start - timedelta(days=1)).replace(day=1)
    sql.execute("INSERT INTO generation_usage (organization_id, month, used, quota_limit) "
                "VALUES (%s, %s, 3, 50), (%s, %s, 9, 50)",
                (trial, month_start.date(), trial, last_month.date()))

    assert fire(url, PATH).json()["sent"] == 1
    message = smtp.messages[0]
    assert message.message["From"] == rows.SENDER
    assert message.sender == "reminders@ascendos.test"
    text, html = message.part("plain"), message.part("html")
    for part in (text, html):
        assert "3 of your 50 generations" in part and "47 remain" in part
        assert f"{ends:%d %B %Y}" in part
    link = next(word for word in text.split() if "/unsubscribe?token=" in word)
    assert link.startswith("https://app.ascendos.test/unsubscribe?token=")
    assert verify_unsubscribe_token(link.split("token=", 1)[1]) == user_id
    assert link in html and link in message.message["List-Unsubscribe"]


def test_trial_end_is_only_mentioned_when_it_is_within_seven_days(url, smtp, sql):
    far = rows.org(sql, "TRIAL", trial_ends_at=rows.now() + timedelta(days=8))
    rows.user(sql, far)
    fire(url, PATH)
    assert "trial ends" not in smtp.messages[0].part("plain")


def test_rerun_and_double_delivery_send_nothing_twice(url, smtp, sql):
    team = rows.org(sql, "TEAM")
    users = [rows.user(sql, team) for _ in range(3)]
    first = fire(url, PATH).json()
    assert (first["sent"], first["skipped"]) == (3, 0)
    second = fire(url, PATH).json()
    third = httpx.post(f"{url}{PATH}?secret={SECRET}", timeout=30).json()
    for again in (second, third):
        assert (again["sent"], again["skipped"], again["failed"], again["complete"]) == (0, 3, 0, True)
    assert sorted(m.recipients[0] for m in smtp.messages) == sorted(f"{u}@example.test" for u in users)


def test_two_concurrent_runs_send_each_reminder_once(url, smtp, sql):
    team = rows.org(sql, "TEAM")
    users = [rows.user(sql, team) for _ in range(4)]
    smtp.hold = threading.Event()
    results = []
    first = threading.Thread(target=lambda: results.append(fire(url, PATH).json()))
    first.start()
    try:
        assert smtp.data_started.wait(10), "the first run never reached the SMTP server"
        second = fire(url, PATH).json()  # arrives while the first is mid-send
        assert second == {"job": "weekly-reminders", "skipped": "already running"}
    finally:
        smtp.hold.set()
        first.join(30)
    assert results[0]["sent"] == 4
    assert sorted(m.recipients[0] for m in smtp.messages) == sorted(f"{u}@example.test" for u in users)


def test_claims_alone_prevent_duplicates_even_without_the_lock(smtp, sql):
    """Two job bodies racing directly (as if the lock were lost) still send each user one email."""
    team = rows.org(sql, "TEAM")
    users = [rows.user(sql, team) for _ in range(30)]
    results, barrier = [], threading.Barrier(2)

    def race():
        barrier.wait()
        results.append(reminders.send_weekly_reminders(cron.Budget(60)))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r["sent"] for r in results) == 30
    assert sorted(m.recipients[0] for m in smtp.messages) == sorted(f"{u}@example.test" for u in users)


def test_a_refused_recipient_fails_alone_and_is_retried_next_run_without_duplicates(url, smtp, sql):
    team = rows.org(sql, "TEAM")
    good = [rows.user(sql, team) for _ in range(3)]
    bad = rows.user(sql, team, email="bounce@example.test")
    smtp.refuse.add("bounce@example.test")
    first = fire(url, PATH).json()
    assert (first["sent"], first["failed"], first["complete"]) == (3, 1, True)
    failed = _delivery(sql, bad)[0]
    assert failed["status"] == "failed" and "550" in failed["error"]

    smtp.refuse.clear()
    second = fire(url, PATH).json()
    assert (second["sent"], second["failed"], second["skipped"]) == (1, 0, 3)
    assert _delivery(sql, bad)[0]["status"] == "sent"
    assert len(smtp.to("bounce@example.test")) == 1
    assert all(len(smtp.to(f"{u}@example.test")) == 1 for u in good)


def test_a_malformed_address_fails_without_reaching_the_server(url, smtp, sql):
    team = rows.org(sql, "TEAM")
    rows.user(sql, team, email="victim@example.test\r\nBcc: everyone@example.test")
    fine = rows.user(sql, team)
    body = fire(url, PATH).json()
    assert (body["sent"], body["failed"]) == (1, 1)
    assert [m.recipients for m in smtp.messages] == [[f"{fine}@example.test"]]


def test_unreachable_smtp_server_stops_the_run_and_the_next_run_retries(url, smtp, sql, monkeypatch):
    from devtools.services import free_port

    team = rows.org(sql, "TEAM")
    users = [rows.user(sql, team) for _ in range(3)]
    working_url = config.settings().smtp_url
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    config.reload()
    down = fire(url, PATH).json()
    assert (down["sent"], down["failed"], down["complete"]) == (0, 1, False)

    monkeypatch.setenv("SMTP_URL", working_url)
    config.reload()
    up = fire(url, PATH).json()
    assert (up["sent"], up["failed"], up["complete"]) == (3, 0, True)
    assert all(len(smtp.to(f"{u}@example.test")) == 1 for u in users)


def test_credentials_are_never_sent_without_tls(url, smtp, sql, monkeypatch):
    rows.user(sql, rows.org(sql, "TEAM"))
    plain = config.settings().smtp_url.replace("smtp://", "smtp://mailer:hunter2-password@")
    monkeypatch.setenv("SMTP_URL", plain)
    config.reload()
    response = fire(url, PATH)
    body = response.json()
    assert (body["sent"], body["failed"], body["complete"]) == (0, 1, False)
    error = sql.execute("SELECT error FROM reminder_deliveries").fetchone()["error"]
    assert "STARTTLS" in error and "hunter2" not in error and "hunter2" not in response.text
    assert smtp.messages == []


def test_without_smtp_configured_nothing_is_sent_or_recorded(url, sql, monkeypatch):
    monkeypatch.delenv("SMTP_URL", raising=False)
    config.reload()
    rows.user(sql, rows.org(sql, "TEAM"))
    body = fire(url, PATH).json()
    assert body["email"] == "not configured" and body["sent"] == 0
    assert sql.execute("SELECT count(*) AS n FROM reminder_deliveries").fetchone()["n"] == 0
    run = sql.execute("SELECT status, counts FROM cron_runs").fetchone()
    assert run["counts"]["email"] == "not configured"


def test_time_budget_makes_a_run_incomplete_and_the_next_one_finishes(url, smtp, sql, monkeypatch):
    team = rows.org(sql, "TEAM")
    users = [rows.user(sql, team) for _ in range(3)]
    monkeypatch.setenv("CRON_TIME_BUDGET_S", "0.000001")
    config.reload()
    partial = fire(url, PATH).json()
    assert (partial["sent"], partial["complete"]) == (1, False)
    assert sql.execute("SELECT complete FROM cron_runs").fetchone()["complete"] is False

    monkeypatch.setenv("CRON_TIME_BUDGET_S", "45")
    config.reload()
    rest = fire(url, PATH).json()
    assert (rest["sent"], rest["skipped"], rest["complete"]) == (2, 1, True)
    assert all(len(smtp.to(f"{u}@example.test")) == 1 for u in users)


def test_a_new_iso_week_reminds_again(smtp, sql):
    user_id = rows.user(sql, rows.org(sql, "TEAM"))
    monday = datetime(2026, 11, 30, 9, tzinfo=timezone.utc)
    assert reminders.send_weekly_reminders(cron.Budget(60), now=monday)["sent"] == 1
    assert reminders.send_weekly_reminders(cron.Budget(60), now=monday + timedelta(days=6))["sent"] == 0
    assert reminders.send_weekly_reminders(cron.Budget(60), now=monday + timedelta(days=7))["sent"] == 1
    weeks = sorted(r["iso_week"] for r in _delivery(sql, user_id))
    assert weeks == ["2026-W49", "2026-W50"]


def test_iso_week_follows_iso_years():
    assert reminders.iso_week(datetime(2027, 1, 1, tzinfo=timezone.utc)) == "2026-W53"
    assert reminders.iso_week(datetime(2026, 12, 28, tzinfo=timezone.utc)) == "2026-W53"
    assert reminders.iso_week(datetime(2024, 12, 30, tzinfo=timezone.utc)) == "2025-W01"
