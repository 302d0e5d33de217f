"""Schedules: times of day and cron expressions, in the tenant's zone, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listferry.config.schedule import Schedule, ScheduleError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_time_of_day_is_every_day_at_that_time_in_the_tenants_zone() -> None:
    nightly = Schedule.parse("02:00", "Europe/Berlin")
    assert nightly.next_after(at("2026-11-30T00:59:00+00:00")) == at("2026-11-30T01:00:00+00:00")
    assert nightly.next_after(at("2026-11-30T01:00:00+00:00")) == at("2026-12-01T01:00:00+00:00")
    assert Schedule.parse("2:05").next_after(at("2026-11-30T03:00:00Z")) == at(
        "2026-12-01T02:05:00Z"
    )


def test_the_night_the_clocks_go_forward_a_missing_time_runs_an_hour_later_once() -> None:
    nightly = Schedule.parse("02:30", "Europe/Berlin")
    first = nightly.next_after(at("2026-03-28T12:00:00Z"))
    assert first.astimezone(nightly.zone).isoformat() == "2026-03-29T03:30:00+02:00"
    second = nightly.next_after(first)
    assert second.astimezone(nightly.zone).isoformat() == "2026-03-30T02:30:00+02:00"


def test_the_night_the_clocks_go_back_a_doubled_time_runs_once() -> None:
    hourly = Schedule.parse("0 * * * *", "Europe/Berlin")
    start = at("2026-10-24T22:30:00Z")  # 00:30 CEST
    seen = []
    due = hourly.next_after(start)
    while due < at("2026-10-25T04:00:00Z"):
        seen.append(due.astimezone(hourly.zone).strftime("%H:%M%z"))
        due = hourly.next_after(due)
    assert seen == ["01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100"]


def test_cron_fields_lists_ranges_steps_and_names() -> None:
    workdays = Schedule.parse("*/20 8-9 * * mon-fri")
    assert workdays.next_after(at("2026-11-28T00:00:00Z")) == at("2026-11-30T08:00:00Z")  # Mon
    assert workdays.next_after(at("2026-11-30T08:00:00Z")) == at("2026-11-30T08:20:00Z")
    assert workdays.next_after(at("2026-11-30T09:40:00Z")) == at("2026-12-01T08:00:00Z")
    assert Schedule.parse("0 0 29 feb *").next_after(at("2026-03-01T00:00:00Z")) == at(
        "2028-02-29T00:00:00Z"
    )
    sunday = Schedule.parse("0 6 * * 7")
    assert sunday.next_after(at("2026-11-30T00:00:00Z")) == at("2026-12-06T06:00:00Z")
    assert Schedule.parse("@weekly").next_after(at("2026-11-30T00:00:00Z")) == at(
        "2026-12-06T00:00:00Z"
    )


def test_both_day_fields_restricted_means_either_as_in_cron() -> None:
    first_or_friday = Schedule.parse("0 3 1 * fri")
    due = first_or_friday.next_after(at("2026-11-30T00:00:00Z"))
    assert due == at("2026-12-01T03:00:00Z")  # the 1st, a Tuesday
    assert first_or_friday.next_after(due) == at("2026-12-04T03:00:00Z")  # a Friday


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25:00", "a time of day"),
        ("* * *", "five"),
        ("61 * * * *", "outside 0-59"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "positive"),
        ("x * * * *", "not a number"),
        ("0 0 31 2 *", "never due"),
    ],
)
def test_a_schedule_that_cannot_be_read_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule.parse(text).next_after(at("2026-11-30T00:00:00Z"))


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        Schedule.parse("02:00", "Mars/Olympus")


def test_previous_due_time_within_a_window() -> None:
    nightly = Schedule.parse("02:00")
    assert nightly.previous_at_or_before(at("2026-11-30T02:10:00Z"), timedelta(hours=1)) == at(
        "2026-11-30T02:00:00Z"
    )
    assert nightly.previous_at_or_before(at("2026-11-30T04:00:00Z"), timedelta(hours=1)) is None


SPECS = ["*/7 * * * *", "15 3 * * *", "0 */5 * * 1,3", "30 22 1-7 * *", "0 0 * 2 *"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    spec=st.sampled_from(SPECS),
    minutes=st.integers(min_value=0, max_value=60 * 24 * 400),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_next_after_is_the_first_matching_minute_after_the_moment(
    spec: str, minutes: int, zone: str
) -> None:
    schedule = Schedule.parse(spec, zone)
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes, seconds=17)
    due = schedule.next_after(moment)
    assert due > moment

    matches = schedule.matches
    assert (
        matches(due)
        or due.astimezone(schedule.zone).dst()
        != (due - timedelta(hours=1)).astimezone(schedule.zone).dst()
    )
    probe = moment.replace(second=0) + timedelta(minutes=1)
    while probe < due and probe < moment + timedelta(days=3):
        assert not matches(probe) or probe.astimezone(schedule.zone).fold, probe
        probe += timedelta(minutes=1)
