"""`ops cron --until-complete` is a bounded loop: it stops after a run without progress and
after --max-runs, and reminders with SMTP unset are complete (nothing left to do)."""

import json
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

from lib import config
from devtools.serve import LocalServer
from tests.support import crons as rows
from tests.support.cli import run_cli


def test_reminders_without_smtp_report_skipped_and_stop_after_one_run(serve, cron_secret, sql, monkeypatch):
    monkeypatch.delenv("SMTP_URL", raising=False)
    config.reload()
    rows.user(sql, rows.org(sql, "TEAM"))
    url = serve("api/cron/weekly-reminders.py")
    result = run_cli("cron", "weekly-reminders", "--url", url, "--until-complete", timeout=30,
                     env={"SMTP_URL": ""})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert answer["skipped"] == "email not configured" and answer["complete"] is True
    assert sql.execute("SELECT count(*) AS n FROM cron_runs").fetchone()["n"] == 1


def test_until_complete_stops_after_max_runs(serve, cron_secret, sql, monkeypatch):
    monkeypatch.setenv("PURGE_BATCH_SIZE", "1")
    monkeypatch.setenv("CRON_TIME_BUDGET_S", "0.000001")
    config.reload()
    for _ in range(5):
        rows.generation(sql, rows.org(sql, "TRIAL"), created_at=rows.now() - timedelta(days=31))
    url = serve("api/cron/purge.py")
    result = run_cli("cron", "purge", "--url", url, "--until-complete", "--max-runs", "2", timeout=60)
    assert result.returncode == 1 and "still incomplete after 2 runs" in result.stderr
    assert sql.execute("SELECT count(*) AS n FROM cron_runs").fetchone()["n"] == 2
    assert sql.execute("SELECT count(*) AS n FROM generations").fetchone()["n"] == 3


def test_until_complete_stops_after_a_run_without_progress(cron_secret):
    calls = []

    class Stuck(BaseHTTPRequestHandler):
        """A cron endpoint that never gets anywhere: complete false, nothing done."""

        def log_message(self, *args):
            pass

        def do_GET(self):
            calls.append(self.headers.get("Authorization"))
            body = json.dumps({"job": "weekly-reminders", "sent": 0, "skipped": 4, "failed": 0,
                               "complete": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = LocalServer(Stuck)
    try:
        result = run_cli("cron", "weekly-reminders", "--url", server.url, "--until-complete", timeout=30)
    finally:
        server.close()
    assert result.returncode == 1 and "run 1 made no progress" in result.stderr
    assert calls == [f"Bearer {cron_secret}"]
