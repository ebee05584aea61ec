"""Monthly generation quotas per organization, enforced in Postgres (the source of truth:
it holds when Redis is down).

`reserve` provisions the caller (lib.generation.tenancy) and reserves one generation in a
single statement, which also inserts the request's `pending` generations row;
`record_success` and `release` close that row, the latter marking it failed and giving
the reserved unit back (failed generations don't count); both are retried on a fresh
connection when the first try fails (they are idempotent). A reservation that is never
settled (its function was killed) is reclaimed after RESERVATION_TIMEOUT_S: the row becomes
`abandoned` and the unit is given back, lazily inside the org's next `reserve` (no extra round
trip) and by the purge cron's `sweep_abandoned`. Invariant, per org and month:
`used == succeeded + pending younger than the timeout`. Months are UTC calendar months;
limits come from QUOTA_TRIAL/TEAM/AGENCY.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from uuid import UUID

from lib import db
from lib.auth import Identity
from lib.config import settings
from lib.errors import PaymentRequired, QuotaExceeded
from lib.generation import tenancy


class TrialExpired(PaymentRequired):
    code, default_message = "trial_expired", "The free trial has ended; choose a plan to continue"


class SubscriptionInactive(PaymentRequired):
    code, default_message = "subscription_inactive", "The subscription is not active"


@dataclass(frozen=True)
class Reservation:
    generation_id: UUID
    organization_id: UUID
    plan: str
    month: date
    limit: int
    used: int

    def quota(self, used: int | None = None) -> dict:
        """The response's `quota` object, with this reservation's (or a later) `used`."""
        return quota_status(self.limit, self.used if used is None else used, self.month)


def quota_status(limit: int, used: int, month: date) -> dict:
    return {"limit": limit, "used": used, "remaining": max(0, limit - used),
            "resets_at": _next_month(month).isoformat().replace("+00:00", "Z")}


def used_this_month(conn, organization_ids: list, now: datetime) -> dict:
    """This UTC month's quota use per organization, read from the counter `reserve` maintains
    (reserved or succeeded; failed generations were given back), less the reservations that
    are past RESERVATION_TIMEOUT_S and not reclaimed yet (they will be given back). Orgs
    that used nothing are absent. Read-only; the same number the generate route enforces."""
    month = now.astimezone(timezone.utc).date().replace(day=1)
    rows = conn.execute(
        "SELECT u.organization_id, u.used - (SELECT count(*) FROM generations gen "
        "  WHERE gen.organization_id = u.organization_id AND gen.status = 'pending' "
        "    AND gen.created_at >= u.month "
        "    AND gen.created_at < now() - make_interval(secs => %s))::int AS used "
        "FROM generation_usage u WHERE u.organization_id = ANY(%s) AND u.month = %s",
        (settings().reservation_timeout_s, organization_ids, month)).fetchall()
    return {row["organization_id"]: max(row["used"], 0) for row in rows if row["used"] > 0}


def _next_month(month: date) -> datetime:
    first = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return datetime.combine(first, time(0), timezone.utc)


# The reservation is the ON CONFLICT DO UPDATE .. WHERE used < limit: Postgres locks the
# counter row and evaluates the WHERE against its latest committed version, so concurrent
# reservations can never push `used` past the limit. The standing checks (trial, status)
# read the org row as of this statement. Built on provisioning through its one seam
# (tenancy.provisioned): the caller's first contact costs no extra round trip.
#
# Reclaim, in the same statement: `reclaimed` marks this month's reservations of the org that
# were never settled within RESERVATION_TIMEOUT_S `abandoned` (only when the org may reserve at
# all), and `counted` gives their units back in the same update of the counter row (a row can
# be updated only once per statement, so the give-back and the +1 are one SET). Each stale row
# is reclaimed by exactly one statement: a concurrent one waits on its row lock and then sees
# it is no longer pending. When the quota is still full after the give-back, the row is updated
# for the give-back only and keeps its old `updated_at`: `reserved` tells the two apart (a
# reservation always sets `updated_at` to this statement's now()).
_RESERVE = tenancy.provisioned(ctes="""
standing AS (
    SELECT org.id, org.plan,
           CASE
               WHEN org.subscription_status IN ('canceled', 'unpaid') THEN 'subscription_inactive'
               WHEN org.subscription_status = 'past_due' AND org.current_period_end < now()
                   THEN 'subscription_inactive'
               WHEN org.plan = 'TRIAL' AND org.trial_ends_at < now() THEN 'trial_expired'
           END AS refusal,
           CASE org.plan WHEN 'TRIAL' THEN %(quota_trial)s WHEN 'TEAM' THEN %(quota_team)s
                         ELSE %(quota_agency)s END AS quota_limit,
           date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month
    FROM org
),
reclaimed AS (
    UPDATE generations AS gen SET status = 'abandoned', error_class = 'abandoned',
           completed_at = now()
    FROM standing
    WHERE standing.refusal IS NULL AND standing.quota_limit > 0
      AND gen.organization_id = standing.id AND gen.status = 'pending'
      AND gen.created_at >= standing.month
      AND gen.created_at < now() - make_interval(secs => %(reservation_timeout_s)s)
    RETURNING gen.id
),
back AS (SELECT count(*)::int AS n FROM reclaimed),
counted AS (
    INSERT INTO generation_usage AS g (organization_id, month, used, quota_limit)
    SELECT id, month, 1, quota_limit FROM standing WHERE refusal IS NULL AND quota_limit > 0
    ON CONFLICT (organization_id, month) DO UPDATE
        SET used = greatest(g.used - (SELECT n FROM back), 0)
                   + (greatest(g.used - (SELECT n FROM back), 0) < EXCLUDED.quota_limit)::int,
            quota_limit = EXCLUDED.quota_limit,
            updated_at = CASE WHEN greatest(g.used - (SELECT n FROM back), 0)
                                   < EXCLUDED.quota_limit THEN now() ELSE g.updated_at END
        WHERE g.used - (SELECT n FROM back) < EXCLUDED.quota_limit OR (SELECT n FROM back) > 0
    RETURNING used, updated_at = now() AS reserved
),
pending AS (
    INSERT INTO generations (organization_id, user_id, status)
    SELECT standing.id, %(user_id)s, 'pending' FROM standing, counted WHERE counted.reserved
    RETURNING id
)""", select="""
SELECT standing.id AS organization_id, standing.plan, standing.refusal, standing.quota_limit,
       standing.month, counted.used, pending.id AS generation_id,
       coalesce(counted.used, (SELECT g.used FROM generation_usage g
        WHERE g.organization_id = standing.id AND g.month = standing.month)) AS used_before
FROM (SELECT 1) AS one
LEFT JOIN standing ON true LEFT JOIN counted ON true LEFT JOIN pending ON true""")


def reserve(identity: Identity) -> Reservation:
    """Provision the caller and reserve one generation of this month's quota, inserting its
    `pending` generations row: one atomic statement, safe under any concurrency.

    Raises TrialExpired / SubscriptionInactive / QuotaExceeded (402, nothing written but
    the first-contact provisioning) or DatabaseUnavailable (503, nothing written).
    """
    quotas = settings().quotas
    params = {"quota_trial": quotas["TRIAL"], "quota_team": quotas["TEAM"],
              "quota_agency": quotas["AGENCY"],
              "reservation_timeout_s": settings().reservation_timeout_s}
    row = db.run(lambda conn: tenancy.run_provisioned(conn, _RESERVE, identity, params))
    if row["refusal"] == "trial_expired":
        raise TrialExpired()
    if row["refusal"] == "subscription_inactive":
        raise SubscriptionInactive()
    if row["generation_id"] is None:
        limit = row["quota_limit"]
        raise QuotaExceeded(f"Monthly quota of {limit} generations used up", details={
            "quota": quota_status(limit, row["used_before"] or 0, row["month"])})
    return Reservation(row["generation_id"], row["organization_id"], row["plan"], row["month"],
                       row["quota_limit"], row["used"])


_SUCCEED = """
UPDATE generations
SET status = 'succeeded', provider = %(provider)s, model = %(model)s,
    input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s, cost_usd = %(cost_usd)s,
    price_version = %(price_version)s, latency_ms = %(latency_ms)s, fallback = %(fallback)s,
    fallback_reason = %(fallback_reason)s, error_class = NULL,
    primary_outcome = %(primary_outcome)s, attempts = %(attempts)s, completed_at = now(),
    provider_request_id = %(provider_request_id)s
WHERE id = %(id)s AND status = 'pending'"""

# Closing the row and returning the reservation in one statement: the `status = 'pending'`
# guard makes a repeated release a no-op, so a reservation is never given back twice.
_FAIL = """
WITH failed AS (
    UPDATE generations
    SET status = 'failed', provider = %(provider)s, model = %(model)s,
        latency_ms = %(latency_ms)s, fallback = %(fallback)s, fallback_reason = %(fallback_reason)s,
        error_class = %(error_class)s, primary_outcome = %(primary_outcome)s,
        attempts = %(attempts)s, completed_at = now(),
        provider_request_id = %(provider_request_id)s
    WHERE id = %(id)s AND status = 'pending'
    RETURNING organization_id
),
released AS (
    UPDATE generation_usage g SET used = g.used - 1, updated_at = now()
    FROM failed
    WHERE g.organization_id = failed.organization_id AND g.month = %(month)s AND g.used > 0
    RETURNING g.used
)
SELECT coalesce((SELECT used FROM released),
                (SELECT used FROM generation_usage
                 WHERE organization_id = %(organization_id)s AND month = %(month)s)) AS used"""


def record_success(reservation: Reservation, record: dict) -> None:
    """Mark the reserved generation succeeded with its accounting (`record`: provider, model,
    tokens, cost, price_version, latency, fallback, attempts). One statement; idempotent."""
    db.execute(_SUCCEED, {"provider_request_id": None, **record, "id": reservation.generation_id},
               retry=db.ALWAYS)


def release(reservation: Reservation, record: dict) -> int:
    """Mark the reserved generation failed and give its quota back, atomically; returns the
    month's `used` afterwards. Idempotent (a second call changes nothing)."""
    row = db.fetchone(
        _FAIL, {"provider_request_id": None, **record, "id": reservation.generation_id,
                "month": reservation.month,
                "organization_id": reservation.organization_id}, retry=db.ALWAYS)
    return row["used"] or 0


# The purge cron's sweep: every reservation of any org and month that was not settled within
# the timeout, a batch at a time (SKIP LOCKED: rows a reserve is reclaiming right now are its).
_SWEEP = """
WITH stale AS (
    SELECT id FROM generations
    WHERE status = 'pending' AND created_at < now() - make_interval(secs => %(timeout_s)s)
    ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
),
reclaimed AS (
    UPDATE generations AS gen SET status = 'abandoned', error_class = 'abandoned',
           completed_at = now()
    FROM stale WHERE gen.id = stale.id AND gen.status = 'pending'
    RETURNING gen.organization_id,
              date_trunc('month', gen.created_at AT TIME ZONE 'UTC')::date AS month
),
per_month AS (
    SELECT organization_id, month, count(*)::int AS n FROM reclaimed GROUP BY 1, 2
),
given_back AS (
    UPDATE generation_usage g SET used = greatest(g.used - per_month.n, 0), updated_at = now()
    FROM per_month
    WHERE g.organization_id = per_month.organization_id AND g.month = per_month.month
    RETURNING g.organization_id
)
SELECT (SELECT count(*) FROM reclaimed) AS reclaimed"""


def sweep_abandoned(batch_size: int = 1000, max_batches: int = 100) -> int:
    """Reclaim every reservation left pending past RESERVATION_TIMEOUT_S (a killed function),
    in every org and month: row -> `abandoned`, unit given back. Returns how many. Idempotent;
    safe beside concurrent reserves (each row is reclaimed once)."""
    total = 0
    params = {"timeout_s": settings().reservation_timeout_s, "limit": batch_size}
    for _ in range(max_batches):
        row = db.fetchone(_SWEEP, params)
        done = row["reclaimed"] if row else 0
        total += done
        if done < batch_size:
            break
    return total


# A stream that ended early: `cancelled` (the client went away; the provider was paid for
# what it sent, so the unit stays used) or `failed` (the provider broke off after the first
# delta; failed generations don't count, so the unit is given back). Either way the row
# carries the tokens used so far and their cost.
_SETTLE_PARTIAL = """
WITH settled AS (
    UPDATE generations
    SET status = %(status)s, provider = %(provider)s, model = %(model)s,
        input_tokens = %(input_tokens)s, output_tokens = %(output_tokens)s,
        cost_usd = %(cost_usd)s, price_version = %(price_version)s, latency_ms = %(latency_ms)s,
        fallback = %(fallback)s, fallback_reason = %(fallback_reason)s,
        error_class = %(error_class)s, primary_outcome = %(primary_outcome)s,
        attempts = %(attempts)s, completed_at = now()
    WHERE id = %(id)s AND status = 'pending'
    RETURNING organization_id, status
),
released AS (
    UPDATE generation_usage g SET used = g.used - 1, updated_at = now()
    FROM settled
    WHERE settled.status = 'failed' AND g.organization_id = settled.organization_id
      AND g.month = %(month)s AND g.used > 0
    RETURNING g.used
)
SELECT coalesce((SELECT used FROM released),
                (SELECT used FROM generation_usage
                 WHERE organization_id = %(organization_id)s AND month = %(month)s)) AS used"""


def settle_partial(reservation: Reservation, status: str, record: dict) -> int:
    """Close a stream's row as `cancelled` or `failed` with the tokens used so far (`record`
    as for record_success plus error_class); returns the month's `used` afterwards."""
    if status not in ("cancelled", "failed"):
        raise ValueError(status)
    row = db.fetchone(_SETTLE_PARTIAL, {
        **record, "status": status, "id": reservation.generation_id, "month": reservation.month,
        "organization_id": reservation.organization_id})
    return row["used"] or 0
