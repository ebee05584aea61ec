"""The runbook's monitoring dashboard: what GET /api/admin/monitoring answers, in two scopes.

`dashboard(PLATFORM)` is the operators' view of every tenant (below). `organization_dashboard`
is one tenant's usage dashboard: its plan and quota, its generations per day and ISO week, its
tokens and cost by model, its LLM error and fallback rates and p95 latency. It holds nothing
about other tenants, blocked IPs or crons, and reads only that organization's rows
(`generations_org_created_idx`, and usage_daily for the days the purge rolled up).

One call runs five SQL statements and a few Redis commands on four concurrent lanes:
  1. summary: organizations by plan and subscription, trials ending, IP blocks of the last
     hour and the last run of each cron, in one statement;
  2. history: settle the rollup (`monitoring_daily`, see migration 0005), then read it plus the
     raw rows of yesterday and today, in two statements;
  3. live: requests, error rates and P95 latency over the last hour and 24 h, one statement;
  4. Redis: `SCAN blocked:ip:*` (never KEYS) for the count, then lib.ip_blocks' listing of
     up to 100 (TTLs in one pipeline, reasons in one statement).
Cost is bounded by the size of the window, not of the table: settled days come from the
rollup, so only the last two days of raw generations rows are ever aggregated per call.

Definitions: a "request" is a generations row that is not pending; every day is a UTC day;
"7d" and "30d" are the last 7 and 30 UTC days including today; "1h" and "24h" are rolling.
A settled day (ended more than 24 h ago) is computed once; later changes to its raw rows
(an org deleted, a pending row resolved days later) are not reflected.
"""

import concurrent.futures
import contextvars
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from fractions import Fraction

from lib import alerts, db, ip_blocks, redis
from lib.config import settings
from lib.billing import STATUSES as SUBSCRIPTION_STATUSES
from lib.config import PLANS
from lib.errors import ConfigError
from lib.jobs import JOBS
from lib.observability import report
from lib.utc import iso_week, timestamp

DEFAULT_DAYS = 14
MAX_DAYS = 90
WEEKS = 8
LISTED_IPS = 100
PLATFORM = "platform"  # every organization, for the operators
ORGANIZATION = "organization"  # one organization, for its OWNERs
# fallback_reason values that mean OpenAI was not tried at all (lib/llm).
OPENAI_SKIPPED = ("circuit_open", "not_configured")

# Module-level so warm invocations reuse the threads (one per lane).
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="monitoring")


@dataclass(frozen=True)
class Window:
    """Every date one dashboard call reports on, derived from `now` (UTC)."""

    now: datetime
    days: int

    @property
    def today(self) -> date:
        return self.now.date()

    @property
    def daily_start(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def weekly_start(self) -> date:
        return self.today - timedelta(days=self.today.weekday() + 7 * (WEEKS - 1))

    @property
    def history_start(self) -> date:
        return min(self.daily_start, self.weekly_start, self.today - timedelta(days=29))

    @property
    def settled(self) -> date:
        """The last day served from the rollup: it ended more than 24 h ago."""
        return self.today - timedelta(days=2)

    @property
    def raw_from(self) -> datetime:
        return _midnight(self.settled + timedelta(days=1))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), timezone.utc)


# --- lane 1: organizations, IP blocks of the last hour, crons --------------------------------

_SUMMARY = """
SELECT
    (SELECT coalesce(json_agg(o), '[]') FROM (
        SELECT plan, subscription_status AS status, count(*) AS n
        FROM organizations GROUP BY plan, subscription_status) o) AS organizations,
    (SELECT count(*) FROM organizations
     WHERE plan = 'TRIAL' AND trial_ends_at > %(now)s
       AND trial_ends_at <= %(now)s + interval '7 days') AS trials_ending_7d,
    (SELECT count(DISTINCT ip) FROM ip_blocks
     WHERE created_at > %(now)s - interval '1 hour' AND created_at <= %(now)s) AS blocked_last_hour,
    (SELECT count(*) FROM stripe_events WHERE outcome = 'conflict'
     AND processed_at > %(now)s - interval '1 hour' AND processed_at <= %(now)s) AS billing_conflicts,
    (SELECT coalesce(json_agg(c), '[]') FROM (
        SELECT DISTINCT ON (job) job, started_at, finished_at, status, complete, counts,
               left(error, 300) AS error
        FROM cron_runs ORDER BY job, started_at DESC) c) AS crons,
    (SELECT coalesce(json_object_agg(metric, json_build_object('level', level, 'since', since)),
                     '{}') FROM alert_state) AS alert_states
"""


def _summary(window: Window) -> dict:
    row = db.fetchone(_SUMMARY, {"now": window.now})
    by_plan = dict.fromkeys(PLANS, 0)
    subscriptions = {**dict.fromkeys(SUBSCRIPTION_STATUSES, 0), "none": 0}
    for group in row["organizations"]:
        by_plan[group["plan"]] = by_plan.get(group["plan"], 0) + group["n"]
        status = group["status"] or "none"
        subscriptions[status] = subscriptions.get(status, 0) + group["n"]
    last_runs = {run["job"]: run for run in row["crons"]}
    crons = [last_runs.pop(job, None) or {"job": job, "started_at": None, "finished_at": None,
                                          "status": None, "complete": None, "counts": {},
                                          "error": None}
             for job in JOBS]
    crons += sorted(last_runs.values(), key=lambda run: run["job"])
    return {
        "organizations": {"by_plan": by_plan, "total": sum(by_plan.values()),
                          "subscriptions": subscriptions,
                          "trials_ending_7d": row["trials_ending_7d"]},
        "blocked_last_hour": row["blocked_last_hour"],
        "billing_conflicts": row["billing_conflicts"],  # last hour (lib.billing.ledger)
        "crons": crons,
        "alert_states": row["alert_states"],
    }


# --- lane 2: daily history (rollup of settled days + raw rows of the last two days) ----------

# One statement: the settled days of the window not in the rollup yet are aggregated from the
# raw rows plus the purge's usage_daily (the two are disjoint: the purge moves rows from one to
# the other in one transaction, and a statement sees one snapshot), then recorded. Two calls
# at once: the second waits on monitoring_days' key and inserts nothing for that day.
_SETTLE = """
WITH missing AS (
    SELECT d::date AS day
    FROM generate_series(%(start)s::date, %(settled)s::date, interval '1 day') AS d
    WHERE NOT EXISTS (SELECT 1 FROM monitoring_days m WHERE m.day = d::date)
), raw AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, coalesce(provider, '') AS provider,
           coalesce(model, '') AS model, count(*) AS requests,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cost_usd) AS cost_usd
    FROM generations
    WHERE status <> 'pending'
      AND created_at >= ((SELECT min(day) FROM missing)::timestamp AT TIME ZONE 'UTC')
      AND created_at < (((SELECT max(day) FROM missing) + 1)::timestamp AT TIME ZONE 'UTC')
    GROUP BY 1, 2, 3
), totals AS (
    SELECT day, provider, model, sum(requests) AS requests, sum(failed) AS failed,
           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
           sum(cost_usd) AS cost_usd
    FROM (SELECT * FROM raw
          UNION ALL
          SELECT day, provider, model, requests, failed, input_tokens, output_tokens, cost_usd
          FROM usage_daily WHERE day IN (SELECT day FROM missing)) both_sources
    WHERE day IN (SELECT day FROM missing)
    GROUP BY day, provider, model
), claimed AS (
    INSERT INTO monitoring_days (day) SELECT day FROM missing
    ON CONFLICT DO NOTHING RETURNING day
)
INSERT INTO monitoring_daily (day, provider, model, requests, failed, input_tokens,
                              output_tokens, cost_usd)
SELECT t.* FROM totals t JOIN claimed USING (day)
"""

_HISTORY = """
SELECT day, provider, model, requests, failed, input_tokens, output_tokens, cost_usd
FROM monitoring_daily WHERE day >= %(start)s AND day <= %(settled)s
UNION ALL
SELECT day, provider, model, sum(requests), sum(failed), sum(input_tokens),
       sum(output_tokens), sum(cost_usd)
FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, coalesce(provider, '') AS provider,
           coalesce(model, '') AS model, 1 AS requests, (status = 'failed')::int AS failed,
           input_tokens, output_tokens, cost_usd
    FROM generations
    WHERE status <> 'pending' AND created_at >= %(raw_from)s AND created_at <= %(now)s
    UNION ALL
    SELECT day, provider, model, requests, failed, input_tokens, output_tokens, cost_usd
    FROM usage_daily WHERE day > %(settled)s AND day <= %(today)s
) recent
GROUP BY day, provider, model
"""


def settle(window: Window) -> int:
    """Compute the rollup of every settled day of the window not computed yet. Idempotent and
    safe under concurrent calls (one statement). Returns the number of rollup rows written."""
    params = {"start": window.history_start, "settled": window.settled}
    return db.execute(_SETTLE, params)


def forget_rollup() -> None:
    """Drop the settled-day rollup, so the next call recomputes it from the raw rows and
    usage_daily. Needed only after history was rewritten (a backfill, `ops seed-demo`)."""
    db.execute("DELETE FROM monitoring_days")


def _history_rows(window: Window) -> list[dict]:
    settle(window)
    params = {"start": window.history_start, "settled": window.settled, "today": window.today,
              "raw_from": window.raw_from, "now": window.now}
    return db.fetchall(_HISTORY, params)


def _totals(rows: list[dict]) -> dict:
    input_tokens = sum(int(r["input_tokens"]) for r in rows)
    output_tokens = sum(int(r["output_tokens"]) for r in rows)
    return {"requests": sum(int(r["requests"]) for r in rows), "input_tokens": input_tokens,
            "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens,
            "cost_usd": round(float(sum(r["cost_usd"] for r in rows)), 6)}


def _history(window: Window, rows: list[dict]) -> tuple[dict, dict]:
    """(generations, tokens-by-day-window) from the per-day rows."""
    per_day: dict[date, list[int]] = {}
    for row in rows:
        counts = per_day.setdefault(row["day"], [0, 0])
        counts[0] += int(row["requests"])
        counts[1] += int(row["failed"])
    daily = []
    for offset in range(window.days):
        day = window.daily_start + timedelta(days=offset)
        count, failed = per_day.get(day, (0, 0))
        daily.append({"date": day.isoformat(), "count": count, "failed": failed})
    weekly = []
    for offset in range(WEEKS):
        monday = window.weekly_start + timedelta(days=7 * offset)
        count = sum(per_day.get(monday + timedelta(days=d), (0, 0))[0] for d in range(7))
        weekly.append({"week": iso_week(monday), "count": count})

    week_from, month_from = window.today - timedelta(days=6), window.today - timedelta(days=29)
    month = [r for r in rows if r["day"] >= month_from]
    models: dict[tuple[str, str], list[dict]] = {}
    for row in month:
        models.setdefault((row["provider"], row["model"]), []).append(row)
    by_model = [{"provider": provider or None, "model": model or None, **_totals(group)}
                for (provider, model), group in models.items()]
    by_model.sort(key=lambda m: (-m["cost_usd"], -m["total_tokens"], m["model"] or ""))
    tokens = {"7d": {"since": week_from.isoformat(),
                     **_totals([r for r in rows if r["day"] >= week_from])},
              "30d": {"since": month_from.isoformat(), **_totals(month)},
              "by_model": by_model}
    return {"daily": daily, "weekly": weekly}, tokens


# --- lane 3: the last hour and 24 h of raw rows ----------------------------------------------

# One index range scan over the last 24 h; the last hour is a FILTER over the same rows.
# OpenAI errors, as generate records them (lib/llm: fallback_reason is the first attempt's
# reason when OpenAI failed or was skipped): failed = a reason other than a skip; the rate is
# over the requests where OpenAI was tried (skipped = circuit open or not configured; a 4xx
# caused by the request itself is tried, not failed). Same as issue 3's primary_outcome
# column, from columns of migration 0001.
_LIVE = """
SELECT count(*) AS requests_24h,
       count(*) FILTER (WHERE status = 'failed') AS failed_24h,
       count(*) FILTER (WHERE fallback_reason <> ALL(%(skipped)s)) AS openai_failed_24h,
       count(*) FILTER (WHERE fallback_reason IS NULL OR fallback_reason <> ALL(%(skipped)s))
           AS openai_tried_24h,
       count(*) FILTER (WHERE fallback) AS fallbacks_24h,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms_24h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s) AS requests_1h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s AND status = 'failed') AS failed_1h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s AND fallback_reason <> ALL(%(skipped)s))
           AS openai_failed_1h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s
                          AND (fallback_reason IS NULL OR fallback_reason <> ALL(%(skipped)s)))
           AS openai_tried_1h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s AND fallback) AS fallbacks_1h,
       count(*) FILTER (WHERE created_at > %(hour_ago)s
                          AND attempts @> '[{{"outcome": "misconfigured"}}]') AS misconfigured_1h,
       count(*) FILTER (WHERE attempts @> '[{{"outcome": "misconfigured"}}]') AS misconfigured_24h,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE created_at > %(hour_ago)s) AS p95_latency_ms_1h,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd
FROM generations
WHERE status <> 'pending' AND created_at > %(day_ago)s AND created_at <= %(now)s {tenant}
"""
_ONE_TENANT = "AND organization_id = %(org)s"


def _rate(part: int, whole: int) -> Fraction | None:
    return Fraction(part, whole) if whole else None


def _live(window: Window, organization_id=None) -> dict[str, dict]:
    params = {"now": window.now, "hour_ago": window.now - timedelta(hours=1),
              "day_ago": window.now - timedelta(hours=24), "skipped": list(OPENAI_SKIPPED),
              "org": organization_id}
    sql = _LIVE.format(tenant=_ONE_TENANT if organization_id is not None else "")
    row = db.fetchone(sql, params)
    out = {}
    for name in ("1h", "24h"):
        requests, p95 = row[f"requests_{name}"], row[f"p95_latency_ms_{name}"]
        out[name] = {
            "requests": requests, "failed": row[f"failed_{name}"],
            "error_rate": _rate(row[f"failed_{name}"], requests),
            "openai_error_rate": _rate(row[f"openai_failed_{name}"], row[f"openai_tried_{name}"]),
            "fallback_rate": _rate(row[f"fallbacks_{name}"], requests),
            "p95_latency_ms": None if p95 is None else Fraction(p95).limit_denominator(1000),
            # requests where a provider said our configuration is wrong (issue 12)
            "provider_misconfigured": row[f"misconfigured_{name}"],
        }
    out["24h"]["tokens"] = _totals([{**row, "requests": row["requests_24h"]}])
    return out


# --- lane 4: blocked IPs (Redis, then their reasons) ------------------------------------------

def _count_blocked() -> int:
    client, keys, cursor = redis.client(), set(), 0
    while True:  # SCAN may return a key twice; a set counts it once
        cursor, page = redis.call(client.scan, cursor, match=ip_blocks.KEY_PREFIX + "*", count=1000)
        keys.update(page)
        if int(cursor) == 0:
            return len(keys)


def _blocked_ips() -> dict:
    """{"count", "ips": [...]} from Redis (reasons from ip_blocks); {"error": "unavailable"}
    when Redis can't answer."""
    try:
        count = _count_blocked()
        listed = ip_blocks.list_blocked(limit=LISTED_IPS) if count else []
    except (redis.RedisUnavailable, ConfigError) as exc:
        report(exc, part="blocked_ips")
        return {"error": "unavailable"}
    listed = sorted(listed, key=lambda b: (-(b.ttl_s or 0), b.ip))
    return {"count": count, "ips": [{"ip": b.ip, "ttl_seconds": b.ttl_s, "reason": b.reason,
                                     "source": b.source} for b in listed]}


# --- the payload ------------------------------------------------------------------------------

def _public(metrics: dict) -> dict:
    def plain(value):
        if isinstance(value, Fraction):
            return round(float(value), 6)
        return value

    return {"requests": metrics["requests"], "failed": metrics["failed"],
            "error_rate": plain(metrics["error_rate"]),
            "openai_error_rate": plain(metrics["openai_error_rate"]),
            "fallback_rate": plain(metrics["fallback_rate"]),
            "p95_latency_ms": plain(metrics["p95_latency_ms"]),
            "provider_misconfigured": metrics["provider_misconfigured"]}


def dashboard(scope: str = PLATFORM, days: int = DEFAULT_DAYS, now: datetime | None = None) -> dict:
    """The whole payload for `scope` over the last `days` UTC days. Read-only
    apart from settling the rollup (idempotent). Raises DatabaseUnavailable when Postgres
    fails; Redis trouble degrades only `blocked_ips`. For one organization's view, see
    `organization_dashboard`."""
    if scope != PLATFORM:
        raise ValueError(f"unknown dashboard scope {scope!r}")
    window = Window((now or datetime.now(timezone.utc)).astimezone(timezone.utc), days)
    lanes = {name: _pool.submit(contextvars.copy_context().run, work, *args)  # keeps request_id
             for name, work, args in (("summary", _summary, (window,)),
                                      ("history", _history_rows, (window,)),
                                      ("live", _live, (window,)),
                                      ("blocked", _blocked_ips, ()))}
    results = {name: future.result() for name, future in lanes.items()}
    summary, live = results["summary"], results["live"]
    generations, tokens = _history(window, results["history"])
    tokens = {"24h": live["24h"]["tokens"], **tokens}
    blocked = results["blocked"]
    blocked["last_hour"] = summary["blocked_last_hour"]
    hour = live["1h"]
    current = {"error_rate": hour["error_rate"], "p95_latency_ms": hour["p95_latency_ms"],
               "openai_error_rate": hour["openai_error_rate"],
               "blocked_ips_per_hour": summary["blocked_last_hour"],
               "provider_misconfigured": hour["provider_misconfigured"],
               "billing_conflicts": summary["billing_conflicts"]}
    return {
        "scope": PLATFORM,
        "generated_at": timestamp(window.now),
        "days": days,
        "organizations": summary["organizations"],
        "generations": generations,
        "blocked_ips": blocked,
        "tokens": tokens,
        "llm": {name: _public(live[name]) for name in ("1h", "24h")},
        "crons": summary["crons"],
        "alerts": alerts.evaluate(current, window="1h", states=summary["alert_states"]),
    }


# --- one organization's dashboard ------------------------------------------------------------

# The tenant's raw rows plus the days the purge rolled up into usage_daily (the two are
# disjoint: the purge moves rows in one transaction). One index range scan per source.
_TENANT_HISTORY = """
SELECT day, provider, model, sum(requests) AS requests, sum(failed) AS failed,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd
FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, coalesce(provider, '') AS provider,
           coalesce(model, '') AS model, 1 AS requests, (status = 'failed')::int AS failed,
           input_tokens, output_tokens, cost_usd
    FROM generations
    WHERE organization_id = %(org)s AND status <> 'pending'
      AND created_at >= %(from)s AND created_at <= %(now)s
    UNION ALL
    SELECT day, provider, model, requests, failed, input_tokens, output_tokens, cost_usd
    FROM usage_daily WHERE organization_id = %(org)s AND day >= %(start)s AND day <= %(today)s
) tenant_rows
GROUP BY day, provider, model
"""

_TENANT = """
SELECT o.external_id, o.plan, o.subscription_status, o.trial_ends_at,
       coalesce(u.used, 0) AS used
FROM organizations o
LEFT JOIN generation_usage u ON u.organization_id = o.id AND u.month = %(month)s
WHERE o.id = %(org)s
"""


def _tenant_history(window: Window, organization_id) -> list[dict]:
    return db.fetchall(_TENANT_HISTORY, {
        "org": organization_id, "from": _midnight(window.history_start), "now": window.now,
        "start": window.history_start, "today": window.today})


def _tenant(window: Window, organization_id) -> dict:
    month = window.today.replace(day=1)
    row = db.fetchone(_TENANT, {"org": organization_id, "month": month})
    if row is None:
        raise LookupError(f"organization {organization_id} does not exist")
    return {"id": row["external_id"], "plan": row["plan"],
            "subscription_status": row["subscription_status"],
            "trial_ends_at": timestamp(row["trial_ends_at"]) if row["trial_ends_at"] else None,
            "quota": _quota(settings().quotas[row["plan"]], row["used"], month)}


def _quota(limit: int, used: int, month: date) -> dict:
    """The limit the next reservation enforces and the counter it checks, shaped like
    generate's `quota` (lib.generation.quota.quota_status; not imported: it loads lib.auth,
    which `ops monitoring` must not pay for)."""
    first = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return {"limit": limit, "used": used, "remaining": max(0, limit - used),
            "resets_at": timestamp(_midnight(first))}


def organization_dashboard(organization_id, days: int = DEFAULT_DAYS,
                           now: datetime | None = None) -> dict:
    """One organization's usage dashboard over the last `days` UTC days (same definitions
    as the platform's). Read-only; three statements on three lanes. Raises
    DatabaseUnavailable, or LookupError when the organization does not exist."""
    window = Window((now or datetime.now(timezone.utc)).astimezone(timezone.utc), days)
    lanes = {name: _pool.submit(contextvars.copy_context().run, work, window, organization_id)
             for name, work in (("organization", _tenant), ("history", _tenant_history),
                                ("live", _live))}
    results = {name: future.result() for name, future in lanes.items()}
    live = results["live"]
    generations, tokens = _history(window, results["history"])
    return {
        "scope": ORGANIZATION,
        "generated_at": timestamp(window.now),
        "days": days,
        "organization": results["organization"],
        "generations": generations,
        "tokens": {"24h": live["24h"]["tokens"], **tokens},
        "llm": {name: _public(live[name]) for name in ("1h", "24h")},
    }
