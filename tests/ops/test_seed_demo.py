"""`seed-demo`: realistic local data the dashboard shows, replaceable, never on a remote DB."""

from datetime import datetime, timezone

import psycopg

from lib import monitoring
from ops.cli import main
from tests.support.cli import run_cli


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def test_seed_fills_every_dashboard_section(app_env, redis_direct, capsys):
    assert main(["seed-demo", "--orgs", "30", "--generations", "6000", "--days", "90"]) == 0
    assert "seeded 30 organizations" in capsys.readouterr().out
    payload = monitoring.dashboard()
    assert payload["organizations"]["total"] == 30
    assert min(payload["organizations"]["by_plan"].values()) > 0
    assert sum(d["count"] for d in payload["generations"]["daily"]) > 0
    assert sum(w["count"] for w in payload["generations"]["weekly"]) > 0
    assert payload["tokens"]["by_model"] and payload["llm"]["24h"]["requests"] > 0
    assert payload["blocked_ips"]["count"] == len(redis_direct.keys("blocked:ip:*")) > 0
    assert all(c["started_at"] for c in payload["crons"])
    url = app_env["DATABASE_URL"]
    assert _count(url, "SELECT count(*) FROM usage_daily") > 0  # retention already "purged" some


def test_history_is_the_raw_rows_plus_the_rollup(app_env):
    assert main(["seed-demo", "--orgs", "20", "--generations", "4000", "--days", "60"]) == 0
    weekly = sum(w["count"] for w in monitoring.dashboard()["generations"]["weekly"])
    start = monitoring.Window(datetime.now(timezone.utc), 14).weekly_start.isoformat()
    url = app_env["DATABASE_URL"]
    expected = _count(url, "SELECT count(*) FROM generations WHERE status <> 'pending' AND"
                           f" created_at >= '{start}'::timestamp AT TIME ZONE 'UTC'") + \
        _count(url, f"SELECT coalesce(sum(requests), 0) FROM usage_daily WHERE day >= '{start}'")
    assert weekly == expected


def test_seeding_twice_replaces_the_demo_data_and_keeps_other_rows(app_env, capsys):
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("INSERT INTO organizations (external_id) VALUES ('org_real')")
    assert main(["seed-demo", "--orgs", "5", "--generations", "100"]) == 0
    assert main(["seed-demo", "--orgs", "7", "--generations", "100"]) == 0
    assert "replaced 5 demo organizations" in capsys.readouterr().out
    url = app_env["DATABASE_URL"]
    assert _count(url, "SELECT count(*) FROM organizations") == 8
    assert main(["seed-demo", "--remove"]) == 0
    assert _count(url, "SELECT count(*) FROM organizations") == 1
    assert _count(url, "SELECT count(*) FROM cron_runs") == 0


def test_a_remote_or_production_database_is_refused():
    remote = run_cli("seed-demo", env={"DATABASE_URL": "postgresql://u:p@db.example.com/prod"})
    assert remote.returncode == 1 and "refusing" in remote.stderr
    production = run_cli("seed-demo", env={"VERCEL_ENV": "production"})
    assert production.returncode == 1 and "refusing" in production.stderr
