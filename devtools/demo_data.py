"""Realistic demo data for a local database: organizations on every plan, their users, months
of generations, the purge's rollup for what retention would have deleted, cron runs and IP
blocks. Used by `python -m ops seed-demo` and the monitoring benchmark. Dev tooling only.

Everything it creates is recognisable (`demo_` external ids), so `remove()` takes it out again.
Deterministic for a given seed and `now`.
"""

import bisect
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from lib.config import PLANS
from lib.jobs import ALERTS, PURGE, RECONCILE_BILLING, WEEKLY_REMINDERS

PREFIX = "demo_"
# USD per 1M tokens (input, output): rough public list prices, for plausible costs only.
_MODELS = {("openai", "gpt-4o-mini"): (0.15, 0.60), ("openai", "gpt-4o"): (2.50, 10.0),
           ("anthropic", "claude-3-5-haiku-latest"): (0.80, 4.0)}
_RETENTION = {"TRIAL": 30, "TEAM": 180, "AGENCY": 365}
_NAMES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
          "Tyrell", "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Oscorp", "Aperture")


@dataclass
class Seeded:
    organizations: int = 0
    users: int = 0
    generations: int = 0
    rolled_up_days: int = 0
    cron_runs: int = 0
    ip_blocks: list[tuple[str, str, datetime]] = field(default_factory=list)  # active: ip, reason, until


def _plan(rng: random.Random) -> str:
    return rng.choices(PLANS, weights=(50, 35, 15))[0]  # PLANS is (TRIAL, TEAM, AGENCY)


def _organizations(rng: random.Random, count: int, now: datetime) -> list[tuple]:
    rows = []
    for index in range(count):
        plan = _plan(rng)
        created = now - timedelta(days=rng.uniform(1, 400))
        trial_ends = status = period_end = None
        if plan == "TRIAL":
            trial_ends = now + timedelta(days=rng.uniform(-20, 14))
        else:
            status = rng.choices(("active", "past_due", "canceled", "trialing"),
                                 weights=(85, 6, 6, 3))[0]
            period_end = now + timedelta(days=rng.uniform(1, 30))
        name = f"{rng.choice(_NAMES)} {index}"
        rows.append((str(uuid.UUID(int=rng.getrandbits(128))), f"{PREFIX}org_{index}", name,
                     plan, trial_ends, status, period_end, created))
    return rows


def _generation(rng: random.Random, created: datetime) -> tuple:
    """(status, provider, model, input, output, cost, latency, fallback, reason, error, done)."""
    roll = rng.random()
    input_tokens, output_tokens = int(rng.lognormvariate(5.5, 0.7)), int(rng.lognormvariate(6, 0.6))
    latency = int(rng.lognormvariate(6.8, 0.45))
    if roll < 0.004:
        return ("pending", None, None, 0, 0, 0, None, False, None, None, None)
    if roll < 0.012:  # both providers failed
        return ("failed", "anthropic", "claude-3-5-haiku-latest", 0, 0, 0, latency * 3, True,
                "server_error", "APIStatusError", created + timedelta(milliseconds=latency * 3))
    if roll < 0.05:  # OpenAI failed, Anthropic answered
        provider, model, fallback = "anthropic", "claude-3-5-haiku-latest", True
        latency *= 2
    else:
        provider, fallback = "openai", False
        model = "gpt-4o" if rng.random() < 0.15 else "gpt-4o-mini"
    price_in, price_out = _MODELS[(provider, model)]
    cost = round((input_tokens * price_in + output_tokens * price_out) / 1e6, 8)
    return ("succeeded", provider, model, input_tokens, output_tokens, cost, latency, fallback,
            "rate_limited" if fallback else None, None, created + timedelta(milliseconds=latency))


def seed(conn, *, organizations: int = 40, generations: int = 20_000, days: int = 120,
         now: datetime | None = None, seed_value: int = 6) -> Seeded:
    """Insert the demo dataset in one transaction (COPY for the bulk). Generations spread over
    `days` (busier recently and on weekdays) across organizations with a skewed usage; what
    retention would already have purged goes into usage_daily instead, as the purge does."""
    rng = random.Random(seed_value)
    now = now or datetime.now(timezone.utc)
    result = Seeded()
    orgs = _organizations(rng, organizations, now)
    users: dict[str, list[str]] = {}
    with conn.transaction():
        with conn.cursor().copy(
                "COPY organizations (id, external_id, name, plan, trial_ends_at, subscription_status,"
                " current_period_end, created_at) FROM STDIN") as copy:
            for row in orgs:
                copy.write_row(row)
        with conn.cursor().copy(
                "COPY users (id, organization_id, email, role, created_at) FROM STDIN") as copy:
            for index, org in enumerate(orgs):
                members = users.setdefault(org[0], [])
                for seat in range(1 + int(rng.paretovariate(1.5)) % 8):
                    user_id = f"{PREFIX}user_{index}_{seat}"
                    role = "OWNER" if seat == 0 else rng.choice(("ADMIN", "MEMBER", "MEMBER"))
                    copy.write_row((user_id, org[0], f"user{index}.{seat}@example.com", role, org[7]))
                    members.append(user_id)
        result.organizations, result.users = len(orgs), sum(len(v) for v in users.values())

        weights, total = [], 0.0
        for _ in orgs:
            total += rng.paretovariate(1.2)
            weights.append(total)
        rollup: dict[tuple, list] = {}
        horizon = days * 86400
        with conn.cursor().copy(
                "COPY generations (organization_id, user_id, status, provider, model, input_tokens,"
                " output_tokens, cost_usd, latency_ms, fallback, fallback_reason, error_class,"
                " created_at, completed_at) FROM STDIN") as copy:
            for _ in range(generations):
                org = orgs[bisect.bisect(weights, rng.random() * total)]
                created = now - timedelta(seconds=horizon * rng.random() ** 1.4)
                if created.weekday() >= 5 and rng.random() < 0.5:
                    created -= timedelta(days=2)  # quieter weekends
                outcome = _generation(rng, created)
                if created < now - timedelta(days=_RETENTION[org[3]]):
                    if outcome[0] != "pending":
                        key = (created.date(), org[0], outcome[1] or "", outcome[2] or "")
                        sums = rollup.setdefault(key, [0, 0, 0, 0, 0])
                        for i, value in enumerate((1, outcome[0] == "failed", outcome[3],
                                                   outcome[4], outcome[5])):
                            sums[i] += value
                    continue
                copy.write_row((org[0], rng.choice(users[org[0]]), *outcome[:-1], created,
                                outcome[-1]))
                result.generations += 1
        with conn.cursor().copy(
                "COPY usage_daily (day, organization_id, provider, model, requests, failed,"
                " input_tokens, output_tokens, cost_usd) FROM STDIN") as copy:
            for key, sums in rollup.items():
                copy.write_row((*key, *sums))
        result.rolled_up_days = len({key[0] for key in rollup})

        for job, schedule_days in ((PURGE, 1), (WEEKLY_REMINDERS, 7), (RECONCILE_BILLING, 1)):
            for back in range(0, 28, schedule_days):
                started = now.replace(hour=3 if job == PURGE else 9, minute=0, second=0,
                                      microsecond=0) - timedelta(days=back + 1)
                failed = job == PURGE and back == 3
                counts = {"deleted": {"generations": rng.randint(0, 500)}} if job == PURGE \
                    else {"sent": rng.randint(0, 40), "skipped": rng.randint(0, 5), "failed": 0}
                if job == RECONCILE_BILLING:
                    counts = {"checked": rng.randint(20, 60), "repaired": rng.randint(0, 2),
                              "conflicts": 0, "unmatched": 0}
                counts["demo"] = True
                conn.execute(
                    "INSERT INTO cron_runs (job, started_at, finished_at, status, complete, counts,"
                    " error) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
                    (job, started, started + timedelta(seconds=rng.uniform(1, 40)),
                     "failed" if failed else "succeeded", not failed, json.dumps(counts),
                     "DatabaseUnavailable" if failed else None))
                result.cron_runs += 1
        for back in range(6):  # the alerts cron, every 10 minutes: its last hour
            started = now - timedelta(minutes=10 * back + 2)
            conn.execute(
                "INSERT INTO cron_runs (job, started_at, finished_at, status, complete, counts)"
                " VALUES (%s, %s, %s, 'succeeded', true, %s::jsonb)",
                (ALERTS, started, started + timedelta(seconds=rng.uniform(0.2, 2)),
                 json.dumps({"evaluated": 8, "notices": 0, "demo": True})))
            result.cron_runs += 1

        for index in range(12):
            ip = f"203.0.113.{10 + index}" if index % 3 else f"2001:db8::{index + 1:x}"
            created = now - timedelta(hours=rng.uniform(0, 30))
            source = "auto" if index % 4 else "manual"
            reason = "rate limited 51 times in an hour" if source == "auto" else "abuse report"
            conn.execute("INSERT INTO ip_blocks (ip, reason, source, created_at, expires_at)"
                         " VALUES (%s, %s, %s, %s, %s)",
                         (ip, reason, source, created, created + timedelta(hours=24)))
            if created + timedelta(hours=24) > now:
                result.ip_blocks.append((ip, reason, created + timedelta(hours=24)))
    return result


def remove(conn) -> int:
    """Delete every demo organization (users, generations and rollups go with them by cascade)
    and the demo IP blocks. Returns the number of organizations removed. Transactional."""
    with conn.transaction():
        deleted = conn.execute("DELETE FROM organizations WHERE external_id LIKE %s",
                               (PREFIX + "%",)).rowcount
        conn.execute("DELETE FROM ip_blocks WHERE ip << '203.0.113.0/24' OR ip << '2001:db8::/32'")
        conn.execute("DELETE FROM cron_runs WHERE counts ? 'demo'")
    return deleted
