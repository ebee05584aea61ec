"""`python -m ops cron NAME` and the local scheduler fire crons exactly as Vercel does."""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from devtools import dev
from devtools.cron_scheduler import CronScheduler, next_runs
from lib import config
from ops import cli
from ops import cron as ops_cron
from ops import envfile
from tests.support import crons as rows
from tests.support.crons import SECRET
from devtools.services import free_port


@pytest.fixture
def purge_url(serve, cron_secret):
    return serve("api/cron/purge.py")


def _printed(out: str) -> dict:
    """The CLI's indented JSON answer (the in-process server's one-line logs share stdout)."""
    return json.loads(out[out.index("{\n"):])


def _expired_generation(sql):
    rows.generation(sql, rows.org(sql, "TRIAL"), created_at=rows.now() - timedelta(days=31))


def test_ops_cron_fires_a_get_with_the_bearer_secret_and_prints_the_answer(purge_url, sql, capsys):
    _expired_generation(sql)
    assert cli.main(["cron", "purge", "--url", purge_url]) == 0
    answer = _printed(capsys.readouterr().out)
    assert answer["job"] == "purge" and answer["deleted"]["generations"] == 1
    assert sql.execute("SELECT status FROM cron_runs").fetchone()["status"] == "succeeded"


def test_ops_cron_dry_run_deletes_nothing(purge_url, sql, capsys):
    _expired_generation(sql)
    assert cli.main(["cron", "purge", "--url", purge_url, "--dry-run"]) == 0
    assert _printed(capsys.readouterr().out)["dry_run"] is True
    assert sql.execute("SELECT count(*) AS n FROM generations").fetchone()["n"] == 1


def test_ops_cron_until_complete_fires_again_until_the_job_is_done(purge_url, sql, monkeypatch, capsys):
    monkeypatch.setenv("PURGE_BATCH_SIZE", "2")
    monkeypatch.setenv("CRON_TIME_BUDGET_S", "0.000001")
    config.reload()
    for _ in range(5):
        _expired_generation(sql)
    assert cli.main(["cron", "purge", "--url", purge_url, "--until-complete"]) == 0
    assert sql.execute("SELECT count(*) AS n FROM generations").fetchone()["n"] == 0
    assert [r["complete"] for r in sql.execute("SELECT complete FROM cron_runs ORDER BY id")] == [False, False, True]


def test_ops_cron_fails_on_an_unknown_job_or_no_server(purge_url):
    assert cli.main(["cron", "nightly-party", "--url", purge_url]) == 2
    assert cli.main(["cron", "purge", "--url", f"http://127.0.0.1:{free_port()}"]) == 1


def test_a_wrong_secret_is_refused_and_an_error_answer_exits_non_zero(purge_url, monkeypatch, tmp_path, capsys):
    assert ops_cron.fire("/api/cron/purge", purge_url, secret="wrong-" + SECRET).status_code == 401
    # the server without CRON_SECRET answers 500; the CLI (secret from .env) must exit 1
    env_file = tmp_path / ".env"
    envfile.write_env_file(env_file, {"CRON_SECRET": SECRET})
    monkeypatch.setattr(envfile, "ENV_FILE", env_file)
    monkeypatch.delenv("CRON_SECRET")
    config.reload()
    assert cli.main(["cron", "purge", "--url", purge_url]) == 1
    assert "HTTP 500" in capsys.readouterr().err


def test_ops_cron_falls_back_to_the_secret_make_dev_wrote(purge_url, monkeypatch, tmp_path):
    env_file = tmp_path / ".env"
    envfile.write_env_file(env_file, {"CRON_SECRET": SECRET})
    monkeypatch.setattr(envfile, "ENV_FILE", env_file)
    monkeypatch.delenv("CRON_SECRET")
    config.reload()
    assert ops_cron.cron_secret() == SECRET


def test_cron_names_come_from_vercel_json():
    assert set(ops_cron.cron_jobs()) == {"weekly-reminders", "purge", "reconcile-billing", "alerts"}


def test_next_runs_follow_the_vercel_json_schedules_in_utc():
    sunday = datetime(2026, 11, 29, 23, 0, tzinfo=timezone.utc)
    upcoming = next_runs(ops_cron.cron_jobs(), sunday)
    assert upcoming["purge"] == datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
    assert upcoming["weekly-reminders"] == datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    # the follow-up hours on Monday only pick up what an incomplete 09:00 run left
    monday_9 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    assert next_runs(ops_cron.cron_jobs(), monday_9)["weekly-reminders"] == monday_9 + timedelta(hours=1)


def test_local_scheduler_fires_each_job_on_its_schedule(purge_url, sql):
    every_second = {"purge": {"path": "/api/cron/purge", "schedule": "* * * * * *"}}
    scheduler = CronScheduler(purge_url, SECRET, jobs=every_second)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while len(scheduler.fired) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
        scheduler.join(5)
    assert scheduler.fired[:2] == [("purge", 200), ("purge", 200)]
    assert sql.execute("SELECT count(*) AS n FROM cron_runs WHERE status = 'succeeded'").fetchone()["n"] >= 2


def test_make_dev_generates_a_stable_cron_secret(monkeypatch, tmp_path):
    monkeypatch.setattr(dev.services, "DATA", tmp_path)
    first = dev.dev_cron_secret()
    assert len(first) >= 32 and dev.dev_cron_secret() == first
