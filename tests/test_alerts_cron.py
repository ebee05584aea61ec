"""The alerts cron (/api/cron/alerts, lib.jobs.alerts): a notice on each change of level, to a
real webhook receiver, the in-process SMTP server and the local Sentry receiver; nothing
while a level holds but a reminder while critical; retries; one notice under concurrency."""

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from croniter import croniter

from devtools.serve import LocalServer, SentryReceiver
from lib import config, monitoring
from lib.jobs import SCHEDULES, cron
from lib.jobs import alerts as job
from lib.jobs.schedule import InvalidSchedule, Schedule
from ops import cli
from tests.support import monitoring_data as data
from tests.support.crons import fire

ALERT_EMAIL = "oncall@ascendos.test"
PATH = "/api/cron/alerts"


class Webhook:
    """A Slack-style incoming webhook: keeps every JSON body; answers 500 while `failing`."""

    def __init__(self):
        self.received: list[dict] = []
        self.failing = False
        self.delay_s = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(hook.delay_s)
                if hook.failing:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                hook.received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = LocalServer(Handler)

    def about(self, metric: str) -> list[dict]:
        return [notice for notice in self.received if notice["metric"] == metric]


@pytest.fixture
def webhook(monkeypatch, smtp):
    hook = Webhook()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.server.url + "/hooks/T000/B000/secret-path")
    monkeypatch.setenv("ALERT_EMAIL", ALERT_EMAIL)
    config.reload()
    yield hook
    hook.server.close()


@pytest.fixture
def url(serve, webhook):
    return serve("api/cron/alerts.py")


def run(url: str) -> dict:
    response = fire(url, PATH)
    assert response.status_code == 200, response.text
    return response.json()


def failing_traffic(conn, org, requests: int = 100, failed: int = 6) -> None:
    """`failed` of `requests` generations in the last hour failed (on the fallback provider,
    so only the error rate moves)."""
    at = datetime.now(timezone.utc) - timedelta(minutes=5)
    data.generations(conn, org, at, requests - failed, provider="anthropic")
    data.generations(conn, org, at, failed, status="failed", provider="anthropic")


def state(sql, metric: str) -> dict:
    return sql.execute("SELECT * FROM alert_state WHERE metric = %s", (metric,)).fetchone()


def test_error_rate_crossing_5_percent_sends_exactly_one_critical_notice(url, webhook, smtp,
                                                                         conn, org, sql):
    failing_traffic(conn, org)
    body = run(url)
    assert body["critical"] == ["error_rate"] and body["delivered"] == 2
    assert len(webhook.received) == 1  # nothing else is wrong: one notice in all
    notice = webhook.received[0]
    assert notice["metric"] == "error_rate" and notice["level"] == "critical"
    assert notice["value"] == 0.06 and notice["threshold"] == 0.05
    assert notice["notice"] == "critical" and notice["since"].endswith("Z")
    assert notice["dashboard_url"] == "https://app.ascendos.test/admin/monitoring"
    assert notice["text"].startswith("[CRITICAL] error_rate") and "6.0%" in notice["text"]
    mails = smtp.to(ALERT_EMAIL)
    assert len(mails) == 1 and "error_rate" in mails[0].message["Subject"]
    assert "level: critical" in mails[0].part("plain")
    row = state(sql, "error_rate")
    assert row["level"] == "critical" and row["pending"] == [] and row["notified_at"] is not None
    # Metrics the dashboard doesn't report (yet) are skipped, not recorded as ok.
    metrics = {metric for (metric,) in sql("SELECT metric FROM alert_state")}
    assert metrics == {"error_rate", "p95_latency_ms", "blocked_ips_per_hour", "openai_error_rate",
                       "provider_misconfigured", "billing_conflicts", "cron:purge",
                       "cron:weekly-reminders", "cron:reconcile-billing", "database", "redis"}


def test_a_level_that_holds_sends_nothing_until_the_renotify_time(url, webhook, smtp, conn, org,
                                                                  sql):
    failing_traffic(conn, org)
    run(url)
    assert len(webhook.received) == 1
    for _ in range(2):
        assert run(url)["notices"] == 0
    assert len(webhook.received) == 1 and len(smtp.to(ALERT_EMAIL)) == 1
    # ALERT_RENOTIFY_H (6 h by default) later, still critical: one reminder, then quiet again.
    sql.execute("UPDATE alert_state SET queued_at = queued_at - interval '6 hours 1 minute' "
                "WHERE metric = 'error_rate'")
    run(url)
    run(url)
    assert [n["notice"] for n in webhook.about("error_rate")] == ["critical", "reminder"]
    assert webhook.received[1]["text"].startswith("[CRITICAL, still] error_rate")
    assert len(smtp.to(ALERT_EMAIL)) == 2


def test_a_warning_is_not_reminded(url, webhook, conn, org, sql):
    failing_traffic(conn, org, 100, 3)
    run(url)
    sql.execute("UPDATE alert_state SET queued_at = queued_at - interval '7 days'")
    run(url)
    assert [(n["level"], n["notice"]) for n in webhook.received] == [("warning", "warning")]


def test_recovery_sends_one_ok_notice_and_escalation_one_each(url, webhook, conn, org, sql):
    failing_traffic(conn, org, 100, 3)
    run(url)  # 3%: warning
    failing_traffic(conn, org, 100, 20)
    run(url)  # 23 of 200: critical
    conn.execute("UPDATE generations SET status = 'succeeded'")
    run(url)
    run(url)
    assert [(n["level"], n["notice"]) for n in webhook.about("error_rate")] == [
        ("warning", "warning"), ("critical", "critical"), ("ok", "ok")]
    ok = webhook.received[-1]
    assert ok["text"].startswith("[OK] error_rate is back to ok") and ok["value"] == 0
    assert ok["threshold"] == 0.01
    assert state(sql, "error_rate")["level"] == "ok"


def test_a_cron_that_missed_its_schedule_alerts_critical_and_a_failed_run_warns(url, webhook,
                                                                                smtp, conn, sql):
    now = datetime.now(timezone.utc)
    data.cron_run(conn, "purge", now - timedelta(days=3))  # daily: two runs missed
    data.cron_run(conn, "weekly-reminders", now - timedelta(minutes=30), "failed",
                  error="DatabaseUnavailable")
    body = run(url)
    assert body["critical"] == ["cron:purge"] and body["warning"] == ["cron:weekly-reminders"]
    purge = webhook.about("cron:purge")
    assert len(purge) == 1 and purge[0]["level"] == "critical"
    assert "has not succeeded since its run due at" in purge[0]["text"]
    subjects = sorted(m.message["Subject"] for m in smtp.to(ALERT_EMAIL))
    assert subjects == ["[CRITICAL] cron:purge", "[WARNING] cron:weekly-reminders"]
    weekly = webhook.about("cron:weekly-reminders")
    assert len(weekly) == 1 and weekly[0]["level"] == "warning"
    assert "DatabaseUnavailable" in weekly[0]["text"]
    # The purge runs again: one ok, and nothing about the alerts cron itself.
    data.cron_run(conn, "purge", datetime.now(timezone.utc))
    run(url)
    assert [n["level"] for n in webhook.about("cron:purge")] == ["critical", "ok"]
    assert webhook.about("cron:alerts") == []


def test_a_cron_that_never_ran_alerts_only_once_it_was_due_while_watched(url, webhook, sql):
    run(url)
    assert webhook.received == []  # just deployed: nothing was due since we started watching
    sql.execute("UPDATE alert_state SET first_seen = first_seen - interval '3 days' "
                "WHERE metric = 'cron:purge'")
    run(url)
    assert [n["metric"] for n in webhook.received] == ["cron:purge"]
    assert "last success: never" in webhook.received[0]["text"]


def test_a_failing_receiver_is_retried_next_run_without_resending_the_email(url, webhook, smtp,
                                                                            conn, org, sql):
    failing_traffic(conn, org)
    webhook.failing = True
    body = run(url)  # the run itself succeeds
    assert body["failed"] == 1 and body["delivered"] == 1
    row = state(sql, "error_rate")
    assert row["pending"] == ["webhook"] and "webhook answered HTTP 500" in row["last_error"]
    assert "secret-path" not in row["last_error"]  # the URL is a credential
    assert len(smtp.to(ALERT_EMAIL)) == 1
    run(url)  # still failing: still queued, tried again
    assert state(sql, "error_rate")["attempts"] == 2
    webhook.failing = False
    run(url)
    assert [n["notice"] for n in webhook.about("error_rate")] == ["critical"]
    assert len(smtp.to(ALERT_EMAIL)) == 1
    row = state(sql, "error_rate")
    assert row["pending"] == [] and row["last_error"] is None
    run(url)
    assert len(webhook.received) == 1


def test_an_unreachable_receiver_is_recorded_and_never_fails_the_run(url, webhook, monkeypatch,
                                                                    conn, org, sql):
    from devtools.services import free_port

    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")
    config.reload()
    failing_traffic(conn, org)
    assert run(url)["failed"] == 1
    assert "webhook unreachable: ConnectError" in state(sql, "error_rate")["last_error"]


def test_concurrent_runs_send_one_notice(url, webhook, smtp, conn, org, sql):
    failing_traffic(conn, org)
    webhook.delay_s = 0.3  # keep the first run busy while the others arrive
    with_threads = [threading.Thread(target=fire, args=(url, PATH)) for _ in range(4)]
    for thread in with_threads:
        thread.start()
    for thread in with_threads:
        thread.join(30)
    assert len(webhook.received) == 1 and len(smtp.to(ALERT_EMAIL)) == 1
    statuses = sql("SELECT status FROM cron_runs WHERE job = 'alerts'")
    assert ("succeeded",) in statuses


def test_overlapping_evaluations_without_the_cron_lock_still_send_once(webhook, smtp, conn, org,
                                                                      sql):
    """The claim on alert_state, not only the cron lock, keeps a notice from going out twice
    (e.g. a run whose lock was lost overlapping the next one)."""
    failing_traffic(conn, org)
    webhook.delay_s = 0.3
    start = threading.Barrier(4)
    results = []

    def evaluate():
        start.wait()
        results.append(job.evaluate_and_notify(cron.Budget(30)))

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4
    assert len(webhook.received) == 1 and len(smtp.to(ALERT_EMAIL)) == 1
    assert sum(r["notices"] for r in results) == 1


def test_dashboard_alerts_carry_since_from_the_alerts_cron(url, webhook, conn, org, sql):
    failing_traffic(conn, org)
    assert monitoring.dashboard()["alerts"][0]["since"] is None  # not seen by the cron yet
    run(url)
    entry = monitoring.dashboard()["alerts"][0]
    since = datetime.fromisoformat(entry["since"])
    assert entry["metric"] == "error_rate" and since == state(sql, "error_rate")["since"]


def test_postgres_down_sends_one_database_notice_then_one_ok_when_back(url, webhook, monkeypatch,
                                                                       app_env, sql):
    from devtools.services import free_port

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/down")
    config.reload()
    for _ in range(3):
        assert fire(url, PATH).status_code == 503
    assert [(n["metric"], n["level"]) for n in webhook.received] == [("database", "critical")]
    monkeypatch.setenv("DATABASE_URL", app_env["DATABASE_URL"])
    config.reload()
    run(url)
    run(url)
    assert [(n["metric"], n["level"]) for n in webhook.received] == [
        ("database", "critical"), ("database", "ok")]


def test_redis_unreachable_alerts_critical(url, webhook, monkeypatch):
    from devtools.services import free_port

    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", f"http://127.0.0.1:{free_port()}")
    config.reload()
    body = run(url)
    assert "redis" in body["critical"]
    assert [n["level"] for n in webhook.about("redis")] == ["critical"]


def _sentry_items(receiver: SentryReceiver) -> list[dict]:
    items = []
    for body in receiver.raw:
        for line in body.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                items.append(item)
    return items


@pytest.fixture
def sentry(monkeypatch):
    receiver = SentryReceiver()
    monkeypatch.setenv("SENTRY_DSN", receiver.dsn)
    config.reload()
    yield receiver
    receiver.close()


def test_each_notice_reaches_sentry_as_a_message_at_its_level(sentry, url, webhook, conn, org,
                                                              sql):
    failing_traffic(conn, org)
    run(url)
    conn.execute("UPDATE generations SET status = 'succeeded'")
    run(url)
    messages = [item for item in _sentry_items(sentry) if item.get("fingerprint")]
    assert [(m["fingerprint"], m["level"]) for m in messages] == [
        (["alert", "error_rate", "critical"], "error"), (["alert", "error_rate", "ok"], "info")]
    assert messages[0]["tags"]["metric"] == "error_rate"
    assert [n["level"] for n in webhook.about("error_rate")] == ["critical", "ok"]


def test_cron_check_ins_reach_sentry_for_ok_and_failed_runs(sentry, url, cron_secret):
    run(url)
    with pytest.raises(ZeroDivisionError):
        cron.run_exclusively("purge", lambda budget: 1 / 0)
    checkins = [item for item in _sentry_items(sentry) if "check_in_id" in item]
    seen = [(c["monitor_slug"], c["status"]) for c in checkins]
    assert seen == [("alerts", "in_progress"), ("alerts", "ok"),
                    ("purge", "in_progress"), ("purge", "error")]
    assert checkins[0]["check_in_id"] == checkins[1]["check_in_id"]
    assert checkins[2]["check_in_id"] == checkins[3]["check_in_id"]
    schedules = {c["monitor_slug"]: c["monitor_config"]["schedule"] for c in checkins}
    assert schedules == {"alerts": {"type": "crontab", "value": "*/10 * * * *"},
                         "purge": {"type": "crontab", "value": "0 3 * * *"}}
    assert checkins[1]["duration"] >= 0 and checkins[1]["monitor_config"]["timezone"] == "UTC"


def test_ops_alerts_prints_the_state_and_test_reaches_every_channel(url, webhook, smtp, conn,
                                                                    org, capsys):
    failing_traffic(conn, org)
    run(url)
    assert cli.main(["alerts"]) == 4  # a critical alert, like `ops monitoring`
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.lstrip().startswith("error_rate"))
    assert "critical" in line and datetime.now(timezone.utc).strftime("%Y-%m-%d") in line
    assert cli.main(["alerts", "test"]) == 0
    out = capsys.readouterr().out
    assert "webhook: sent" in out and "email: sent" in out and "sentry: not configured" in out
    assert webhook.received[-1]["notice"] == "test" and len(smtp.to(ALERT_EMAIL)) == 2
    webhook.failing = True
    assert cli.main(["alerts", "test"]) == 1
    assert "webhook: webhook answered HTTP 500" in capsys.readouterr().out


def test_alerts_route_answers_bad_credentials_and_verbs_with_json(url):
    assert httpx.get(url + PATH, timeout=10).status_code == 401
    response = httpx.put(url + PATH, timeout=10)
    assert response.status_code == 405 and response.json()["error"]["code"]


@pytest.mark.pure
@pytest.mark.parametrize("schedule", [*SCHEDULES.values(), "0 0 1 * *", "15,45 */6 * * 1-5",
                                      "0 12 1 * 0", "30 2 29 2 *", "5-50/15 8 * 6 7"])
def test_schedule_previous_fire_agrees_with_croniter(schedule):
    start = datetime(2026, 12, 2, 5, 51, 30, tzinfo=timezone.utc)
    for hours in range(0, 24 * 40, 7):
        moment = start + timedelta(hours=hours, minutes=hours % 60)
        expected = croniter(schedule, moment + timedelta(seconds=1)).get_prev(datetime)
        assert Schedule(schedule).previous(moment) == expected, moment


@pytest.mark.pure
@pytest.mark.parametrize("schedule", ["* * * *", "60 * * * *", "a * * * *", "*/0 * * * *",
                                      "0 0 31 2 *"])
def test_schedule_refuses_what_it_cannot_read(schedule):
    with pytest.raises(InvalidSchedule):
        Schedule(schedule).previous(datetime(2026, 1, 1, tzinfo=timezone.utc))
