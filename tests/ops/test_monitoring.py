"""`monitoring`: the dashboard as a terminal table, computed locally or fetched with a token."""

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from lib import config
from ops.cli import main
from tests.support import monitoring_data as data
from tests.support.cli import run_cli
from tests.support.tokens import PUBLIC_PEM, mint_token


@pytest.fixture
def seeded(app_env, redis_direct):
    now = datetime.now(timezone.utc)
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        org = data.organization(conn, "TEAM", "active")
        data.organization(conn, "TRIAL", trial_ends_at=now + timedelta(days=2))
        data.generations(conn, org, now - timedelta(minutes=3), 90, model="gpt-4o", cost_usd=0.02)
        data.generations(conn, org, now - timedelta(minutes=2), 10, status="failed")  # 10% errors
        data.ip_block(conn, "203.0.113.50", now - timedelta(minutes=5), reason="abuse report")
        data.cron_run(conn, "purge", now - timedelta(hours=3), "failed", error="DatabaseUnavailable")
    redis_direct.setex("blocked:ip:203.0.113.50", 3600, "true")


@pytest.fixture
def served(serve, monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    monkeypatch.setenv("OPERATOR_ORG_IDS", "org_1")  # the token below is a platform operator's
    config.reload()
    return serve("api/admin/monitoring.py")


def test_local_table_shows_every_section_and_exits_4_on_a_critical_alert(seeded, capsys):
    assert main(["monitoring", "--color", "never"]) == 4
    out = capsys.readouterr().out
    for heading in ("ALERTS", "ORGANIZATIONS", "GENERATIONS PER DAY", "GENERATIONS PER ISO WEEK",
                    "TOKENS", "TOP MODELS BY COST", "LLM", "BLOCKED IPS", "CRONS"):
        assert heading in out
    assert "CRITICAL error_rate" in out and "10.0%" in out
    assert "openai/gpt-4o " in out and "203.0.113.50" in out and "abuse report" in out
    assert "TRIAL          1" in out and "trials ending within 7 days: 1" in out
    assert "never ran" in out  # weekly-reminders
    assert "\033[" not in out


def test_colour_marks_alerts_when_asked(seeded, capsys):
    main(["monitoring", "--color", "always"])
    assert "\033[1;31mCRITICAL" in capsys.readouterr().out


def test_no_alert_exits_0_and_says_so(app_env, capsys):
    assert main(["monitoring", "--color", "never"]) == 0
    assert "none: every metric is below its warning threshold" in capsys.readouterr().out


def test_json_output_is_the_payload(seeded):
    result = run_cli("monitoring", "--json", "--days", "3")
    payload = json.loads(result.stdout)
    assert result.returncode == 4 and len(payload["generations"]["daily"]) == 3


def test_url_mode_fetches_the_route_with_the_token(seeded, served):
    token = mint_token("user_owner", org_id="org_1", role="OWNER")
    result = run_cli("monitoring", "--url", served, "--token", token, "--color", "never")
    assert result.returncode == 4, result.stderr
    assert "CRITICAL error_rate" in result.stdout and "BLOCKED IPS  1 now" in result.stdout


def test_url_mode_reports_a_refused_token(served):
    member = mint_token("u", org_id="o", role="MEMBER")
    result = run_cli("monitoring", "--url", served, "--token", member)
    assert result.returncode == 1 and "HTTP 403 forbidden" in result.stderr


def test_url_mode_without_a_token_is_an_error(served, monkeypatch):
    monkeypatch.delenv("ASCENDOS_TOKEN", raising=False)
    result = run_cli("monitoring", "--url", served)
    assert result.returncode == 1 and "--token" in result.stderr


def test_redis_down_still_prints_the_rest(seeded, monkeypatch, capsys):
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    config.reload()
    main(["monitoring", "--color", "never"])
    out = capsys.readouterr().out
    assert "BLOCKED IPS  Redis unavailable · blocked in the last hour: 1" in out
    assert "ORGANIZATIONS  total 2" in out


def test_local_table_is_the_platform_view(seeded, capsys):
    main(["monitoring", "--color", "never"])
    assert capsys.readouterr().out.startswith("Ascendos monitoring · platform · generated ")


def test_url_mode_with_a_customer_owner_shows_only_their_organization(seeded, served):
    token = mint_token("user_customer", org_id="org_customer", role="OWNER")
    result = run_cli("monitoring", "--url", served, "--token", token, "--color", "never")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "organization org_customer" in out and "ORGANIZATION  TRIAL" in out
    assert "quota: 0 of" in out and "GENERATIONS PER DAY" in out and "LLM" in out
    for platform_only in ("ALERTS", "ORGANIZATIONS", "BLOCKED IPS", "CRONS", "203.0.113.50"):
        assert platform_only not in out
