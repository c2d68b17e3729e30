"""Cron expressions for `schedule('...')`: five fields, parsed into sets of matching values.

The two day fields follow cron (POSIX crontab, Vixie cron, croniter): when both are
restricted, that is neither is written `*`, a day matches if *either* matches, so
`0 9 1 * mon` fires on the 1st of each month and on every Monday. When one of them is `*`,
only the other counts (`0 9 * * mon` is Mondays only). A field is restricted by how it is
written, not by what it covers: `1-31` and `*/1` are restricted, `*` alone is not.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CronError", "CronSchedule", "parse_cron"]

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i
            for i, m in enumerate(
                [
                    "jan",
                    "feb",
                    "mar",
                    "apr",
                    "may",
                    "jun",
                    "jul",
                    "aug",
                    "sep",
                    "oct",
                    "nov",
                    "dec",
                ],
                1,
            )
        },
    ),
    (
        "day of week",
        0,
        7,
        {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
    ),
)


class CronError(ValueError):
    """A cron expression that cannot be read; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """The matching minutes, hours, days, months and weekdays (0 = Sunday).

    `days_any` and `weekdays_any` say that the field was written `*`; when neither was,
    a day matches if its day of month or its weekday does (see the module docstring).
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_any: bool = False
    weekdays_any: bool = False

    def matches(self, minute: int, hour: int, day: int, month: int, weekday: int) -> bool:
        """Whether the minute of that date fires; `weekday` counts from Sunday = 0."""
        return (
            minute in self.minutes
            and hour in self.hours
            and month in self.months
            and self.matches_day(day, weekday)
        )

    def matches_day(self, day: int, weekday: int) -> bool:
        """Day of month OR weekday when both are restricted; otherwise the restricted one."""
        if self.days_any or self.weekdays_any:
            return day in self.days and weekday in self.weekdays
        return day in self.days or weekday in self.weekdays

    def never_fires(self) -> str | None:
        """Why no date ever matches (`0 0 31 2 *`: February has no day 31), or None."""
        if self.days_any or not self.weekdays_any:
            return None  # every day of the month, or (OR) every matching weekday
        if any(day <= _DAYS_IN[month] for month in self.months for day in self.days):
            return None
        days = " or ".join(str(day) for day in sorted(self.days))
        months = ", ".join(_MONTH_NAMES[month - 1] for month in sorted(self.months))
        return f"{months} {'has' if len(self.months) == 1 else 'have'} no day {days}"


# The longest each month gets (February in a leap year): what a schedule can ever match.
_DAYS_IN = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def parse_cron(text: str) -> CronSchedule:
    """Parse `*/5 9-17 * * mon-fri`; raise CronError saying what is wrong."""
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"a cron expression has 5 fields (minute hour day month weekday), found {len(parts)}"
        )
    sets = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return CronSchedule(
        sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*"
    )


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not _digits(step_text) or int(step_text) == 0:
                raise CronError(f"the step in the {name} field '{item}' must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, name, low, high, names), _value(last, name, low, high, names)
            if start > end:
                raise CronError(f"the range '{base}' in the {name} field runs backwards")
        else:
            start = _value(base, name, low, high, names)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not _digits(text):
        raise CronError(f"'{text}' is not a valid {name} (expected {low}-{high})")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{value} is out of range for the {name} field (expected {low}-{high})")
    return value


def _digits(text: str) -> bool:
    """ASCII digits only, and few of them (`isdigit` also accepts '²' and '٣')."""
    return 0 < len(text) <= 4 and text.isascii() and text.isdigit()
