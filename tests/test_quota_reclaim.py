"""Issue 11 §1: a reservation that is never settled (its function was killed) is reclaimed after
RESERVATION_TIMEOUT_S, lazily in the org's next reserve and by the purge cron; a settle that
fails is retried on a fresh connection. Invariant: used == succeeded + pending younger than
the timeout, for every org and month."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from devtools.services import ROOT
from lib import config, db
from lib.auth import Identity
from lib.generation import quota
from lib.jobs import cron, reminders
from tests.support import crons as rows
from tests.support.crons import fire

ALICE = Identity("user_alice", "org_reclaim", "alice@example.test", "MEMBER")
_SUCCESS = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 3, "output_tokens": 5,
            "cost_usd": 0, "price_version": "test", "latency_ms": 5, "fallback": False,
            "fallback_reason": None, "primary_outcome": "succeeded", "attempts": Jsonb([])}

# A function process that reserves one unit, says so, and hangs mid-generation until killed.
_RESERVE_AND_HANG = """
import sys, time
from lib.auth import Identity
from lib.generation import quota
quota.reserve(Identity(*[arg or None for arg in sys.argv[1:5]]))
print("reserved", flush=True)
time.sleep(600)
"""


def _kill_mid_generation(identity: Identity, n: int) -> None:
    """Start `n` processes that each reserve for `identity`, and SIGKILL each once reserved."""
    procs = [subprocess.Popen([sys.executable, "-c", _RESERVE_AND_HANG, identity.user_id,
                               identity.org_external_id or "", identity.email or "", identity.role],
                              cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "reserved"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert all(proc.returncode == -signal.SIGKILL for proc in procs)


def _invariant_violations(sql, timeout_s: float) -> list[dict]:
    """Every (org, month) where used != succeeded + pending younger than the timeout."""
    return sql.execute("""
        WITH per AS (
            SELECT organization_id,
                   date_trunc('month', created_at AT TIME ZONE 'UTC')::date AS month,
                   count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                   count(*) FILTER (WHERE status = 'pending'
                                    AND created_at >= now() - make_interval(secs => %s)) AS young
            FROM generations GROUP BY 1, 2)
        SELECT coalesce(u.organization_id, per.organization_id) AS org,
               coalesce(u.month, per.month) AS month, coalesce(u.used, 0) AS used,
               coalesce(per.succeeded, 0) AS succeeded, coalesce(per.young, 0) AS young
        FROM generation_usage u FULL JOIN per USING (organization_id, month)
        WHERE coalesce(u.used, 0) <> coalesce(per.succeeded, 0) + coalesce(per.young, 0)""",
        (timeout_s,)).fetchall()


def _statuses(sql) -> dict:
    return {r["status"]: r["n"] for r in sql.execute(
        "SELECT status, count(*) AS n FROM generations GROUP BY status").fetchall()}


@pytest.mark.pure
def test_default_timeout_is_generate_max_duration_plus_a_margin():
    functions = json.loads((ROOT / "vercel.json").read_text())["functions"]
    max_duration = functions["api/generate.py"]["maxDuration"]
    default = float(config.BY_NAME["RESERVATION_TIMEOUT_S"].default or 0)
    assert default >= max_duration + 15  # a settle retry may still land up to maxDuration
    assert config.settings().reservation_timeout_s == default


def test_five_killed_functions_then_the_next_request_succeeds_after_the_timeout(stack, sql):
    stack.configure(QUOTA_TRIAL="5")
    org = Identity("user_1", "org_1", "user_1@example.com", "MEMBER")
    _kill_mid_generation(org, 5)
    assert _statuses(sql) == {"pending": 5}
    assert sql.execute("SELECT used FROM generation_usage").fetchone()["used"] == 5
    refused = stack.post()  # within the timeout the units are still reserved
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "quota_exceeded"

    stack.configure(RESERVATION_TIMEOUT_S="1")
    time.sleep(1.2)  # past RESERVATION_TIMEOUT_S: the 5 reservations are stale
    response = stack.post()
    assert response.status_code == 200, response.text
    assert response.json()["quota"]["used"] == 1
    assert _statuses(sql) == {"abandoned": 5, "succeeded": 1}
    assert sql.execute("SELECT used FROM generation_usage").fetchone()["used"] == 1
    assert _invariant_violations(sql, 1) == []
    for _ in range(4):
        assert stack.post().status_code == 200
    assert stack.post().status_code == 402  # the limit still holds after the reclaim


def test_young_reservations_are_not_reclaimed(monkeypatch, sql):
    monkeypatch.setenv("QUOTA_TRIAL", "2")
    config.reload()
    quota.reserve(ALICE)
    quota.reserve(ALICE)
    with pytest.raises(quota.QuotaExceeded):
        quota.reserve(ALICE)
    assert _statuses(sql) == {"pending": 2} and quota.sweep_abandoned() == 0


def test_reclaim_when_still_full_gives_units_back_without_reserving(monkeypatch, sql):
    """A lowered limit: 3 used (2 stale) of a limit now 1 -> 1 used, refused, nothing pending."""
    monkeypatch.setenv("QUOTA_TRIAL", "3")
    config.reload()
    first = quota.reserve(ALICE)
    quota.record_success(first, _SUCCESS)
    quota.reserve(ALICE)
    quota.reserve(ALICE)
    sql.execute("UPDATE generations SET created_at = now() - interval '1 hour' "
                "WHERE status = 'pending'")
    monkeypatch.setenv("QUOTA_TRIAL", "1")
    config.reload()
    with pytest.raises(quota.QuotaExceeded):
        quota.reserve(ALICE)
    assert _statuses(sql) == {"succeeded": 1, "abandoned": 2}
    assert sql.execute("SELECT used FROM generation_usage").fetchone()["used"] == 1
    assert _invariant_violations(sql, settings_timeout()) == []


def settings_timeout() -> float:
    return config.settings().reservation_timeout_s


def test_purge_cron_sweeps_every_org_and_month(serve, cron_secret, sql, monkeypatch):
    monkeypatch.setenv("RESERVATION_TIMEOUT_S", "1")
    config.reload()
    bob = Identity("user_bob", "org_other", None, "MEMBER")
    for identity in (ALICE, ALICE, bob):
        quota.reserve(identity)
    # One of Alice's reservations is from last month (its counter row is last month's).
    sql.execute("""
        WITH moved AS (
            UPDATE generations SET created_at = date_trunc('month', now()) - interval '1 day'
            WHERE id = (SELECT id FROM generations WHERE user_id = 'user_alice' LIMIT 1)
            RETURNING organization_id)
        INSERT INTO generation_usage (organization_id, month, used, quota_limit)
        SELECT organization_id, (date_trunc('month', now() AT TIME ZONE 'UTC')
                                 - interval '1 month')::date, 1, 50
        FROM moved""")
    sql.execute("UPDATE generation_usage SET used = used - 1 WHERE month = "
                "date_trunc('month', now() AT TIME ZONE 'UTC')::date AND organization_id = "
                "(SELECT organization_id FROM users WHERE id = 'user_alice')")
    assert _invariant_violations(sql, 10**8) == []  # counting every pending row as live
    time.sleep(1.2)
    assert len(_invariant_violations(sql, 1)) == 3  # both of Alice's months and Bob's
    body = fire(serve("api/cron/purge.py"), "/api/cron/purge").json()
    assert body["reclaimed"] == 3
    assert _statuses(sql) == {"abandoned": 3}
    assert _invariant_violations(sql, 1) == []
    assert [r["used"] for r in sql.execute("SELECT used FROM generation_usage").fetchall()] == [0, 0, 0]
    assert fire(serve("api/cron/purge.py"), "/api/cron/purge").json()["reclaimed"] == 0


def test_reminder_counts_only_live_reservations(smtp, sql, monkeypatch):
    monkeypatch.setenv("QUOTA_TRIAL", "5")
    config.reload()
    _kill_mid_generation(ALICE, 3)
    monkeypatch.setenv("RESERVATION_TIMEOUT_S", "1")
    config.reload()
    reservation = quota.reserve(ALICE)
    quota.record_success(reservation, _SUCCESS)
    org = str(reservation.organization_id)
    rows.user(sql, org)  # an inactive teammate, who gets this week's reminder
    time.sleep(1.2)  # the 3 killed reservations are now stale, but nothing has reclaimed them yet
    assert _statuses(sql) == {"pending": 3, "succeeded": 1}
    assert reminders.send_weekly_reminders(cron.Budget(60))["sent"] == 1
    text = smtp.messages[0].part("plain")
    assert "used 1 of your 5 generations" in text, text


def test_a_failed_settle_is_retried_on_a_fresh_connection(database_url, sql):
    """The settle's connection dies mid-statement (terminated while it waits on a row lock):
    the success is still recorded, on a new connection."""
    reservation = quota.reserve(ALICE)
    db.close_all()  # the settle takes a brand-new connection: not a stale pooled one
    errors: list[BaseException] = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM generations WHERE id = %s FOR UPDATE",
                        (reservation.generation_id,))

        def settle():
            try:
                quota.record_success(reservation, _SUCCESS)
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                errors.append(exc)
        thread = threading.Thread(target=settle)
        thread.start()
        pid = None
        for _ in range(200):
            found = sql.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                "'ascendos' AND wait_event_type = 'Lock' "
                                "AND datname = current_database()").fetchone()
            if found:
                pid = found["pid"]
                break
            time.sleep(0.02)
        assert pid is not None
        sql.execute("SELECT pg_terminate_backend(%s)", (pid,))
        blocker.rollback()
    thread.join(10)
    assert errors == []
    row = sql.execute("SELECT status, output_tokens FROM generations").fetchone()
    assert row == {"status": "succeeded", "output_tokens": 5}
    assert _invariant_violations(sql, 3600) == []


def test_invariant_holds_under_concurrent_reserves_settles_and_reclaims(monkeypatch, sql):
    monkeypatch.setenv("QUOTA_TRIAL", "14")
    config.reload()
    for _ in range(6):
        quota.reserve(ALICE)  # left pending: "killed", and backdated past the timeout
    sql.execute("UPDATE generations SET created_at = now() - interval '1 hour'")
    outcomes: list[str] = []

    def worker(i: int):
        try:
            r = quota.reserve(ALICE)
        except quota.QuotaExceeded:
            outcomes.append("refused")
            return
        if i % 3 == 0:
            quota.release(r, {**_SUCCESS, "error_class": "X", "primary_outcome": "failed"})
            outcomes.append("failed")
        elif i % 3 == 1:
            quota.record_success(r, _SUCCESS)
            outcomes.append("succeeded")
        else:
            outcomes.append("pending")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    sweeper = threading.Thread(target=quota.sweep_abandoned)
    for t in threads + [sweeper]:
        t.start()
    for t in threads + [sweeper]:
        t.join(30)
    assert _statuses(sql)["abandoned"] == 6 and len(outcomes) == 12
    assert outcomes.count("refused") == 0  # without the reclaim only 14 - 6 = 8 would fit
    assert _invariant_violations(sql, settings_timeout()) == []
