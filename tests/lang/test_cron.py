"""Cron expressions of `schedule('...')`: the day fields combine as cron combines them.

When both day fields are restricted (neither is `*`), a day matches if either matches;
when one is `*`, only the other counts. The explicit table pins the cases users write;
the property test compares generated expressions with croniter: whether a random minute
fires, and the first ten firing days of 2028-2029 (a leap year and a common one).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sqlifier.lang.cron import CronSchedule, parse_cron


def fires(expression: str, when: datetime) -> bool:
    schedule = parse_cron(expression)
    weekday = when.isoweekday() % 7  # cron: Sunday = 0
    return schedule.matches(when.minute, when.hour, when.day, when.month, weekday)


# 2027-03-01 is a Monday; 2027-03-02 a Tuesday; 2027-03-08 a Monday; 2027-03-13 a Saturday.
MON_1ST = datetime(2027, 3, 1, 9, 0)
TUE_2ND = datetime(2027, 3, 2, 9, 0)
MON_8TH = datetime(2027, 3, 8, 9, 0)
SAT_13TH = datetime(2027, 3, 13, 9, 0)
SUN_14TH = datetime(2027, 3, 14, 9, 0)


@pytest.mark.parametrize(
    ("expression", "when", "expected"),
    [
        # both restricted: the 1st OR any Monday
        ("0 9 1 * mon", MON_1ST, True),
        ("0 9 1 * mon", MON_8TH, True),
        ("0 9 2 * mon", TUE_2ND, True),
        ("0 9 1 * mon", TUE_2ND, False),
        ("0 9 1,15 * sat,sun", SAT_13TH, True),
        ("0 9 1,15 * sat,sun", TUE_2ND, False),
        ("0 9 13 * fri", SAT_13TH, True),
        # a restriction that covers every value is still a restriction
        ("0 9 1-31 * mon", TUE_2ND, True),
        ("0 9 */1 * mon", TUE_2ND, True),
        ("0 9 1 * 0-7", TUE_2ND, True),
        # one field `*`: only the other counts
        ("0 9 * * mon", MON_8TH, True),
        ("0 9 * * mon", TUE_2ND, False),
        ("0 9 1 * *", MON_1ST, True),
        ("0 9 1 * *", MON_8TH, False),
        ("0 9 * * *", SUN_14TH, True),
        # 0 and 7 are both Sunday
        ("0 9 * * 7", SUN_14TH, True),
        ("0 9 * * 0", SUN_14TH, True),
        # the day fields never widen the minute, the hour or the month
        ("0 9 1 * mon", MON_8TH.replace(hour=10), False),
        ("0 9 1 * mon", MON_8TH.replace(minute=1), False),
        ("0 9 1 feb mon", MON_8TH, False),
    ],
)
def test_day_of_month_or_day_of_week_when_both_are_restricted(
    expression: str, when: datetime, expected: bool
) -> None:
    assert fires(expression, when) is expected


@pytest.mark.parametrize(
    ("expression", "days_any", "weekdays_any"),
    [
        ("0 9 1 * mon", False, False),
        ("0 9 * * mon", True, False),
        ("0 9 1 * *", False, True),
        ("0 9 */1 * *", False, True),
        ("0 9 * * *", True, True),
    ],
)
def test_a_day_field_is_unrestricted_only_when_written_star(
    expression: str, days_any: bool, weekdays_any: bool
) -> None:
    schedule = parse_cron(expression)
    assert (schedule.days_any, schedule.weekdays_any) == (days_any, weekdays_any)


def test_an_empty_schedule_never_fires() -> None:
    empty = CronSchedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset())
    assert not empty.matches(0, 9, 1, 3, 1)


# --- against croniter --------------------------------------------------------------------

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def spelled(value: int, names: tuple[str, ...], first: int) -> st.SearchStrategy[str]:
    """A value as a number, or (where the field has names) as a name in any case."""
    if not names or not first <= value < first + len(names):
        return st.just(str(value))
    name = names[value - first]
    return st.sampled_from([str(value), name, name.upper(), name.capitalize()])


@st.composite
def items(draw: st.DrawFn, low: int, high: int, names: tuple[str, ...], first: int) -> str:
    """One list item: `*/s`, `v`, `v/s`, `a-b` or `a-b/s` (sqlifier's syntax)."""
    shape = draw(st.sampled_from(["star-step", "value", "value-step", "range", "range-step"]))
    step = draw(st.integers(1, high - low + 1))
    if shape == "star-step":
        return f"*/{step}"
    a = draw(st.integers(low, high))
    text = draw(spelled(a, names, first))
    if shape == "value":
        return text
    if shape == "value-step":
        # sqlifier's weekday `2/s` runs to 7 (Sunday again), croniter's stops at 6
        assume(names is not WEEKDAYS)
        return f"{text}/{step}"
    b = draw(st.integers(a, high))
    assume(a != b)  # croniter reads an equal range `5-5` as the whole field; cron as 5
    ranged = f"{text}-{draw(spelled(b, names, first))}"
    return ranged if shape == "range" else f"{ranged}/{step}"


def fields(
    low: int, high: int, names: tuple[str, ...] = (), first: int = 0
) -> st.SearchStrategy[str]:
    """`*` alone, or a list of one to three items (croniter misreads `*` inside a list)."""
    listed = st.lists(items(low, high, names, first), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), listed)


expressions = st.tuples(
    fields(0, 59),
    fields(0, 23),
    fields(1, 31),
    fields(1, 12, MONTHS, 1),
    fields(0, 7, WEEKDAYS, 0),
).map(" ".join)

START = datetime(2027, 12, 31, 23, 59)
END = datetime(2030, 1, 1)


def fire_days(schedule: CronSchedule) -> list[datetime]:
    """The first fire time of each firing day after START, up to ten, before END."""
    found: list[datetime] = []
    day = START + timedelta(minutes=1)
    while day < END and len(found) < 10:
        weekday = day.isoweekday() % 7
        if day.month in schedule.months and schedule.matches_day(day.day, weekday):
            found.append(day.replace(hour=min(schedule.hours), minute=min(schedule.minutes)))
        day += timedelta(days=1)
    return found


def croniter_days(expression: str) -> list[datetime]:
    """croniter's fire times, the first of each firing day after START, up to ten, before END."""
    found: list[datetime] = []
    after = START
    while len(found) < 10:
        fired = croniter(expression, after).get_next(datetime)
        if fired >= END:
            break
        found.append(fired)
        after = fired.replace(hour=23, minute=59)
    return found


@given(expressions, st.datetimes(datetime(2027, 1, 1), datetime(2029, 12, 31)))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_schedules_fire_when_croniter_says_cron_fires(expression: str, moment: datetime) -> None:
    schedule = parse_cron(expression)
    _, _, day_text, _, weekday_text = expression.split()
    # croniter reads a day field that covers every value as `*` when the other day field
    # holds a `*` anywhere (`1-31` beside `*/2`); cron reads it as written, a restriction.
    assume(not (len(schedule.days) == 31 and not schedule.days_any and "*" in weekday_text))
    assume(not (len(schedule.weekdays) == 7 and not schedule.weekdays_any and "*" in day_text))
    moment = moment.replace(second=0, microsecond=0)
    assert fires(expression, moment) == croniter.match(expression, moment), moment
    assert fire_days(schedule) == croniter_days(expression)


# --- a schedule that can never fire (a warning of `check`) ---------------------------------


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("0 0 31 2 *", "February has no day 31"),
        ("0 0 30,31 2 *", "February has no day 30 or 31"),
        ("0 0 31 4,6 *", "April, June have no day 31"),
        ("0 0 31 2 mon", None),  # with a weekday as well: every Monday of February (OR)
        ("0 0 29 2 *", None),  # leap years
        ("0 0 30,31 2,4 *", None),  # April 30th
        ("0 0 * 2 *", None),
        ("0 0 31 */2 *", None),  # January
    ],
)
def test_a_schedule_that_never_fires_says_why(expression: str, why: str | None) -> None:
    assert parse_cron(expression).never_fires() == why


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    days=st.sets(st.integers(28, 31), min_size=1, max_size=2),
    months=st.sets(st.integers(1, 12), min_size=1, max_size=3),
)
def test_never_fires_agrees_with_croniter(days: set[int], months: set[int]) -> None:
    expression = f"0 0 {','.join(map(str, sorted(days)))} {','.join(map(str, sorted(months)))} *"
    try:
        croniter(expression, datetime(2027, 1, 1)).get_next(datetime)
        fires_some_day = True
    except Exception:  # croniter: CroniterBadDateError, no such date in the years it searches
        fires_some_day = False
    assert (parse_cron(expression).never_fires() is None) == fires_some_day
