"""The weekly reminder emails (cron `weekly-reminders`).

Who: users with an email who have not opted out, whose organization can still generate
(TEAM/AGENCY not canceled/unpaid/incomplete_expired, or a TRIAL that has not ended), and who
made no generation in the last 7 days.

At most one reminder per user and ISO week: before sending, the job claims the user's
`reminder_deliveries (user_id, iso_week)` row (insert, or take over a 'failed' one) in one
atomic statement, so a re-run, a double delivery or two overlapping runs can never both send.
The row then becomes 'sent' or 'failed' (retried by the next run). When the connection broke
after the message was handed over, the row stays 'sending' and is never retried: a possibly
delivered reminder is not sent again.
"""

import html
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import parseaddr

from lib import db
from lib.config import settings
from lib.generation import quota
from lib.jobs import WEEKLY_REMINDERS, cron
from lib.jobs.mailer import DeliveryFailed, DeliveryUnknown, Mailer
from lib.observability import log
from lib.utc import iso_week
from lib.jobs.unsubscribe import unsubscribe_url

JOB = WEEKLY_REMINDERS
PAGE_SIZE = 100
INACTIVE_DAYS = 7
TRIAL_ENDING_DAYS = 7

# The targeting rules, shared by the query that picks recipients and the one that counts
# those already reminded this week.
_TARGETS = """
FROM users u JOIN organizations o ON o.id = u.organization_id
WHERE coalesce(u.email, '') <> '' AND NOT u.reminders_opt_out
  AND ((o.plan IN ('TEAM', 'AGENCY') AND (o.subscription_status IS NULL
            OR o.subscription_status NOT IN ('canceled', 'unpaid', 'incomplete_expired')))
       OR (o.plan = 'TRIAL' AND o.trial_ends_at > %(now)s))
  AND NOT EXISTS (SELECT 1 FROM generations g
                  WHERE g.user_id = u.id AND g.created_at > %(now)s - make_interval(days => %(inactive_days)s))
"""
_RECIPIENTS = """
SELECT u.id, u.email, u.organization_id, o.plan, o.trial_ends_at
""" + _TARGETS + """
  AND u.id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM reminder_deliveries r
                  WHERE r.user_id = u.id AND r.iso_week = %(week)s AND r.status <> 'failed')
ORDER BY u.id
LIMIT %(limit)s
"""
_ALREADY_REMINDED = """
SELECT count(*) AS n
""" + _TARGETS + """
  AND EXISTS (SELECT 1 FROM reminder_deliveries r
              WHERE r.user_id = u.id AND r.iso_week = %(week)s AND r.status <> 'failed')
"""
_CLAIM = """
INSERT INTO reminder_deliveries AS r (user_id, iso_week, status) VALUES (%s, %s, 'sending')
ON CONFLICT (user_id, iso_week) DO UPDATE SET status = 'sending', error = NULL
    WHERE r.status = 'failed'
RETURNING user_id
"""
_SETTLE = """
UPDATE reminder_deliveries SET status = %s, error = %s,
       sent_at = CASE WHEN %s = 'sent' THEN now() END
WHERE user_id = %s AND iso_week = %s AND status = 'sending'
"""
def compose(recipient: dict, used: int, now: datetime) -> EmailMessage:
    """The reminder for one recipient: plain text and HTML with the same content."""
    limit = settings().quotas[recipient["plan"]]
    remaining = max(limit - used, 0)
    lines = [f"You have used {used} of your {limit} generations this month; {remaining} remain."]
    trial_end = recipient["trial_ends_at"]
    if recipient["plan"] == "TRIAL" and trial_end and trial_end <= now + timedelta(days=TRIAL_ENDING_DAYS):
        lines.append(f"Your trial ends on {trial_end.astimezone(timezone.utc):%A %d %B %Y} (UTC).")
    app, unsubscribe = settings().app_url, unsubscribe_url(recipient["id"])
    text = "\n\n".join(["Hello,", "You haven't generated anything on Ascendos this week.", *lines,
                        f"Pick up where you left off: {app}",
                        f"No more reminders: {unsubscribe}"]) + "\n"
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    body = (f"<p>Hello,</p><p>You haven't generated anything on Ascendos this week.</p>{paragraphs}"
            f'<p><a href="{html.escape(app)}">Pick up where you left off</a></p>'
            f'<p style="font-size:small"><a href="{html.escape(unsubscribe)}">Unsubscribe from these reminders</a></p>')
    message = EmailMessage()
    message["Subject"] = "Your Ascendos week"
    message["From"] = settings().email_from
    message["To"] = recipient["email"]
    message["List-Unsubscribe"] = f"<{unsubscribe}>"
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(f"<!doctype html><html><body>{body}</body></html>", subtype="html",
                            cte="quoted-printable")
    return message


def _plain_address(email: str) -> str | None:
    """The address itself when `email` is one plain, header-safe address; else None."""
    name, address = parseaddr(email)
    if (name or address != email.strip() or address.count("@") != 1 or len(address) > 254
            or not address.isascii() or any(c in address for c in " \t\r\n<>,;\"()")):
        return None
    return address


def _claim(user_id: str, week: str) -> bool:
    return db.fetchone(_CLAIM, (user_id, week)) is not None


def _settle(user_id: str, week: str, status: str, error: str | None) -> None:
    db.execute(_SETTLE, (status, error, status, user_id, week))


def send_weekly_reminders(budget: cron.Budget, now: datetime | None = None) -> dict:
    """Send this ISO week's reminders to every target not yet reminded, within `budget`.

    Idempotent per (user, ISO week) and safe to run concurrently (see the module docstring).
    One refused address only fails that recipient; an unreachable SMTP server stops the run.
    Returns {"sent", "skipped" (already reminded this week), "failed", "complete"}, or
    {"email": "not configured", "skipped": "email not configured", "complete": True, ...}
    without sending or recording anything when SMTP_URL or EMAIL_FROM is unset (nothing is
    left to do, so the run is complete: `ops cron --until-complete` stops).
    """
    cfg, now = settings(), now or datetime.now(timezone.utc)
    week = iso_week(now)
    params = {"now": now, "week": week, "inactive_days": INACTIVE_DAYS}
    skipped = db.fetchone(_ALREADY_REMINDED, params)["n"]
    counts = {"sent": 0, "skipped": skipped, "failed": 0}
    if not cfg.smtp_url or not cfg.email_from:
        return {"email": "not configured", **counts, "skipped": "email not configured",
                "complete": True}
    after, complete = "", True
    with Mailer(cfg.smtp_url, parseaddr(cfg.email_from)[1]) as mailer:
        while complete:
            page = db.fetchall(
                _RECIPIENTS, {**params, "after": after, "limit": PAGE_SIZE})
            if not page:
                break
            usage = db.run(lambda conn: quota.used_this_month(
                conn, list({row["organization_id"] for row in page}), now))
            for recipient in page:
                if not budget.keep_going():
                    complete = False
                    break
                after = recipient["id"]
                outcome = _deliver(mailer, recipient, usage.get(recipient["organization_id"], 0), week, now)
                if outcome == "unreachable":
                    counts["failed"] += 1
                    complete = False
                    break
                if outcome:
                    counts[outcome] += 1
    return {**counts, "complete": complete}


def _deliver(mailer: Mailer, recipient: dict, used: int, week: str, now: datetime) -> str | None:
    """Claim, send, settle one reminder. Returns 'sent', 'failed', 'unreachable' (failed,
    and the server can't be reached) or None (another run claimed it first)."""
    user_id = recipient["id"]
    if not _claim(user_id, week):
        return None
    address = _plain_address(recipient["email"])
    if address is None:
        _settle(user_id, week, "failed", "not a single plain email address")
        return "failed"
    try:
        mailer.send(compose(recipient, used, now), address)
    except DeliveryFailed as exc:
        _settle(user_id, week, "failed", exc.reason)
        log("reminder_failed", level="warning", user_id=user_id, reason=exc.reason)
        return "unreachable" if exc.unreachable else "failed"
    except DeliveryUnknown as exc:
        error = f"outcome unknown ({exc}); not retried"
        db.execute(
            "UPDATE reminder_deliveries SET error = %s WHERE user_id = %s AND iso_week = %s",
            (error, user_id, week))
        log("reminder_outcome_unknown", level="warning", user_id=user_id)
        return "failed"
    _settle(user_id, week, "sent", None)
    return "sent"


def run() -> dict:
    """One run of the job under its lock (see lib.jobs.cron.run_exclusively)."""
    return cron.run_exclusively(JOB, send_weekly_reminders)
