"""`block-ip`, `unblock-ip`, `blocked` against the real Redis and Postgres."""

import json

import psycopg
import pytest

from ops.cli import main
from tests.support.cli import run_cli


def test_block_ip_sets_the_runbook_key_with_its_ttl_and_records_why(app_env, redis_direct, capsys):
    assert main(["block-ip", "203.0.113.7", "--hours", "2", "--reason", "credential stuffing"]) == 0
    assert "blocked 203.0.113.7 for 2h00m" in capsys.readouterr().out
    assert redis_direct.get("blocked:ip:203.0.113.7") == "true"
    assert 7190 <= redis_direct.ttl("blocked:ip:203.0.113.7") <= 7200
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT reason, source FROM ip_blocks WHERE ip = '203.0.113.7'").fetchone()
    assert row == ("credential stuffing", "manual")


def test_default_block_is_24_hours_and_ipv6_blocks_its_64(redis_direct):
    assert main(["block-ip", "2001:DB8:0::1"]) == 0
    assert 86390 <= redis_direct.ttl("blocked:ip:2001:db8::/64") <= 86400


def test_blocked_lists_ttl_and_reason_and_unblock_removes(redis_direct, capsys):
    main(["block-ip", "198.51.100.4", "--hours", "1", "--reason", "scraper"])
    redis_direct.setex("blocked:ip:192.0.2.9", 600, "true")  # the runbook's curl: no record
    capsys.readouterr()
    assert main(["blocked"]) == 0
    table = capsys.readouterr().out
    line = next(line for line in table.splitlines() if line.startswith("198.51.100.4"))
    assert "scraper" in line and "manual" in line and ("0h59m" in line or "1h00m" in line)
    assert "192.0.2.9" in table
    assert main(["blocked", "--json"]) == 0
    listed = {entry["ip"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["198.51.100.4"]["reason"] == "scraper" and listed["192.0.2.9"]["reason"] is None
    assert main(["unblock-ip", "198.51.100.4"]) == 0
    assert redis_direct.exists("blocked:ip:198.51.100.4") == 0
    capsys.readouterr()
    assert main(["unblock-ip", "198.51.100.4"]) == 0  # idempotent
    assert "was not blocked" in capsys.readouterr().out


def test_no_blocked_ips_says_so(capsys):
    assert main(["blocked"]) == 0
    assert "no blocked IPs" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["block-ip", "1.2.3"], ["block-ip", "evil.example"],
                                  ["block-ip", "1.2.3.4", "--hours", "0"],
                                  ["block-ip", "1.2.3.4", "--hours", "x"],
                                  ["unblock-ip", "::g"], ["blocked", "--limit", "0"]])
def test_bad_arguments_are_usage_errors(args, redis_direct):
    result = run_cli(*args)
    assert result.returncode == 2 and "error:" in result.stderr
    assert redis_direct.keys("blocked:ip:*") == []


def test_redis_down_fails_with_exit_1(monkeypatch):
    result = run_cli("block-ip", "203.0.113.8", env={"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9"})
    assert result.returncode == 1 and "RedisUnavailable" in result.stderr
