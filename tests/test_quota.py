"""lib.generation.quota: reservations are atomic, released at most once, and month-scoped."""

import psycopg
import pytest
from psycopg.types.json import Jsonb

from lib import config, errors
from lib.generation import quota
from lib.auth import Identity

ALICE = Identity("user_alice", "org_q", None, "MEMBER")
_FAILED = {"provider": "openai", "model": "gpt-4o-mini", "latency_ms": 5, "fallback": False,
           "fallback_reason": None, "error_class": "InternalServerError",
           "primary_outcome": "failed", "attempts": Jsonb([])}


def _used(database_url) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT coalesce(sum(used), 0) FROM generation_usage").fetchone()[0]


def test_reserve_inserts_one_pending_row_and_counts_it(database_url):
    reservation = quota.reserve(ALICE)
    assert reservation.used == 1 and reservation.limit == 50 and reservation.plan == "TRIAL"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT id, status FROM generations").fetchall() == \
            [(reservation.generation_id, "pending")]


def test_failure_releases_the_reservation_exactly_once(database_url):
    reservation = quota.reserve(ALICE)
    quota.reserve(ALICE)
    assert quota.release(reservation, _FAILED) == 1
    assert quota.release(reservation, _FAILED) == 1  # a repeat changes nothing
    assert _used(database_url) == 1


def test_zero_quota_reserves_nothing(monkeypatch, database_url):
    monkeypatch.setenv("QUOTA_TRIAL", "0")
    config.reload()
    with pytest.raises(errors.QuotaExceeded):
        quota.reserve(ALICE)
    assert _used(database_url) == 0


def test_quota_is_per_organization(monkeypatch):
    monkeypatch.setenv("QUOTA_TRIAL", "1")
    config.reload()
    quota.reserve(ALICE)
    quota.reserve(Identity("user_bob", "org_other", None, "MEMBER"))
    with pytest.raises(errors.QuotaExceeded):
        quota.reserve(Identity("user_carol", "org_q", None, "MEMBER"))


def test_quota_reports_when_it_resets():
    reservation = quota.reserve(ALICE)
    resets = reservation.quota()["resets_at"]
    assert resets.endswith("-01T00:00:00Z") and resets > reservation.month.isoformat()
