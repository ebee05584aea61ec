"""Purge conservation in the chaos run (bench.chaos): a known history of generations, some
past their plan's retention and some not, that the purge cron works through while backends
are killed under it; afterwards every row is either still there or rolled up, exactly once.

The history belongs to organizations of its own (`org_purge_*`, no traffic), each with rows
of every plan (`generations.plan`, the plan in force when a row was created, decides its
retention): for each plan, rows one to twenty days past its RETENTION_DAYS_* and rows one
to twenty days short of it (so a TEAM row 170 days old is kept while TRIAL rows 31 days old
go). Statuses succeeded, failed and abandoned (never pending, so the reservation sweep
leaves the rows alone), three providers (one of them missing, rolled up as ''), tokens and
costs varying per row, and `usage_daily` rows already present for some of the days, so the
rollup's ON CONFLICT path adds to them. PURGE_BATCH_SIZE is small, so the purge needs many
batches and the killed backends land in the middle of some.
"""

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.rows import dict_row

from lib.config import PLANS

ORGS = 3
EXPIRED_PER_PLAN, KEPT_PER_PLAN = 2000, 500
BATCH_SIZE = 100  # PURGE_BATCH_SIZE for the run

_SEED = """
INSERT INTO generations (organization_id, status, provider, model, input_tokens, output_tokens,
                         cost_usd, plan, created_at, completed_at)
SELECT %(org)s, (ARRAY['succeeded', 'failed', 'abandoned'])[1 + i %% 3],
       (ARRAY['openai', 'anthropic', NULL])[1 + (i / 3) %% 3],
       (ARRAY['gpt-4o-mini', 'claude-3-5-haiku', NULL])[1 + (i / 3) %% 3],
       (i * 37) %% 900, (i * 53) %% 400, ((i * 7919) %% 10000) / 1000000.0, %(plan)s,
       %(now)s - make_interval(days => %(days_from)s + i %% 20, secs => (i * 631) %% 80000),
       %(now)s
FROM generate_series(1, %(n)s) AS i
"""
# Earlier rollups on some of the days the expired rows fall on (ON CONFLICT adds to them).
_EARLIER_ROLLUP = """
INSERT INTO usage_daily (day, organization_id, provider, model, requests, failed, input_tokens,
                         output_tokens, cost_usd)
SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date, organization_id, coalesce(provider, ''),
       coalesce(model, ''), 7, 2, 1000, 500, 0.25
FROM generations
WHERE organization_id = %(org)s AND created_at < %(now)s - make_interval(days => 31)
  AND extract(day FROM created_at AT TIME ZONE 'UTC')::int %% 2 = 0
ON CONFLICT DO NOTHING
"""

_BY_KEY = """
SELECT organization_id, (created_at AT TIME ZONE 'UTC')::date AS day,
       coalesce(provider, '') AS provider, coalesce(model, '') AS model,
       count(*) FILTER (WHERE status <> 'pending') AS requests,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) AS rows
FROM generations WHERE organization_id = ANY(%(orgs)s) GROUP BY 1, 2, 3, 4
"""
_ROLLUP = """
SELECT organization_id, day, provider, model, requests, failed, input_tokens, output_tokens,
       cost_usd
FROM usage_daily WHERE organization_id = ANY(%(orgs)s)
"""
SUMS = ("requests", "failed", "input_tokens", "output_tokens", "cost_usd")


def organizations() -> list[tuple[uuid.UUID, str]]:
    return [(uuid.UUID(int=0x9E26E * 1000 + i), f"org_purge_{i}") for i in range(ORGS)]


def seed(url: str, retention_days: dict[str, int], expired_per_plan: int = EXPIRED_PER_PLAN,
         kept_per_plan: int = KEPT_PER_PLAN) -> dict:
    """Write the history; returns what is expected of it: {org id: (rows, rows to keep)}."""
    now = datetime.now(timezone.utc)
    expected = {}
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for org_id, external_id in organizations():
            conn.execute("INSERT INTO organizations (id, external_id, plan) VALUES (%s, %s, 'AGENCY')",
                         (org_id, external_id))
            for plan in PLANS:
                keep = retention_days[plan]
                conn.execute(_SEED, {"org": org_id, "plan": plan, "now": now,
                                     "days_from": keep + 1, "n": expired_per_plan})
                conn.execute(_SEED, {"org": org_id, "plan": plan, "now": now,
                                     "days_from": max(1, keep - 21), "n": kept_per_plan})
            conn.execute(_EARLIER_ROLLUP, {"org": org_id, "now": now})
            expected[org_id] = (len(PLANS) * (expired_per_plan + kept_per_plan),
                                len(PLANS) * kept_per_plan)
    return expected


def snapshot(url: str) -> dict:
    """{"rows": {key: aggregates}, "rollup": {key: sums}} for the seeded organizations, keyed
    by (organization, UTC day, provider, model) as usage_daily is."""
    orgs = [org_id for org_id, _ in organizations()]
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        rows = {_key(r): r for r in conn.execute(_BY_KEY, {"orgs": orgs}).fetchall()}
        rollup = {_key(r): r for r in conn.execute(_ROLLUP, {"orgs": orgs}).fetchall()}
    return {"rows": rows, "rollup": rollup}


def _key(row: dict) -> tuple:
    return row["organization_id"], row["day"], row["provider"], row["model"]


def _total(table: dict, org, column: str):
    return sum(row[column] for key, row in table.items() if key[0] == org)


def check(url: str, before: dict, expected: dict, retention_days: dict[str, int]) -> list[tuple[str, str, bool]]:
    """The conservation rows of the invariant table."""
    after = snapshot(url)
    now = datetime.now(timezone.utc)
    with psycopg.connect(url, autocommit=True) as conn:
        left_expired = sum(conn.execute(
            "SELECT count(*) FROM generations WHERE organization_id = ANY(%s) AND plan = %s "
            "AND created_at < %s", ([o for o, _ in organizations()], plan,
                                    now - timedelta(days=retention_days[plan]))).fetchone()[0]
            for plan in PLANS)
    # deleted + kept == before, per organization; `requests` of the rollup counts the deleted
    # rows (none of them pending), so this is the rows' conservation measured on both sides.
    unbalanced, kept_wrong, totals = [], [], [0, 0, 0]
    for org, (seeded, keep) in expected.items():
        rows_before = _total(before["rows"], org, "rows")
        kept = _total(after["rows"], org, "rows")
        deleted = _total(after["rollup"], org, "requests") - _total(before["rollup"], org, "requests")
        totals = [totals[0] + rows_before, totals[1] + deleted, totals[2] + kept]
        if rows_before != seeded or deleted + kept != rows_before:
            unbalanced.append(f"{org}: {rows_before} before, {deleted} rolled up + {kept} kept")
        if kept != keep:
            kept_wrong.append(f"{org}: kept {kept}, expected {keep}")
    # per (organization, day, provider, model): what the rollup gained is what the rows lost
    mismatched = []
    for key in set(before["rows"]) | set(before["rollup"]) | set(after["rows"]) | set(after["rollup"]):
        for column in SUMS:
            lost = before["rows"].get(key, {}).get(column, 0) - after["rows"].get(key, {}).get(column, 0)
            gained = after["rollup"].get(key, {}).get(column, 0) - before["rollup"].get(key, {}).get(column, 0)
            if lost != gained:
                mismatched.append(f"{key[1]} {key[2] or '-'} {column}: rows lost {lost}, rollup gained {gained}")
    days = len({key[:2] for key in before["rows"]})
    return [
        ("purge conservation (deleted + kept = before)",
         "; ".join(unbalanced[:3]) or f"{totals[0]} = {totals[1]} + {totals[2]}", not unbalanced),
        ("purge deleted exactly the expired rows",
         "; ".join([f"{left_expired} expired left, kept {totals[2]}", *kept_wrong[:3]]),
         left_expired == 0 and not kept_wrong),
        ("rollup sums equal the deleted rows'",
         "; ".join([f"{len(mismatched)} mismatches over {days} org-days", *mismatched[:3]]),
         not mismatched),
    ]
