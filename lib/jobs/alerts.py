"""The alerts cron (`alerts`): evaluate every alerting metric and notify a person when one
changes level.

What is evaluated, each run (docs/operations.md, "Alerts", says what to do about each):
- the runbook's thresholds over the last hour (lib.alerts through lib.monitoring's dashboard):
  error rate, generate P95, blocked IPs per hour, OpenAI error rate, and any other metric the
  dashboard alerts on (`provider_misconfigured`, `billing_conflicts` once they exist; a metric
  the dashboard doesn't know is skipped);
- `cron:<job>` for every other job of lib.jobs.JOBS: critical when no run succeeded since the
  last time its schedule fired (more than GRACE ago), warning when its last run failed or was
  interrupted;
- `database` and `redis`: reachable or not.

Notices, one per change of level (ok -> warning -> critical -> ok), plus a reminder every
ALERT_RENOTIFY_H hours while still critical; nothing while a level holds. Each goes to every
configured channel: ALERT_WEBHOOK_URL (Slack-compatible JSON), ALERT_EMAIL (through the
mailer) and Sentry (a message at the alert's level). The state is `alert_state` (migration
0008): a notice is queued with the channels it still has to reach, a run claims it before
sending (so two overlapping runs never send it twice), and a channel that failed stays queued,
with its error recorded, for the next run. A failing channel never fails the run.

When Postgres itself is down the run can't record anything: `run()` then sends one
`database` critical notice, deduplicated through Redis, and the first run that reaches
Postgres again sends the matching ok.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import parseaddr
from fractions import Fraction

import httpx
from psycopg.types.json import Jsonb

from lib import alerts, db, monitoring, redis
from lib.config import settings
from lib.errors import ConfigError, DatabaseUnavailable
from lib.jobs import ALERTS, JOBS, SCHEDULES, cron
from lib.jobs.mailer import DeliveryFailed, DeliveryUnknown, Mailer
from lib.jobs.schedule import Schedule
from lib.observability import capture_alert, log, sentry_enabled
from lib.utc import timestamp

JOB = ALERTS
CHANNELS = ("webhook", "email", "sentry")
OPTIONAL_METRICS = ("provider_misconfigured", "billing_conflicts")
# Vercel starts a Hobby cron anywhere within its hour, a Pro one within about a minute.
GRACE = timedelta(hours=1)
# A 'running' row older than this was cut off (the cron lock's own hold limit).
RUN_LIMIT = timedelta(minutes=15)
_EARLY = timedelta(minutes=1)  # a run started a little before its fire time still counts
CLAIM = timedelta(minutes=2)  # far longer than one notice takes on every channel (~20 s)
WEBHOOK_TIMEOUT_S = 5.0
DATABASE_DOWN_KEY = "alerts:database-down"
_LEVELS = ("ok", "warning", "critical")


@dataclass(frozen=True)
class Reading:
    """One metric's level now; `value`/`threshold` are plain JSON values."""

    metric: str
    level: str
    value: object = None
    threshold: object = None
    detail: str = ""


# --- evaluation ---------------------------------------------------------------------------------

def _plain(value):
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else round(float(value), 6)
    return value


def _shown(value, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{float(value) * 100:.1f}%"
    return f"{float(value):g} ms" if unit == "ms" else f"{value}"


_MISSING = object()


def _find(payload, name: str):
    """The value of the first key `name` anywhere in the payload, else _MISSING."""
    if isinstance(payload, dict):
        if name in payload:
            return payload[name]
        payload = list(payload.values())
    if isinstance(payload, list):
        for item in payload:
            found = _find(item, name)
            if found is not _MISSING:
                return found
    return _MISSING


def threshold_readings(now: datetime) -> list[Reading]:
    """The dashboard's metrics over the last hour (lib.monitoring, lib.alerts)."""
    payload = monitoring.dashboard(days=1, now=now)
    found = {alert["metric"]: alert for alert in payload["alerts"]}
    hour = payload["llm"]["1h"]
    values = {"error_rate": hour["error_rate"], "p95_latency_ms": hour["p95_latency_ms"],
              "openai_error_rate": hour["openai_error_rate"],
              "blocked_ips_per_hour": payload["blocked_ips"].get("last_hour")}
    known = {t.metric: t for t in alerts.THRESHOLDS}
    reported = {m: _find(payload, m) for m in OPTIONAL_METRICS}
    names = list(known) + [m for m in OPTIONAL_METRICS
                           if m in found or reported[m] is not _MISSING]
    names += [m for m in found if m not in names]
    readings = []
    for name in names:
        alert, threshold = found.get(name), known.get(name)
        unit = (alert or {}).get("unit") or (threshold.unit if threshold else "count")
        if alert:
            value, limit, level = alert["value"], alert["threshold"], alert["level"]
        else:
            value, level = values.get(name, reported.get(name)), "ok"
            value = value if isinstance(value, (int, float, str, type(None))) else None
            limit = _plain(threshold.warning) if threshold else None
        detail = f"{name} is {_shown(value, unit)} over the last hour"
        if limit is not None:
            detail += f" ({level if level != 'ok' else 'warning'} above {_shown(limit, unit)})"
        readings.append(Reading(name, level, value, limit, detail))
    return readings


_LAST_RUNS = """
SELECT j.job,
       (SELECT max(started_at) FROM cron_runs r
        WHERE r.job = j.job AND r.status = 'succeeded') AS last_success,
       (SELECT json_build_object('status', status, 'started_at', started_at, 'error', error)
        FROM cron_runs r WHERE r.job = j.job AND r.status <> 'skipped'
        ORDER BY started_at DESC LIMIT 1) AS last_run,
       (SELECT first_seen FROM alert_state s WHERE s.metric = 'cron:' || j.job) AS first_seen
FROM unnest(%(jobs)s::text[]) AS j(job)
"""


def cron_readings(now: datetime) -> list[Reading]:
    """`cron:<job>` for every job but this one (a run of this one is its own proof of life;
    Sentry's check-ins notice when it stops)."""
    jobs = [job for job in JOBS if job != JOB]
    readings = []
    for row in db.fetchall(_LAST_RUNS, {"jobs": jobs}):
        job, last_success, last_run = row["job"], row["last_success"], row["last_run"]
        due = Schedule(SCHEDULES[job]).previous(now - GRACE)
        watched_from = row["first_seen"] or now  # never alert on runs before we watched
        success = timestamp(last_success) if last_success else None
        if (last_success or watched_from) < due - _EARLY:
            level = "critical"
            detail = (f"cron {job} has not succeeded since its run due at {timestamp(due)} "
                      f"(last success: {success or 'never'})")
        elif last_run and (last_run["status"] == "failed" or (
                last_run["status"] == "running"
                and datetime.fromisoformat(last_run["started_at"]) < now - RUN_LIMIT)):
            level = "warning"
            detail = (f"cron {job}'s last run (started {last_run['started_at'][:19]}) failed: "
                      f"{(last_run['error'] or 'interrupted')[:200]}")
        else:
            level, detail = "ok", f"cron {job} last succeeded at {success or 'never (not due yet)'}"
        readings.append(Reading(f"cron:{job}", level, success, timestamp(due), detail))
    return readings


def reachability_readings() -> list[Reading]:
    readings = []
    for name, ping, failure in (("database", db.ping, DatabaseUnavailable),
                                ("redis", redis.ping, (redis.RedisUnavailable, ConfigError))):
        try:
            ping()
            readings.append(Reading(name, "ok", "reachable", None, f"{name} is reachable"))
        except failure as exc:
            readings.append(Reading(name, "critical", "unreachable", None,
                                    f"{name} is unreachable ({type(exc).__name__})"))
    return readings


def evaluate(now: datetime) -> list[Reading]:
    """Every metric's reading now. Raises DatabaseUnavailable when Postgres fails."""
    return reachability_readings() + threshold_readings(now) + cron_readings(now)


# --- state --------------------------------------------------------------------------------------

# A new metric starts at its level (a notice is queued unless it is ok). A change of level
# queues a notice for the new level (replacing one still queued); a critical level whose last
# notice was queued more than the renotify time ago, and is delivered, queues a reminder.
# Every SET expression reads the row as it was (Postgres semantics), so the order is free.
_OBSERVE = """
INSERT INTO alert_state AS s (metric, level, since, value, threshold, detail, evaluated_at,
                              notice, queued_at, pending)
VALUES (%(metric)s, %(level)s, %(now)s, %(value)s, %(threshold)s, %(detail)s, %(now)s,
        CASE WHEN %(level)s = 'ok' THEN NULL ELSE %(level)s END,
        CASE WHEN %(level)s = 'ok' THEN NULL ELSE %(now)s END,
        CASE WHEN %(level)s = 'ok' THEN '{}'::text[] ELSE %(channels)s::text[] END)
ON CONFLICT (metric) DO UPDATE SET
    value = EXCLUDED.value, threshold = EXCLUDED.threshold, detail = EXCLUDED.detail,
    evaluated_at = EXCLUDED.evaluated_at,
    level = EXCLUDED.level,
    since = CASE WHEN s.level <> EXCLUDED.level THEN EXCLUDED.since ELSE s.since END,
    notice = CASE WHEN s.level <> EXCLUDED.level THEN EXCLUDED.level
                  WHEN %(reminder)s THEN 'reminder' ELSE s.notice END,
    queued_at = CASE WHEN s.level <> EXCLUDED.level OR %(reminder)s THEN EXCLUDED.evaluated_at
                     ELSE s.queued_at END,
    pending = CASE WHEN s.level <> EXCLUDED.level OR %(reminder)s THEN %(channels)s::text[]
                   ELSE s.pending END,
    attempts = CASE WHEN s.level <> EXCLUDED.level OR %(reminder)s THEN 0 ELSE s.attempts END,
    last_error = CASE WHEN s.level <> EXCLUDED.level OR %(reminder)s THEN NULL
                      ELSE s.last_error END
"""
# The reminder condition, inlined into _OBSERVE (it reads the old row `s`).
_REMINDER = ("(s.level = 'critical' AND EXCLUDED.level = 'critical' AND s.pending = '{}' "
             "AND s.queued_at < %(now)s - %(renotify)s)")

_QUEUED = """
SELECT metric FROM alert_state
WHERE pending <> '{}' AND (claimed_until IS NULL OR claimed_until < now())
ORDER BY level = 'critical' DESC, metric
"""
# One notice at a time, just before it is sent: the claim only has to outlive one notice.
_CLAIM = """
UPDATE alert_state SET claimed_until = now() + %(claim)s, claim = %(token)s
WHERE metric = %(metric)s AND pending <> '{}'
  AND (claimed_until IS NULL OR claimed_until < now())
RETURNING metric, level, since, value, threshold, detail, notice, queued_at, pending
"""
# The notice may have been replaced while we sent (a run after our claim expired): then only
# the claim is released, and the new notice keeps every channel.
_SETTLE = """
UPDATE alert_state SET
    pending = CASE WHEN queued_at = %(queued_at)s
                   THEN ARRAY(SELECT c FROM unnest(pending) c WHERE c <> ALL(%(done)s::text[]))
                   ELSE pending END,
    notified_at = CASE WHEN %(delivered)s THEN now() ELSE notified_at END,
    attempts = attempts + 1, last_error = %(error)s, claimed_until = NULL, claim = NULL
WHERE metric = %(metric)s AND claim = %(token)s
"""


def configured_channels() -> list[str]:
    cfg = settings()
    channels = []
    if cfg.alert_webhook_url:
        channels.append("webhook")
    if cfg.alert_email:
        channels.append("email")
    if sentry_enabled():
        channels.append("sentry")
    return channels


def observe(readings: list[Reading], now: datetime) -> None:
    """Record each reading's level, queueing the notices it calls for. One statement per
    metric, each atomic on its row."""
    renotify = timedelta(hours=settings().alert_renotify_h)
    channels = configured_channels()
    sql = _OBSERVE.replace("%(reminder)s", _REMINDER)
    for reading in readings:
        db.execute(sql, {"metric": reading.metric, "level": reading.level, "now": now,
                         "value": Jsonb(_plain(reading.value)),
                         "threshold": Jsonb(_plain(reading.threshold)),
                         "detail": reading.detail[:500], "channels": channels,
                         "renotify": renotify})


def _restore_database_outage() -> None:
    """If run() notified a Postgres outage, record it as the database's state, so this run
    (which reached Postgres) sends the recovery notice."""
    try:
        since = redis.call(redis.client().getdel, DATABASE_DOWN_KEY)
    except (redis.RedisUnavailable, ConfigError):
        return
    if since:
        db.execute("""
            INSERT INTO alert_state AS s (metric, level, since, value, detail, notice, queued_at,
                                          notified_at)
            VALUES ('database', 'critical', %(since)s, '"unreachable"', 'database was unreachable',
                    'critical', %(since)s, %(since)s)
            ON CONFLICT (metric) DO UPDATE SET level = 'critical', since = EXCLUDED.since,
                notice = 'critical', queued_at = EXCLUDED.since, pending = '{}',
                notified_at = EXCLUDED.since
            WHERE s.level <> 'critical'""", {"since": since})


def current_state() -> list[dict]:
    """Every metric's row of alert_state, by metric."""
    return db.fetchall("SELECT * FROM alert_state ORDER BY metric")


# --- notices ------------------------------------------------------------------------------------

def dashboard_url() -> str:
    return f"{settings().app_url}/admin/monitoring"


def compose(row: dict) -> dict:
    """The JSON a notice carries (the webhook's body; the email and Sentry message say the
    same): Slack's `text` plus metric, value, threshold, level, since and the dashboard URL."""
    notice, level = row["notice"], row["level"]
    since = row["since"]
    since_text = timestamp(since) if isinstance(since, datetime) else since
    if notice == "ok":
        headline = f"[OK] {row['metric']} is back to ok"
    elif notice == "reminder":
        headline = f"[{level.upper()}, still] {row['metric']}"
    elif notice == "test":
        headline = f"[TEST] {row['metric']}"
    else:
        headline = f"[{level.upper()}] {row['metric']}"
    text = f"{headline}: {row['detail']} (since {since_text}). Dashboard: {dashboard_url()}"
    return {"text": text, "title": headline, "metric": row["metric"], "value": row["value"],
            "threshold": row["threshold"], "level": level, "since": since_text,
            "notice": notice, "dashboard_url": dashboard_url()}


class Delivery:
    """The channels of one run: one SMTP session and one HTTP client for all its notices. A
    channel whose server can't be reached is not tried again in the same run."""

    def __init__(self):
        self._mailer: Mailer | None = None
        self._http: httpx.Client | None = None
        self._down: dict[str, str] = {}

    def __enter__(self) -> "Delivery":
        return self

    def __exit__(self, *exc) -> None:
        if self._mailer is not None:
            self._mailer.close()
        if self._http is not None:
            self._http.close()

    def send(self, channel: str, notice: dict) -> str | None:
        """Deliver `notice` on `channel`: None when it was delivered (or may have been: an
        email whose outcome is unknown is not sent twice), else the reason it wasn't (safe to
        store: never the webhook URL or SMTP credentials)."""
        if channel in self._down:
            return self._down[channel]
        try:
            return {"webhook": self._webhook, "email": self._email,
                    "sentry": self._sentry}[channel](notice)
        except ConfigError as exc:
            return str(exc)[:200]

    def _webhook(self, notice: dict) -> str | None:
        url = settings().alert_webhook_url
        if not url:
            raise ConfigError("ALERT_WEBHOOK_URL is not set")
        if self._http is None:
            self._http = httpx.Client(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        try:
            response = self._http.post(url, json=notice)
        except httpx.HTTPError as exc:
            self._down["webhook"] = f"webhook unreachable: {type(exc).__name__}"
            return self._down["webhook"]
        if not response.is_success:
            return f"webhook answered HTTP {response.status_code}"
        return None

    def _email(self, notice: dict) -> str | None:
        cfg = settings()
        if not cfg.alert_email:
            raise ConfigError("ALERT_EMAIL is not set")
        if not cfg.smtp_url or not cfg.email_from:
            raise ConfigError("ALERT_EMAIL needs SMTP_URL and EMAIL_FROM")
        if self._mailer is None:
            self._mailer = Mailer(cfg.smtp_url, parseaddr(cfg.email_from)[1])
        message = EmailMessage()
        message["Subject"] = notice["title"][:150]
        message["From"] = cfg.email_from
        message["To"] = cfg.alert_email
        fields = "\n".join(f"{key}: {json.dumps(notice[key]) if key in ('value', 'threshold') else notice[key]}"
                           for key in ("metric", "level", "value", "threshold", "since", "notice",
                                       "dashboard_url"))
        message.set_content(f"{notice['text']}\n\n{fields}\n")
        try:
            self._mailer.send(message, cfg.alert_email)
        except DeliveryFailed as exc:
            if exc.unreachable:
                self._down["email"] = f"email: {exc.reason}"
            return f"email: {exc.reason}"
        except DeliveryUnknown:
            log("alert_email_outcome_unknown", level="warning", metric=notice["metric"])
        return None

    def _sentry(self, notice: dict) -> str | None:
        if capture_alert(notice["text"], notice["level"], metric=notice["metric"],
                         alert_level=notice["level"], notice=notice["notice"]):
            return None
        return "sentry did not take the message"


def send_pending(budget: cron.Budget) -> dict:
    """Send every queued notice (critical ones first, while the budget lasts) to the channels
    it still has to reach, each claimed just before it is sent. Returns {"notices": sent,
    "delivered": channel deliveries, "failed": channel failures}."""
    token = str(uuid.uuid4())
    configured = set(configured_channels())
    counts = {"notices": 0, "delivered": 0, "failed": 0}
    with Delivery() as delivery:
        for queued in db.fetchall(_QUEUED):
            if not budget.keep_going():
                break  # still queued: the next run sends it
            row = db.fetchone(_CLAIM, {"claim": CLAIM, "token": token, "metric": queued["metric"]})
            if row is None:  # another run took it meanwhile
                continue
            counts["notices"] += 1
            done, errors = [], []
            notice = compose(row)
            for channel in row["pending"]:
                if channel not in configured:  # unset since it was queued
                    done.append(channel)
                    continue
                error = delivery.send(channel, notice)
                if error is None:
                    done.append(channel)
                    counts["delivered"] += 1
                else:
                    errors.append(f"{channel}: {error}"[:300])
                    counts["failed"] += 1
            log("alert_notice", metric=row["metric"], level=row["level"], notice=row["notice"],
                delivered=done, failed=len(errors))
            db.execute(_SETTLE, {"metric": row["metric"], "token": token,
                                 "queued_at": row["queued_at"], "done": done,
                                 "delivered": any(c in configured for c in done),
                                 "error": "; ".join(errors)[:500] or None})
    return counts


def evaluate_and_notify(budget: cron.Budget, now: datetime | None = None) -> dict:
    """One evaluation: record every metric's level, then send the notices that are due.
    Safe to run concurrently with itself (claims), though the cron lock already prevents it."""
    now = now or datetime.now(timezone.utc)
    _restore_database_outage()
    readings = evaluate(now)
    observe(readings, now)
    counts = send_pending(budget)
    levels = {level: sorted(r.metric for r in readings if r.level == level)
              for level in _LEVELS[1:]}
    return {"complete": True, "evaluated": len(readings), **levels, **counts}


def _notify_database_down(now: datetime) -> None:
    """Postgres can't be reached, so nothing can be recorded: send one `database` critical
    notice per renotify period, deduplicated with a Redis key (no Redis either: nothing is
    sent; Sentry's check-ins still see the runs fail). Never raises."""
    renotify_s = int(settings().alert_renotify_h * 3600)
    try:
        first = redis.call(redis.client().set, DATABASE_DOWN_KEY, timestamp(now), nx=True,
                           ex=renotify_s)
    except (redis.RedisUnavailable, ConfigError):
        return
    if not first:
        return
    notice = compose({"metric": "database", "level": "critical", "since": now,
                      "value": "unreachable", "threshold": None, "notice": "critical",
                      "detail": "Postgres is unreachable; the alerts cron can't run"})
    with Delivery() as delivery:
        for channel in configured_channels():
            error = delivery.send(channel, notice)
            log("alert_notice", metric="database", level="critical", channel=channel,
                failed=error is not None)


def run() -> dict:
    """One run of the job under its lock (see lib.jobs.cron.run_exclusively)."""
    try:
        return cron.run_exclusively(JOB, evaluate_and_notify)
    except DatabaseUnavailable:
        _notify_database_down(datetime.now(timezone.utc))
        raise


def send_test() -> dict[str, str]:
    """`ops alerts test`: a test notice to every configured channel, right away (no state).
    {channel: "sent" | the reason it failed} for each of CHANNELS."""
    notice = compose({"metric": "test", "level": "warning", "since": datetime.now(timezone.utc),
                      "value": None, "threshold": None, "notice": "test",
                      "detail": "a test notification from `ops alerts test`"})
    configured = configured_channels()
    results = {}
    with Delivery() as delivery:
        for channel in CHANNELS:
            if channel not in configured:
                results[channel] = "not configured"
                continue
            results[channel] = delivery.send(channel, notice) or "sent"
    return results
