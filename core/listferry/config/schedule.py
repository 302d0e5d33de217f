"""When a tenant's runs are due: a time of day or a cron expression, in the tenant's zone.

``"02:00"`` is every day at 02:00 (``"02:00:30"`` half a minute later); ``"30 2 * * 1-5"``
is a cron expression (minute, hour, day of month, month, day of week; ``*``, lists
``1,15``, ranges ``1-5``, steps ``*/10`` and ``8-18/2``; day-of-week 0 or 7 is Sunday;
month and day names ``jan``, ``mon`` ...); ``@daily``, ``@hourly``, ``@weekly``,
``@monthly`` are their usual shorthands. As in cron, when both day fields are restricted
a day matching either is due. Times are wall-clock times in the tenant's zone: on the
night the clocks go forward, a time that does not exist runs at the same offset as
before the change (02:30 becomes 03:30); on the night they go back, a time that happens
twice runs once, the first time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from listferry.errors import ListferryError

SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
#: (name, lowest, highest, names) of the five fields.
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)


class ScheduleError(ListferryError):
    """A schedule or a time zone that cannot be read."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``, ``UTC``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _number(text: str, low: int, names: tuple[str, ...], field: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise ScheduleError(f"{field}: {text!r} is not a number")
    return int(text)


def _field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{field}: an empty item in {text!r}")
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = (_number(v, low, names, field) for v in (start, end))
        else:
            first = _number(body, low, names, field)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high):
            raise ScheduleError(f"{field}: {part!r} is outside {low}-{high}")
        if first > last:
            raise ScheduleError(f"{field}: the range {part!r} runs backwards")
        values.update(range(first, last + 1, step))
    if field == "day of week" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the minutes, hours, days and months it is due, in ``zone``."""

    text: str
    zone: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"
    second: int = 0

    @classmethod
    def parse(cls, text: str, zone_name: str = "UTC") -> Schedule:
        """Read ``"HH:MM"``, a shorthand or a five-field cron expression."""
        tz = zone(zone_name)
        spec = text.strip()
        second = 0
        if match := _TIME_OF_DAY.match(spec):
            spec = f"{int(match.group(2))} {int(match.group(1))} * * *"
            second = int(match.group(3) or 0)
        spec = SHORTHANDS.get(spec.lower(), spec)
        parts = spec.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"schedule {text!r} is neither a time of day ('02:00') nor a cron expression "
                "of five fields ('30 2 * * 1-5')"
            )
        try:
            fields = [
                _field(part, name, low, high, names)
                for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
            ]
        except ScheduleError as exc:
            raise ScheduleError(f"schedule {text!r}: {exc}") from None
        return cls(
            text,
            tz,
            *fields,
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
            second=second,
        )

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule names the minute of ``moment`` (an aware time), read on
        its own clock."""
        local = moment.astimezone(self.zone)
        return (
            local.minute in self.minutes
            and local.hour in self.hours
            and self._day_matches(local.date())
        )

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week  # cron: both restricted means either

    def next_after(self, moment: datetime) -> datetime:
        """The first time this schedule is due strictly after ``moment``, as UTC."""
        if moment.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = moment.astimezone(self.zone)
        day = local.date()
        for _ in range(366 * 8 + 1):  # leap days on a Monday come round in 28 years at most
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = datetime.combine(day, time(hour, minute, self.second), self.zone)
                        due = wall.astimezone(UTC)
                        if due > moment:
                            return due
            day += timedelta(days=1)
        raise ScheduleError(f"schedule {self.text!r} is never due")

    def previous_at_or_before(self, moment: datetime, within: timedelta) -> datetime | None:
        """The last time this schedule was due at or before ``moment``, no further back
        than ``within``; ``None`` when it was not due in that window."""
        start = moment - within - timedelta(minutes=1)
        found = None
        due = self.next_after(start)
        while due <= moment:
            found = due
            due = self.next_after(due)
        return found
