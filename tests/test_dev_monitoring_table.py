"""The monitoring table fits 80 columns, with the crons as rows (started, status, duration,
counts) rather than raw JSON."""

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from ops.cli import main
from tests.support import monitoring_data as data


@pytest.fixture
def busy(app_env, redis_direct):
    now = datetime.now(timezone.utc)
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        org = data.organization(conn, "TEAM", "active")
        data.generations(conn, org, now - timedelta(minutes=3), 40, model="gpt-4o-mini-2024-07-18-long-name")
        data.ip_block(conn, "2001:db8:ffff:ffff:ffff:ffff:ffff:1234", now - timedelta(minutes=5),
                      reason="a very long reason " * 8)
        data.cron_run(conn, "weekly-reminders", now - timedelta(hours=1), counts=json.dumps(
            {"sent": 1234, "skipped": 56, "failed": 7, "complete": True, "batches": 3,
             "longest_batch_s": 0.25, "job": "weekly-reminders"}))
        data.cron_run(conn, "purge", now - timedelta(hours=3), counts=json.dumps(
            {"dry_run": False, "deleted": {"generations": 120000, "usage_daily": 3000,
                                           "stripe_events": 44, "ip_blocks": 9, "cron_runs": 2},
             "complete": True}))
        conn.execute("UPDATE cron_runs SET finished_at = started_at + interval '83 seconds' "
                     "WHERE job = 'purge'")
    redis_direct.setex("blocked:ip:2001:db8:ffff:ffff:ffff:ffff:ffff:1234", 3600, "true")


def test_every_line_fits_80_columns_and_crons_are_rows(busy, capsys):
    main(["monitoring", "--color", "never"])
    out = capsys.readouterr().out
    too_wide = [line for line in out.splitlines() if len(line) > 80]
    assert too_wide == []
    crons = out[out.index("CRONS"):].splitlines()
    assert crons[0].split()[:5] == ["CRONS", "(last", "run)", "started", "status"]
    purge = next(line for line in crons if line.strip().startswith("purge"))
    reminders = next(line for line in crons if line.strip().startswith("weekly-reminders"))
    assert "succeeded" in purge and "1m23s" in purge
    rest = crons[crons.index(purge):]
    assert "deleted.generations 120000" in "\n".join(rest[:4])  # counts wrap under their column
    assert "sent 1234 · failed 7" in reminders and "0.0 s" in reminders
    assert "{" not in "\n".join(crons) and '"' not in "\n".join(crons)
