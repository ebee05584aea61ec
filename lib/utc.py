"""UTC calendar helpers shared by the routes, the jobs and the logs: one ISO week format, one
timestamp format. Pure (stdlib datetime only)."""

from datetime import date, datetime, timezone


def iso_week(day: date | datetime) -> str:
    """'2026-W49': the ISO week of `day` (an aware datetime is taken in UTC first)."""
    if isinstance(day, datetime):
        day = day.astimezone(timezone.utc)
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def timestamp(moment: datetime | None = None, timespec: str = "seconds") -> str:
    """'2026-12-02T05:12:18Z' (or with `timespec="milliseconds"`): `moment`, default now, in UTC."""
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
