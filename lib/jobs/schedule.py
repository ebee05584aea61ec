"""The crontab schedules of lib.jobs.SCHEDULES, read without croniter (a dev-only package).

Five fields, UTC, as Vercel reads them: minute hour day-of-month month day-of-week, each `*`,
a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those. Day of week is
0-6 from Sunday (7 is Sunday too). As in Vixie cron, when both day fields are restricted a
day matching either one fires. Names (`MON`, `JAN`) and Quartz extensions are not accepted.
"""

from datetime import datetime, timedelta

_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MAX_DAYS_BACK = 366 * 5  # "0 0 29 2 *" fires once in four years; nothing sane is rarer


class InvalidSchedule(ValueError):
    pass


def _field(text: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                start, end = lo, hi
            elif "-" in span:
                start, end = (int(x) for x in span.split("-", 1))
            else:
                start = end = int(span)
        except ValueError:
            raise InvalidSchedule(f"bad crontab field {text!r}") from None
        if step < 1 or not lo <= start <= end <= hi:
            raise InvalidSchedule(f"crontab field {text!r} is out of {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Schedule:
    """One parsed crontab line. `previous(moment)` is the last fire at or before `moment`."""

    def __init__(self, text: str):
        parts = text.split()
        if len(parts) != 5:
            raise InvalidSchedule(f"a crontab has five fields, not {len(parts)}: {text!r}")
        self.text = text
        self.minutes, self.hours, self.days, self.months, weekdays = (
            _field(part, lo, hi) for part, (lo, hi) in zip(parts, _FIELDS))
        self.weekdays = frozenset(day % 7 for day in weekdays)
        self._any_day, self._any_weekday = parts[2] == "*", parts[4] == "*"

    def _fires_on(self, moment: datetime) -> bool:
        if moment.month not in self.months:
            return False
        day = moment.day in self.days
        weekday = (moment.isoweekday() % 7) in self.weekdays
        if self._any_day or self._any_weekday:
            return day and weekday
        return day or weekday

    def previous(self, moment: datetime) -> datetime:
        """The latest fire time at or before `moment` (same tzinfo, seconds dropped)."""
        moment = moment.replace(second=0, microsecond=0)
        day = moment.replace(hour=0, minute=0)
        for back in range(_MAX_DAYS_BACK):
            candidate = day - timedelta(days=back)
            if not self._fires_on(candidate):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    fire = candidate.replace(hour=hour, minute=minute)
                    if fire <= moment:
                        return fire
        raise InvalidSchedule(f"{self.text!r} never fires")

    def period(self, moment: datetime) -> timedelta:
        """The gap between the last two fires before `moment`."""
        last = self.previous(moment)
        return last - self.previous(last - timedelta(minutes=1))
