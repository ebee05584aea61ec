"""Rows for the monitoring tests, written with plain SQL (what generate and the crons write),
and the fixtures that hold them: `conn` (autocommit, on the test database) and `org`."""

import itertools
from datetime import date, datetime

import psycopg
import pytest

_ids = itertools.count(1)


@pytest.fixture
def conn(app_env):
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as connection:
        yield connection


@pytest.fixture
def org(conn):
    """An active TEAM organization's id."""
    return organization(conn, "TEAM", "active")


def organization(conn, plan: str = "TEAM", status: str | None = None,
                 trial_ends_at: datetime | None = None) -> str:
    row = conn.execute(
        "INSERT INTO organizations (external_id, plan, subscription_status, trial_ends_at)"
        " VALUES (%s, %s, %s, %s) RETURNING id::text",
        (f"org_test_{next(_ids)}", plan, status, trial_ends_at)).fetchone()
    return row[0]


def generations(conn, org_id: str, at: datetime, count: int = 1, *, status: str = "succeeded",
                provider: str | None = "openai", model: str | None = "gpt-4o-mini",
                input_tokens: int = 10, output_tokens: int = 20, cost_usd: float = 0.001,
                latency_ms: int | None = 500, fallback: bool = False,
                fallback_reason: str | None = None) -> None:
    """`count` identical generations rows created at `at`. As generate records them, a
    fallback row carries why OpenAI was not the answer (`server_error` unless given)."""
    if fallback and fallback_reason is None:
        fallback_reason = "server_error"
    conn.execute(
        "INSERT INTO generations (organization_id, status, provider, model, input_tokens,"
        " output_tokens, cost_usd, latency_ms, fallback, fallback_reason, created_at)"
        " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM generate_series(1, %s)",
        (org_id, status, provider, model, input_tokens, output_tokens, cost_usd, latency_ms,
         fallback, fallback_reason, at, count))


def rollup(conn, day: date, org_id: str, requests: int, failed: int = 0, *,
           provider: str = "openai", model: str = "gpt-4o-mini", input_tokens: int = 0,
           output_tokens: int = 0, cost_usd: float = 0) -> None:
    """A usage_daily row, as the purge writes it before deleting the rows it sums."""
    conn.execute(
        "INSERT INTO usage_daily (day, organization_id, provider, model, requests, failed,"
        " input_tokens, output_tokens, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (day, org_id, provider, model, requests, failed, input_tokens, output_tokens, cost_usd))


def purge_day(conn, org_id: str, day: date) -> None:
    """Do what the purge does to one org's day: roll its rows up, then delete them."""
    with conn.transaction():
        conn.execute(
            """INSERT INTO usage_daily (day, organization_id, provider, model, requests, failed,
                                        input_tokens, output_tokens, cost_usd)
               SELECT %(day)s, organization_id, coalesce(provider, ''), coalesce(model, ''),
                      count(*), count(*) FILTER (WHERE status = 'failed'), sum(input_tokens),
                      sum(output_tokens), sum(cost_usd)
               FROM generations
               WHERE organization_id = %(org)s AND status <> 'pending'
                 AND (created_at AT TIME ZONE 'UTC')::date = %(day)s
               GROUP BY organization_id, coalesce(provider, ''), coalesce(model, '')""",
            {"day": day, "org": org_id})
        conn.execute("DELETE FROM generations WHERE organization_id = %(org)s"
                     " AND (created_at AT TIME ZONE 'UTC')::date = %(day)s",
                     {"day": day, "org": org_id})


def ip_block(conn, ip: str, created_at: datetime, reason: str = "test", source: str = "manual",
             hours: int = 24) -> None:
    conn.execute("INSERT INTO ip_blocks (ip, reason, source, created_at, expires_at)"
                 " VALUES (%s, %s, %s, %s, %s + make_interval(hours => %s))",
                 (ip, reason, source, created_at, created_at, hours))


def cron_run(conn, job: str, started_at: datetime, status: str = "succeeded",
             counts: str = "{}", error: str | None = None) -> None:
    conn.execute("INSERT INTO cron_runs (job, started_at, finished_at, status, complete, counts,"
                 " error) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
                 (job, started_at, started_at, status, status == "succeeded", counts, error))
